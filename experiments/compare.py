r"""Finished sweeps side by side, with paired tests on their shared test images.

  python -m experiments.compare --sweeps=workdirs/lite0_feature_extraction,workdirs/lite0_finetune \
      [--out=workdirs/lite0_compared]

Each sweep's settings (named <sweep folder>/<setting>) get their mean, std
and 95% interval again, and every two settings tested on the same images a
paired bootstrap over those images (McNemar's test too with one member
each): how to compare configs that a single sweep cannot express as
overrides, e.g. two config files. --out writes summary.{json,md,png}.
"""
from absl import app
from absl import flags

from fsv import cli
from fsv import sweeps

_SWEEPS = flags.DEFINE_list('sweeps', None, 'Folders of finished sweeps (with summary.json).',
                            required=True)
_OUT = flags.DEFINE_string('out', '', 'Folder to write summary.{json,md,png} into.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  print(sweeps.markdown(sweeps.compare(_SWEEPS.value, _OUT.value or None)))


if __name__ == '__main__':
  cli.run(main)
