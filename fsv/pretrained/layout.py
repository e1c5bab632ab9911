"""The parameter layout of `fsv.models.vgg.VGG`, and checking weights against it.

Every reader (Keras HDF5, ONNX, our own .npz) returns each layer's arrays
in Keras's order (kernel, bias); `assemble` checks them all against the
module's own parameter shapes and builds the params dict in one go, so a
file that does not fit is refused whole, with every problem named, and
never half loaded.
"""
from __future__ import annotations

import functools
import hashlib
import pathlib
import zipfile
from typing import Any, Mapping, Optional, Sequence

from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np

from fsv import files
from fsv.errors import WeightsError
from fsv.models import vgg


# Keras's names of the top's Dense layers, in network order.
TOP_LAYERS = ('fc1', 'fc2', 'predictions')
KINDS = ('kernel', 'bias')

Layers = Mapping[str, Sequence[np.ndarray]]


def check_depth(depth: int):
  if depth not in vgg.BLOCKS:
    raise WeightsError(f'VGG depth {depth}: only {sorted(vgg.BLOCKS)} exist')


@functools.cache
def kernel_shapes(depth: int, include_top: bool) -> dict[str, tuple[Optional[int], ...]]:
  """Layer name -> kernel shape of `VGG(depth, include_top)`, in network order.

  None marks what the top leaves open: fc1's input size follows the input
  image size, and `predictions` has Keras's `classes` outputs.
  """
  module = vgg.VGG(depth=depth, include_top=include_top)
  image = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
  params = jax.eval_shape(module.init, jax.random.key(0), image)['params']
  shapes = {name: tuple(layer['kernel'].shape) for name, layer in params.items()}
  if include_top:
    shapes['fc1'] = (None,) + shapes['fc1'][1:]
    shapes['predictions'] = shapes['predictions'][:1] + (None,)
  return shapes


def _shape_text(shape: Sequence[Optional[int]]) -> str:
  return '(' + ', '.join('any' if d is None else str(d) for d in shape) + ')'


def _problem(name: str, arrays: Sequence[np.ndarray], kernel_shape) -> Optional[str]:
  if len(arrays) != 2:
    return f'{name}: {len(arrays)} arrays, expected 2 (kernel, bias)'
  kernel, bias = arrays
  expected_bias = kernel_shape[-1:]
  fits = (kernel.ndim == len(kernel_shape)
          and all(e is None or e == d for e, d in zip(kernel_shape, kernel.shape))
          and bias.shape == kernel.shape[-1:])
  if not fits:
    return (f'{name}: kernel {kernel.shape}, bias {bias.shape}; expected kernel '
            f'{_shape_text(kernel_shape)}, bias {_shape_text(expected_bias)}')
  if not all(np.issubdtype(a.dtype, np.floating) for a in arrays):
    return f'{name}: {kernel.dtype}/{bias.dtype} arrays, expected floating point'
  if not all(np.isfinite(a).all() for a in arrays):
    return f'{name}: contains NaN or infinite values'
  return None


def assemble(layers: Layers, depth: int, include_top: bool, origin: str) -> dict:
  """{layer: {'kernel', 'bias'}} float32 arrays for `VGG(depth, include_top)`.

  Layers of `layers` that the network does not have (another head, say) are
  ignored; a missing layer or a wrong shape refuses the whole file.
  """
  expected = kernel_shapes(depth, include_top)
  missing = [name for name in expected if name not in layers]
  problems = [problem for name, shape in expected.items() if name in layers
              and (problem := _problem(name, [np.asarray(a) for a in layers[name]], shape))]
  if missing or problems:
    what = f'VGG{depth}{"" if include_top else " (no top)"}'
    lines = [f'{origin} does not hold {what} weights:']
    if missing:
      lines.append(f'  missing layers: {", ".join(missing)}')
      lines.append(f'  the file has: {", ".join(sorted(layers)) or "no layers with weights"}')
    lines += [f'  {p}' for p in problems]
    raise WeightsError('\n'.join(lines))
  return {name: dict(zip(KINDS, (np.asarray(a, np.float32) for a in layers[name])))
          for name in expected}


def conv_digest(params: Mapping[str, Mapping[str, np.ndarray]]) -> str:
  """sha256 of the conv base: layers in network order, kernel then bias, each
  as its name, its shape and its float32 little-endian bytes."""
  depth = 19 if 'block3_conv4' in params else 16
  missing = [name for name in vgg.conv_layer_names(depth) if name not in params]
  if missing:
    raise WeightsError(f'no conv base to digest: params lack {", ".join(missing)}')
  digest = hashlib.sha256()
  for name in vgg.conv_layer_names(depth):
    for kind in KINDS:
      array = np.ascontiguousarray(params[name][kind], dtype='<f4')
      digest.update(f'{name}/{kind}{array.shape}'.encode())
      digest.update(array.tobytes())
  return digest.hexdigest()


def read_npz(path: pathlib.Path) -> dict[str, tuple[np.ndarray, ...]]:
  """The layers of an .npz with arrays named '<layer>/kernel' and '<layer>/bias'."""
  try:
    named = files.read_npz(path)
  except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
    raise WeightsError(f'{path}: not a readable .npz of weights ({e})') from None
  layers: dict[str, dict[str, np.ndarray]] = {}
  for key, array in named.items():
    layer, _, kind = key.rpartition('/')
    if kind not in KINDS or not layer:
      raise WeightsError(f'{path}: array {key!r} is not named <layer>/kernel or <layer>/bias')
    layers.setdefault(layer, {})[kind] = array
  incomplete = [layer for layer, kinds in layers.items() if len(kinds) != len(KINDS)]
  if incomplete:
    raise WeightsError(f'{path}: layers without both kernel and bias: {incomplete}')
  return {layer: tuple(kinds[k] for k in KINDS) for layer, kinds in layers.items()}


def write_npz(path: pathlib.Path, params: Mapping[str, Any]):
  """Writes nested `params` to `path` as arrays named by their '/'-joined
  keys ('block1_conv1/kernel'), atomically: an entry that exists is complete."""
  flat = traverse_util.flatten_dict(params, sep='/')
  files.write_atomically(path, lambda f: np.savez(f, **flat))
