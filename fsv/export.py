"""Export a trained run for places without fsv, and verify it there.

Every format computes `inference.serving_function`: uint8 RGB images
(batch, H, W, 3), resized whole to the run's input size, in; class
probabilities (batch, classes) out; the model's preprocessing inside.

  jax     model.jaxexport: `jax.export` serialized StableHLO, batch symbolic,
          lowered for CPU, CUDA and TPU; `jax.export.deserialize(bytes).call(x)`
          needs jax alone.
  onnx    model.onnx through jax2onnx, batch dynamic; run with onnxruntime.
  tflite  saved_model/ through jax2tf, then model.tflite (float32) and
          model_int8.tflite (dynamic-range int8) through TensorFlow Lite's
          converter, at a fixed batch (1 by default: TF Lite cannot convert
          the dynamic gathers a symbolic batch lowers to); run with LiteRT.

Beside them, model.json says what the model takes and gives, where it came
from, which converter made it, and how well it agrees with fsv: each file is
loaded in its own runtime and its probabilities are compared with
`Run.probabilities` on the run's validation images (or the images given).
Float32 files must agree to `FLOAT_TOLERANCE` on every image, int8 ones on
the predicted class of at least `INT8_AGREEMENT` of them; otherwise the
export raises an ExportError (model.json records the figures either way).
The onnx and tflite formats need the `export` extra.
"""
from __future__ import annotations

import dataclasses
import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
import tempfile
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

import fsv
from fsv import features
from fsv import files
from fsv import inference
from fsv.errors import ExportError

FORMATS = ('jax', 'onnx', 'tflite')
FLOAT_TOLERANCE = 1e-4
INT8_AGREEMENT = 0.99
_BATCH = 32  # images per runtime call when verifying


@dataclasses.dataclass(frozen=True)
class _Artifact:
  file: str                                   # relative to the export folder
  runtime: Callable[[np.ndarray], np.ndarray]  # uint8 images -> probabilities
  quantized: bool = False


def _needs(format_: str, *modules: str) -> None:
  missing = [m for m in modules if importlib.util.find_spec(m) is None]
  if missing:
    raise ExportError(f'--format={format_} needs {", ".join(missing)}: pip install -e '
                      "'.[export]'")


def _version(distribution: str) -> str:
  try:
    return importlib.metadata.version(distribution)
  except importlib.metadata.PackageNotFoundError:
    return 'unknown'


def _in_batches(call: Callable[[np.ndarray], np.ndarray], batch: int):
  def run(images: np.ndarray) -> np.ndarray:
    return np.concatenate([np.asarray(call(images[i:i + batch]), np.float32)
                           for i in range(0, len(images), batch)])
  return run


def _jax(serve, shape, folder: str) -> tuple[list[_Artifact], dict]:
  batch, = jax.export.symbolic_shape('batch')
  exported = jax.export.export(jax.jit(serve), platforms=('cpu', 'cuda', 'tpu'))(
      jax.ShapeDtypeStruct((batch, *shape), jnp.uint8))
  data = exported.serialize()
  files.write_bytes(os.path.join(folder, 'model.jaxexport'), bytes(data))
  loaded = jax.export.deserialize(bytearray(
      files.as_path(os.path.join(folder, 'model.jaxexport')).read_bytes()))
  return ([_Artifact('model.jaxexport', _in_batches(loaded.call, _BATCH))],
          {'name': 'jax.export', 'version': jax.__version__,
           'platforms': list(exported.platforms)})


def _onnx(serve, shape, folder: str) -> tuple[list[_Artifact], dict]:
  _needs('onnx', 'jax2onnx', 'onnxruntime')
  import jax2onnx
  import onnxruntime
  batch, = jax.export.symbolic_shape('batch')
  model = jax2onnx.to_onnx(serve, [jax.ShapeDtypeStruct((batch, *shape), jnp.uint8)],
                           input_names=['images'], output_names=['probabilities'])
  path = os.path.join(folder, 'model.onnx')
  files.write_bytes(path, model.SerializeToString())
  options = onnxruntime.SessionOptions()
  options.log_severity_level = 3  # jax2onnx's shape annotations draw harmless warnings
  session = onnxruntime.InferenceSession(path, options, providers=['CPUExecutionProvider'])
  return ([_Artifact('model.onnx', _in_batches(
      lambda x: session.run(None, {'images': x})[0], _BATCH))],
          {'name': 'jax2onnx', 'version': _version('jax2onnx'),
           'runtime': f'onnxruntime {onnxruntime.__version__}'})


def _tflite(serve, shape, folder: str, batch: int) -> tuple[list[_Artifact], dict]:
  _needs('tflite', 'tensorflow', 'ai_edge_litert')
  import tensorflow as tf
  from ai_edge_litert.interpreter import Interpreter
  from jax.experimental import jax2tf
  module = tf.Module()
  module.serve = tf.function(
      jax2tf.convert(serve, with_gradient=False), autograph=False,
      input_signature=[tf.TensorSpec((batch, *shape), tf.uint8, name='images')])
  saved_model = os.path.join(folder, 'saved_model')
  tf.saved_model.save(module, saved_model,
                      signatures=module.serve.get_concrete_function())
  artifacts = []
  for name, quantized in (('model.tflite', False), ('model_int8.tflite', True)):
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model)
    if quantized:  # weights int8, activations computed in float: dynamic range
      converter.optimizations = [tf.lite.Optimize.DEFAULT]
    files.write_bytes(os.path.join(folder, name), converter.convert())
    interpreter = Interpreter(model_path=os.path.join(folder, name))
    interpreter.allocate_tensors()
    artifacts.append(_Artifact(name, _tflite_runtime(interpreter, batch), quantized))
  return artifacts, {'name': 'jax2tf + TFLiteConverter', 'version': tf.__version__,
                     'runtime': f'ai-edge-litert {_version("ai-edge-litert")}',
                     'batch': batch}


