r"""Evaluates a trained run on a labelled folder: metrics, confusion matrix, top losses.

  python -m experiments.evaluate --workdir=workdirs/finetune \
      --data_dir=../shared/data/cats_vs_dogs_small [--split=test] [--name=NAME] [--tta]

DATA_DIR is DIR/<split>/<class>/<images> or a bare DIR/<class>/<images>,
with the run's classes. Writes W/evaluation/<name>/ (default name:
<data_dir's folder name>-<split>): metrics.json, confusion_matrix.png,
top_losses.png and mistakes.csv (fsv/evaluate.py).
"""
import os

from absl import app
from absl import flags

from fsv import cli
from fsv import workdir as workdir_lib

_RUN = cli.TrainedRunFlags()
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'Labelled image folder.', required=True)
_SPLIT = flags.DEFINE_string('split', 'test', 'The split folder under --data_dir, if any.')
_NAME = flags.DEFINE_string('name', '', 'Name of the evaluation folder.')
_TTA = flags.DEFINE_bool('tta', False,
                         'Average with the mirrored images (test-time augmentation).')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  name = _NAME.value or (
      f'{os.path.basename(os.path.normpath(_DATA_DIR.value))}-{_SPLIT.value}')
  evaluation = _RUN.load().evaluate(_DATA_DIR.value, _SPLIT.value, tta=_TTA.value,
                                    batch_size=_RUN.batch_size)
  folder = workdir_lib.Workdir(_RUN.workdir).write_evaluation(name, evaluation)
  print(evaluation.summary())
  print(f'wrote {folder}')


if __name__ == '__main__':
  cli.run(main)
