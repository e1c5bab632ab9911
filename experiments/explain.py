r"""Grad-CAM heatmaps: where in each image a trained run found its class.

  python -m experiments.explain --workdir=workdirs/finetune --images=cat.jpg dog.jpg \
      --out=gradcam [--class_name=dogs] [--checkpoint=best]

One PNG per image in --out: the input as the model sees it, the heatmap
for the predicted class (or --class_name) and the overlay. The layer is the
backbone's (`fsv.models.gradcam_layer`). A file that cannot be decoded is
listed with its reason and skipped.
"""
from absl import flags

import fsv
from fsv import cli

_RUN = cli.TrainedRunFlags()
_IMAGES = cli.define_images_flag()
_OUT = flags.DEFINE_string('out', None, 'Folder for the PNGs.', required=True)
_CLASS_NAME = flags.DEFINE_string('class_name', None,
                                  'Explain this class instead of the predicted one.')


def main(argv):
  paths = cli.image_paths(_IMAGES, argv)
  run = _RUN.load()
  inputs = run.read_images(paths)
  for row, reason in inputs.errors.items():
    print(f'not decoded, skipped: {inputs.names[row]}: {reason}')
  if not inputs.valid().names:
    raise fsv.DataError('none of the images could be decoded')
  explanation = run.explain(inputs.valid(), class_name=_CLASS_NAME.value,
                            batch_size=_RUN.batch_size)
  for row, path in enumerate(explanation.write(_OUT.value)):
    print(f'{path}: {explanation.title(row)}')


if __name__ == '__main__':
  cli.run(main)
