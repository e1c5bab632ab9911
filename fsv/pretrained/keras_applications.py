"""Weights of the backbones ported from `keras.applications`, from Keras's own files.

One path for every such backbone (ResNet50, MobileNetV2, Xception,
ConvNeXt-Tiny): a Keras file is read by `keras_h5.read` (a classic `.h5`, a
Keras 3 `.weights.h5` or a `.keras` archive), its layers renamed where the
port names Keras's auto-named layers (`Port.rename`), and converted by
`keras_layers.to_variables` against the module's own variables, every
shape checked. What differs per backbone is its `Port` (fsv/models/keras_weights.py).

- weights='imagenet': the official keras-applications file (URL and hash,
  md5 or sha256, as `keras.applications` pins them), downloaded on first use
  and refused on a hash mismatch (Keras pins none for MobileNetV2's files:
  those are checked only against the architecture), converted once and cached as
  `<cache>/weights/<name>_imagenet_{top,notop}.npz` (arrays '<layer>/<i>',
  Keras's order). `python -m fsv.pretrained fetch NAME --source=PATH` fills
  the cache from a copy of an official file on a machine without network
  (its hash must be one of the official files', where Keras pins one).
- weights=PATH: a user's own Keras file of the same architecture (fine-tuned
  elsewhere, or random for tests), or an .npz as the cache holds it; loaded
  as it is, not checked against the official hashes since it is the user's.
"""
from __future__ import annotations

import pathlib
import zipfile
from typing import Mapping

import numpy as np

from fsv import files
from fsv.models.keras_weights import Port
from fsv.pretrained import keras_h5
from fsv.pretrained import keras_layers
from fsv.pretrained import sources
from fsv.pretrained.layout import WeightsError

KERAS_SUFFIXES = ('.h5', '.hdf5', '.keras')
Layers = keras_layers.Layers


def cache_path(port: Port, include_top: bool, cache_dir: str) -> pathlib.Path:
  variant = 'top' if include_top else 'notop'
  return sources.weights_dir(cache_dir) / f'{port.name}_imagenet_{variant}.npz'


def file_name(port: Port, include_top: bool) -> str:
  return port.files[include_top][0].rpartition('/')[2]


def offline_hint(port: Port, include_top: bool) -> str:
  return (f'Without network, run `python -m fsv.pretrained fetch {port.name} --source=PATH` '
          f'with PATH a copy of {file_name(port, include_top)}')


def read_layers(path: pathlib.Path) -> Layers:
  """{layer: arrays} of a Keras file or of an .npz as the cache holds it."""
  if path.suffix == '.npz':
    try:
      flat = files.read_npz(path)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
      raise WeightsError(f'{path}: not a readable .npz of weights ({e})') from None
    layers: dict[str, dict[int, np.ndarray]] = {}
    for key, array in flat.items():
      layer, _, index = key.rpartition('/')
      if not layer or not index.isdigit():
        raise WeightsError(f'{path}: array {key!r} is not named <layer>/<index>')
      layers.setdefault(layer, {})[int(index)] = array
    return {layer: tuple(arrays[i] for i in sorted(arrays)) for layer, arrays in layers.items()}
  if path.suffix not in KERAS_SUFFIXES:
    raise WeightsError(f"weights={str(path)!r}: expected 'imagenet', a Keras file "
                       f'({", ".join(KERAS_SUFFIXES)}) or an .npz')
  return keras_h5.read(path, {})


def _write_cache(path: pathlib.Path, layers: Layers) -> None:
  flat = {f'{layer}/{i}': np.asarray(a, np.float32)
          for layer, arrays in layers.items() for i, a in enumerate(arrays)}
  files.write_atomically(path, lambda f: np.savez(f, **flat))


def fetch(port: Port, source: str, include_top: bool, cache_dir: str) -> pathlib.Path:
  """Converts the official ImageNet file into the cache; returns the entry.

  `source` is 'keras' (download, hash-checked) or the path of a copy of the
  official file (with or without the top: its hash says which).
  """
  if source == 'keras':
    url, file_hash = port.files[include_top]
    path = sources.weights_dir(cache_dir) / file_name(port, include_top)
    if not path.exists() or (file_hash is not None
                             and sources.hash_of(path, file_hash) != file_hash):
      sources.download(url, file_hash, path, offline_hint(port, include_top))
    layers = port.rename(read_layers(path))
  else:
    path = pathlib.Path(source).expanduser()
    if not path.is_file():
      raise WeightsError(f'{path}: no such file')
    layers = port.rename(read_layers(path))
    include_top = _official_with_top(port, path, layers)
  entry = cache_path(port, include_top, cache_dir)
  _write_cache(entry, layers)
  return entry


def _official_with_top(port: Port, path: pathlib.Path, layers: Layers) -> bool:
  """Whether `path`, refused unless it is an official file of `port`, has the top.

  Keras pins no hash for some files (MobileNetV2's): such a file is taken on
  its layers alone (the top's `predictions` layer says which one it is) and
  checked, as every file is, against the architecture when it is loaded.
  """
  hashes = {file_hash: top for top, (_, file_hash) in port.files.items() if file_hash}
  for file_hash, top in hashes.items():
    if sources.hash_of(path, file_hash) == file_hash:
      return top
  if len(hashes) < len(port.files):
    return 'predictions' in layers
  known = ', '.join(f'{file_name(port, top)}: {h}' for h, top in hashes.items())
  raise WeightsError(
      f'{path}: its hash is not that of an official {port.name} ImageNet file '
      f'({known}); a file of your own loads with model.weights={str(path)!r}')


def load(port: Port, weights: str, template: Mapping, include_top: bool,
         cache_dir: str, keep=('head',)) -> dict:
  """`template` (the module's variables, or their shapes) with the weights
  `weights` names: 'imagenet' (downloaded into the cache on first use) or a file."""
  if weights == 'imagenet':
    path = _cached(port, include_top, cache_dir) or fetch(port, 'keras', include_top, cache_dir)
    origin = f'cached {path} (if it is damaged, delete it to fetch it again)'
    layers = read_layers(path)
  else:
    path = pathlib.Path(weights).expanduser()
    if not path.is_file():
      raise WeightsError(f'weights file {path} does not exist')
    origin = str(path)
    layers = port.rename(read_layers(path))
  return keras_layers.to_variables(layers, template, origin, keep)


def _cached(port: Port, include_top: bool, cache_dir: str) -> pathlib.Path | None:
  """The cache entry that holds what is needed: a base is also in the entry with the top."""
  entries = [cache_path(port, True, cache_dir)]
  if not include_top:
    entries.insert(0, cache_path(port, False, cache_dir))
  return next((e for e in entries if e.is_file()), None)


def in_cache(port: Port, include_top: bool, cache_dir: str) -> bool:
  return _cached(port, include_top, cache_dir) is not None