def _tflite_runtime(interpreter, batch: int):
  source = interpreter.get_input_details()[0]['index']
  target = interpreter.get_output_details()[0]['index']

  def run(images: np.ndarray) -> np.ndarray:
    outputs = []
    for start in range(0, len(images), batch):
      chunk = images[start:start + batch]
      padded = np.concatenate([chunk, np.repeat(chunk[-1:], batch - len(chunk), 0)])
      interpreter.set_tensor(source, padded)
      interpreter.invoke()
      outputs.append(interpreter.get_tensor(target)[:len(chunk)].copy())
    return np.concatenate(outputs)
  return run


def _verify(artifact: _Artifact, images: np.ndarray, expected: np.ndarray) -> dict:
  got = artifact.runtime(images)
  agreement = float(np.mean(got.argmax(-1) == expected.argmax(-1)))
  max_abs_diff = float(np.abs(got - expected).max())
  passed = (agreement >= INT8_AGREEMENT if artifact.quantized
            else max_abs_diff <= FLOAT_TOLERANCE)
  return {'max_abs_diff': max_abs_diff, 'agreement': agreement, 'passed': passed,
          'requires': (f'predicted class agrees on >= {INT8_AGREEMENT:.0%} of the images'
                       if artifact.quantized else
                       f'every probability within {FLOAT_TOLERANCE:g}')}


def _commit() -> Optional[str]:
  """The checkout's commit, '-dirty' when it has uncommitted changes; None
  outside a git checkout."""
  try:
    done = subprocess.run(['git', 'describe', '--always', '--abbrev=40', '--dirty'],
                          capture_output=True, text=True, timeout=10,
                          cwd=os.path.dirname(os.path.abspath(__file__)))
  except OSError:
    return None
  return done.stdout.strip() if done.returncode == 0 else None


def export(run, format_: str, out: str, images: np.ndarray, image_source: str,
           overwrite: bool = False, tflite_batch: int = 1) -> dict:
  """Writes `run` in `format_` into the folder `out`, verifies every file on
  `images` (uint8, at the run's input size) and returns model.json's content."""
  if format_ not in FORMATS:
    raise ExportError(f'unknown export format {format_!r}; known: {FORMATS}')
  if files.as_path(out).exists():
    if not overwrite:
      raise ExportError(f'{out} exists; pass --overwrite (overwrite=True) to replace it')
    shutil.rmtree(out)
  serve = inference.serving_function(run.model, run.variables, run.config.augment.rescale)
  shape = (*run.image_size, 3)
  # Written beside `out` and renamed: a failed conversion leaves nothing behind.
  parent = os.path.dirname(os.path.abspath(out))
  os.makedirs(parent, exist_ok=True)
  folder = tempfile.mkdtemp(prefix=f'.{os.path.basename(out)}.', dir=parent)
  try:
    if format_ == 'jax':
      artifacts, converter = _jax(serve, shape, folder)
    elif format_ == 'onnx':
      artifacts, converter = _onnx(serve, shape, folder)
    else:
      artifacts, converter = _tflite(serve, shape, folder, tflite_batch)
    expected = run.probabilities(images)
    verification = {a.file: _verify(a, images, expected) for a in artifacts}
    batch = tflite_batch if format_ == 'tflite' else None  # None: any batch
    description = {
        'format': format_,
        'files': [a.file for a in artifacts],
        'class_names': list(run.class_names),
        'input': {'name': 'images', 'shape': [batch, *shape], 'dtype': 'uint8',
                  'expects': f'RGB pixels 0-255, each image resized whole to {shape[0]}x'
                             f'{shape[1]} ({run.config.data.interpolation}), EXIF '
                             'orientation applied'},
        'output': {'name': 'probabilities', 'shape': [batch, run.num_classes],
                   'dtype': 'float32'},
        'preprocessing': run.preprocessing,
        'test_accuracy': run.results.get('test_accuracy'),
        'fsv_version': fsv.__version__,
        'fsv_commit': _commit(),
        'weights': {'source': run.config.model.get('weights') or 'trained from random',
                    'checkpoint': run.checkpoint,
                    'digest': features.digest(run.variables)},
        'converter': converter,
        'verification': {'images': int(len(images)), 'on': image_source, **verification},
    }
    files.write_json(os.path.join(folder, 'model.json'), description)
    os.chmod(folder, 0o755)  # mkdtemp's 0700 would keep the export from others
    os.rename(folder, out)
  finally:
    shutil.rmtree(folder, ignore_errors=True)
  failed = {name: v for name, v in verification.items() if not v['passed']}
  if failed:
    raise ExportError(f'{out}: the exported model disagrees with fsv: ' + '; '.join(
        f'{name}: max difference {v["max_abs_diff"]:.2e}, predicted class agrees on '
        f'{v["agreement"]:.2%} (required: {v["requires"]})' for name, v in failed.items()))
  return description
