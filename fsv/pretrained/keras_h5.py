"""Layer weights from the HDF5 files Keras writes (kernels are already HWIO).

Layouts read:
- classic (Keras 1/2, the official keras-applications files, Keras 3's
  legacy `model.save('x.h5')`): a `layer_names` attribute at the root or in
  a `model_weights` group (full-model files); one group per layer whose
  `weight_names` attribute lists its arrays in Keras's order, e.g.
  `block1_conv1_W_1:0`, `block1_conv1/kernel:0` or `block1_conv1/kernel`.
  A nested model (e.g. VGG16 inside a Sequential) is one group holding all
  its layers' arrays, named `<layer>/<variable>`.
- Keras 3 `.weights.h5` (`save_weights`, also inside a `.keras` archive):
  `layers/<key>/vars/0, 1, ...` (nested models add `layers/<key>/layers/...`),
  where `<key>` is the layer's class in snake case with a counter
  (`conv2d`, `conv2d_1`, ...) and the `vars` group's `name` attribute is
  the layer's name. Early Keras 3 releases (3.0) write no `name`: their
  layers are then named by position, the counter of their class key.
"""
from __future__ import annotations

import io
import pathlib
import re
import zipfile
from typing import Mapping, Sequence

import h5py
import numpy as np

from fsv.pretrained.layout import WeightsError

_KEY = re.compile(r'(?P<cls>.*?)(?:_(?P<n>\d+))?')


def read(path: pathlib.Path, by_position: Mapping[str, Sequence[str]]
         ) -> dict[str, tuple[np.ndarray, ...]]:
  """Layer name -> its arrays (Keras's order) for every layer with weights.

  `by_position` names unnamed Keras 3 layers: class key (e.g. 'conv2d') ->
  the names of that class's layers in network order.
  """
  try:
    if path.suffix == '.keras':
      with zipfile.ZipFile(path) as archive:
        source = io.BytesIO(archive.read('model.weights.h5'))
    else:
      source = path
    with h5py.File(source, 'r') as f:
      weights = f['model_weights'] if 'model_weights' in f else f  # full-model files
      if 'layer_names' in weights.attrs:
        return _classic(weights, path)
      if 'layers' in f:
        return _keras3(f, path, by_position)
  except WeightsError:
    raise
  # h5py and a malformed file's attributes (names that are not text, groups
  # that are not there) surface as these; the file is then not Keras's.
  except (OSError, KeyError, ValueError, TypeError, UnicodeDecodeError,
          zipfile.BadZipFile) as e:
    raise WeightsError(f'{path}: not a readable Keras weights file '
                       f'({type(e).__name__}: {e})') from None
  raise WeightsError(
      f'{path}: no Keras weights found: neither a layer_names attribute (Keras 2, '
      'legacy .h5) nor a layers/ group (Keras 3 .weights.h5)')


def _text(value) -> str:
  return value.decode() if isinstance(value, bytes) else str(value)


def _add(layers: dict, name: str, arrays: tuple, path: pathlib.Path):
  if name in layers:
    raise WeightsError(f'{path}: two layers named {name!r} (nested models?); '
                       'cannot tell which one to load')
  layers[name] = arrays


def _classic(group: h5py.Group, path: pathlib.Path) -> dict[str, tuple[np.ndarray, ...]]:
  layers: dict[str, tuple[np.ndarray, ...]] = {}
  for layer in map(_text, group.attrs['layer_names']):
    names = [_text(n) for n in group[layer].attrs.get('weight_names', [])]
    if not names:
      continue
    # A layer's own arrays may carry any scope prefix ('sequential/dense/...');
    # only a nested model's group holds the arrays of several layers.
    owners = [n.split('/')[-2] if '/' in n else layer for n in names]
    if len(set(owners)) == 1:
      owners = [layer] * len(names)
    for owner in dict.fromkeys(owners):
      _add(layers, owner, tuple(np.asarray(group[layer][n])
                                for n, o in zip(names, owners) if o == owner), path)
  return layers


def _keras3(f: h5py.File, path: pathlib.Path, by_position: Mapping[str, Sequence[str]]
            ) -> dict[str, tuple[np.ndarray, ...]]:
  groups: list[tuple[str, h5py.Group]] = []
  f.visititems(lambda key, item: groups.append((key, item))
               if key.rsplit('/', 1)[-1] == 'vars' and isinstance(item, h5py.Group)
               and len(item) else None)
  layers: dict[str, tuple[np.ndarray, ...]] = {}
  for key, group in groups:
    if not all(name.isdigit() for name in group):
      raise WeightsError(f'{path}: {key} holds variables {sorted(group)}, not the numbered '
                         '0, 1, ... of a Keras 3 weights file')
    arrays = tuple(np.asarray(group[i]) for i in sorted(group, key=int))
    name = group.attrs.get('name')
    _add(layers, _text(name) if name is not None else _by_position(key, by_position),
         arrays, path)
  return layers


def _by_position(key: str, by_position: Mapping[str, Sequence[str]]) -> str:
  """The name of the layer at `<container>/layers/<cls>_<n>/vars`, or its key."""
  layer_key = key.split('/')[-2]
  match = _KEY.fullmatch(layer_key)
  names = by_position.get(match['cls'], ())
  index = int(match['n'] or 0)
  return names[index] if index < len(names) else key.rsplit('/', 1)[0]
