r"""Averages finished runs' predictions; picks the ensemble on validation, reports test once.

  python -m experiments.ensemble --workdirs=workdirs/lite0_finetune,workdirs/lite2_finetune \
      --output=workdirs/ensemble.json

Every subset of the runs is scored, with and without mirrored images
(test-time augmentation), by validation accuracy; the test accuracy is
computed for the chosen one only (fsv/ensemble.py).
"""
from absl import app
from absl import flags

from fsv import cli
from fsv import ensemble
from fsv import files

_WORKDIRS = flags.DEFINE_list('workdirs', None, 'Workdirs of finished runs on the same data.')
_OUTPUT = flags.DEFINE_string('output', None, 'Where to write the choice as JSON.')
flags.mark_flags_as_required(['workdirs'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  chosen = ensemble.choose(_WORKDIRS.value)
  print(f"{'validation':>10} {'val loss':>8}  flip  members")
  for c in chosen['ranking'][:10]:
    print(f"{c['val_accuracy']:10.4f} {c['val_loss']:8.4f}  {'yes' if c['flip'] else 'no ':4}"
          f"  {', '.join(c['members'])}")
  print(f"chosen of {chosen['candidates']}: validation {chosen['val_accuracy']:.4f}, "
        f"test {chosen['test_accuracy']:.4f}")
  if _OUTPUT.value:
    files.write_json(_OUTPUT.value, chosen)


if __name__ == '__main__':
  cli.run(main)
