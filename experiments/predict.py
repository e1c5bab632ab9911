r"""Classifies images with a trained run: a CSV of probabilities and a table.

  python -m experiments.predict --workdir=workdirs/finetune --images=photos/ cat.jpg \
      [--tta] [--output=predictions.csv] [--checkpoint=best]

Files and folders (searched recursively for images) are decoded as the
run's training data was. A file that cannot be decoded gets a row with its
reason, in the CSV and on the console; the other rows are not shifted.
"""
from absl import flags

from fsv import cli
from fsv import files

_RUN = cli.TrainedRunFlags()
_IMAGES = cli.define_images_flag()
_TTA = flags.DEFINE_bool('tta', False,
                         'Average with the mirrored images (test-time augmentation).')
_OUTPUT = flags.DEFINE_string('output', 'predictions.csv', 'CSV file to write.')


def main(argv):
  paths = cli.image_paths(_IMAGES, argv)
  predictions = _RUN.load().classify(paths, tta=_TTA.value, batch_size=_RUN.batch_size)
  files.write_bytes(_OUTPUT.value, predictions.csv().encode())
  print(predictions.table())
  print(f'wrote {_OUTPUT.value}')


if __name__ == '__main__':
  cli.run(main)
