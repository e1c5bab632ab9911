r"""Exports a trained run (jax, onnx or tflite) and verifies it in its own runtime.

  python -m experiments.export --workdir=workdirs/finetune --format=onnx \
      [--out=PATH] [--images=PATH ...] [--overwrite] [--tflite_batch=1]

Writes the model and a model.json into --out (default W/export/<format>/),
then loads each file in its runtime (jax, onnxruntime, LiteRT) and compares
its probabilities with fsv's on the run's validation images, or on --images:
float32 files must agree to 1e-4, int8 ones on >= 99% of the predicted
classes, or the command fails. onnx and tflite need pip install -e '.[export]'.
"""
import json

from absl import flags

from fsv import cli
from fsv import export as export_lib
from fsv import workdir as workdir_lib

_RUN = cli.TrainedRunFlags()
_FORMAT = flags.DEFINE_enum('format', None, export_lib.FORMATS, 'What to export to.',
                            required=True)
_OUT = flags.DEFINE_string('out', '', 'Folder to write (default: W/export/<format>).')
_IMAGES = cli.define_images_flag()
_OVERWRITE = flags.DEFINE_bool('overwrite', False, 'Replace --out if it exists.')
_TFLITE_BATCH = flags.DEFINE_integer('tflite_batch', 1, 'The fixed batch of TF Lite models.')


def main(argv):
  images = _IMAGES.value + argv[1:] or None
  out = _OUT.value or workdir_lib.Workdir(_RUN.workdir).export_dir(_FORMAT.value)
  description = _RUN.load().export(_FORMAT.value, out, images, _OVERWRITE.value,
                                   _TFLITE_BATCH.value)
  checks = description['verification']
  print(f'verified on {checks["images"]} images ({checks["on"]}):')
  for name in description['files']:
    print(f'  {name}: max |p - p_fsv| {checks[name]["max_abs_diff"]:.2e}, predicted class '
          f'agrees on {checks[name]["agreement"]:.2%}')
  print(f'wrote {out}: {json.dumps(description["files"])} and model.json')


if __name__ == '__main__':
  cli.run(main)
