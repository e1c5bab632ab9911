r"""Images/s of a run's exported models, each in its runtime, beside fsv's predict.

  python -m bench.export_speed --workdir=workdirs/efficientnet_finetune [--seconds=20]

Times `Run.probabilities` and the artifacts `experiments.export` wrote in
W/export/{jax,onnx,tflite}/ (those present) on random uint8 images at the
run's input size, at batch 1 and 32; a TF Lite model's batch is fixed, so
batch 32 is timed on a batch-32 conversion written to a temporary folder.
Each timing repeats calls after one untimed warm-up call until --seconds
have passed, and prints the artifact sizes and the agreement model.json
recorded. Needs the `export` extra for the onnx and tflite rows.
"""
import json
import os
import tempfile
import time

from absl import app
from absl import flags
import numpy as np

import fsv
from fsv import export as export_lib

_WORKDIR = flags.DEFINE_string('workdir', None, 'Workdir with W/export/<format>/.',
                               required=True)
_SECONDS = flags.DEFINE_float('seconds', 20.0, 'Time each row at least this long.')
BATCHES = (1, 32)


def _images_per_second(call, images: np.ndarray) -> float:
  call(images)  # warm-up: compilation, allocation
  done, started = 0, time.perf_counter()
  while time.perf_counter() - started < _SECONDS.value or done < 2 * len(images):
    call(images)
    done += len(images)
  return done / (time.perf_counter() - started)


def _runtimes(folder: str, batch: int):
  """(name, uint8 images -> probabilities) for each artifact in `folder`."""
  description = json.load(open(os.path.join(folder, 'model.json')))
  format_ = description['format']
  if format_ == 'jax':
    import jax
    exported = jax.export.deserialize(bytearray(open(os.path.join(folder, 'model.jaxexport'),
                                                     'rb').read()))
    yield 'jax.export', lambda x: np.asarray(exported.call(x))
  elif format_ == 'onnx':
    import onnxruntime
    session = onnxruntime.InferenceSession(os.path.join(folder, 'model.onnx'),
                                           providers=['CPUExecutionProvider'])
    yield 'onnxruntime', lambda x: session.run(None, {'images': x})[0]
  elif description['converter']['batch'] == batch:
    from ai_edge_litert.interpreter import Interpreter
    for name in description['files']:
      interpreter = Interpreter(model_path=os.path.join(folder, name))
      interpreter.allocate_tensors()
      source = interpreter.get_input_details()[0]['index']
      target = interpreter.get_output_details()[0]['index']

      def call(x, interpreter=interpreter, source=source, target=target):
        interpreter.set_tensor(source, x)
        interpreter.invoke()
        return interpreter.get_tensor(target)
      yield f'LiteRT {name}', call


def main(argv):
  del argv
  run = fsv.load_run(_WORKDIR.value)
  root = os.path.join(_WORKDIR.value, 'export')
  formats = [f for f in export_lib.FORMATS if os.path.isdir(os.path.join(root, f))]
  rng = np.random.default_rng(0)
  print(f'{run.config.model.name} {run.image_size}: images/s at batch ' +
        ', '.join(map(str, BATCHES)))
  rows = {}
  for batch in BATCHES:
    images = rng.integers(0, 256, (batch, *run.image_size, 3), np.uint8)
    rows.setdefault('fsv Run.probabilities', {})[batch] = _images_per_second(
        lambda x: run.probabilities(x, batch_size=batch), images)
    for format_ in formats:
      folders = [os.path.join(root, format_)]
      if format_ == 'tflite' and batch != 1:
        folders = [tempfile.mkdtemp(prefix='fsv-tflite-')]
        os.rmdir(folders[0])
        try:
          run.export('tflite', folders[0], images=images, tflite_batch=batch)
        except fsv.ExportError:
          pass  # only timed: a random image at p = 0.5 may flip; W/export/ holds the verdict
      for folder in folders:
        for name, call in _runtimes(folder, batch):
          rows.setdefault(name, {})[batch] = _images_per_second(call, images)
  for name, speeds in rows.items():
    print(f'  {name:32s} ' + '  '.join(f'{speeds.get(b, float("nan")):8.1f}' for b in BATCHES))
  for format_ in formats:
    description = json.load(open(os.path.join(root, format_, 'model.json')))
    for name in description['files']:
      check = description['verification'][name]
      size = os.path.getsize(os.path.join(root, format_, name)) / 2**20
      print(f'  {name:20s} {size:7.1f} MiB  max |p - p_fsv| {check["max_abs_diff"]:.1e}  '
            f'class agreement {check["agreement"]:.2%} on {description["verification"]["images"]}'
            ' validation images')


if __name__ == '__main__':
  app.run(main)
