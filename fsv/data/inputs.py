"""What a user hands a trained model: files, folders, Pillow images or arrays.

`read` turns any mix of them into one uint8 batch at the run's input size,
decoded exactly as the training data was (fsv/data/decode.py: EXIF
orientation, colour modes, the run's resize interpolation). An item that
cannot be decoded keeps its row (zeros) and is listed with its reason, so
rows never shift: callers refuse the batch (`Run.predict`) or report the
item (`experiments.predict`).
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Sequence

import numpy as np
from PIL import Image

from fsv.data import decode
from fsv.data.folder import IMAGE_EXTENSIONS, is_image_name
from fsv.errors import DataError


@dataclasses.dataclass(frozen=True, eq=False)
class Inputs:
  names: tuple[str, ...]    # the file path, or 'array[i]' / 'image[i]'
  images: np.ndarray        # (n, H, W, 3) uint8; zeros in the rows of `errors`
  errors: dict              # row -> why that item could not be decoded

  def valid(self) -> 'Inputs':
    """The items that were decoded, in order."""
    rows = [i for i in range(len(self.names)) if i not in self.errors]
    return Inputs(names=tuple(self.names[i] for i in rows), images=self.images[rows], errors={})

  def check(self) -> None:
    """Raises a DataError naming every item that could not be decoded."""
    if self.errors:
      listed = '; '.join(f'{self.names[i]}: {reason}' for i, reason in self.errors.items())
      raise DataError(f'{len(self.errors)} of {len(self.names)} input(s) could not be '
                      f'decoded: {listed}')


def image_files(folder: str) -> list[str]:
  """Image files under `folder` and its sub-folders (hidden ones skipped), sorted."""
  found = []
  for dirpath, dirnames, filenames in os.walk(folder):
    dirnames[:] = sorted(d for d in dirnames if not d.startswith('.'))
    found += [os.path.join(dirpath, name) for name in sorted(filenames) if is_image_name(name)]
  return found


def _items(x: Any) -> list[tuple[str, Any]]:
  """(name, item) pairs: folders expanded into their images, batches into images."""
  if isinstance(x, (str, os.PathLike)):
    path = os.fspath(x)
    if os.path.isdir(path):
      files = image_files(path)
      if not files:
        raise DataError(f'{path}: a folder without image files (extensions: '
                        f'{sorted(IMAGE_EXTENSIONS)})')
      return [(f, f) for f in files]
    return [(path, path)]
  if isinstance(x, Image.Image):
    return [(getattr(x, 'filename', '') or 'image[0]', x)]
  if isinstance(x, np.ndarray):
    if x.ndim == 4:
      return [(f'array[{i}]', image) for i, image in enumerate(x)]
    return [('array[0]', x)]
  if isinstance(x, Sequence):
    items = []
    for i, element in enumerate(x):
      if isinstance(element, Image.Image):
        items.append((getattr(element, 'filename', '') or f'image[{i}]', element))
      elif isinstance(element, np.ndarray):
        items.append((f'array[{i}]', element))
      elif isinstance(element, (str, os.PathLike)):
        items += _items(element)
      else:
        raise DataError(f'input {i}: expected a path, a folder, a PIL image or a uint8 '
                        f'array, got {type(element).__name__}')
    return items
  raise DataError(f'expected paths, a folder, PIL images or uint8 arrays, got '
                  f'{type(x).__name__}')


def _decode(item: Any, name: str, image_size: tuple[int, int],
            interpolation: str) -> np.ndarray:
  if isinstance(item, Image.Image):
    return decode.decode_image(item, image_size, interpolation, name)[0]
  if isinstance(item, np.ndarray):
    array = item[..., None] if item.ndim == 2 else item
    return decode.decode_array(array, image_size, interpolation, name)[0]
  if not os.path.exists(item):
    raise decode.BadImage(item, 'no such file')
  return decode.decode_file(item, image_size, interpolation)[0]


def read(x: Any, image_size: Sequence[int], interpolation: str) -> Inputs:
  """Decodes `x` (see the module docstring) into an `Inputs` batch; an
  `Inputs` passes through as it is."""
  if isinstance(x, Inputs):
    return x
  items = _items(x)
  image_size = tuple(image_size)
  images = np.zeros((len(items), *image_size, 3), np.uint8)

  def work(i: int):
    name, item = items[i]
    try:
      images[i] = _decode(item, name, image_size, interpolation)
    except decode.BadImage as e:
      return e.reason
    return None

  reasons = decode.thread_map(work, range(len(items)))
  return Inputs(names=tuple(name for name, _ in items), images=images,
                errors={i: r for i, r in enumerate(reasons) if r is not None})
