"""Images to uint8 RGB arrays of one size, and the types that hold them.

Both sources (folder, TFDS) decode through `decode_split`, so an image gets the
same conversion and resize whichever source it comes from.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import hashlib
import json
import os
import stat
from typing import Callable, Iterable, Mapping, Sequence, TypeVar

import numpy as np
from PIL import Image, ImageOps

from fsv.errors import DataError

T = TypeVar('T')
R = TypeVar('R')

# Part of every cache key: bump it when a change here changes decoded pixels.
DECODER_VERSION = 1

INTERPOLATIONS = {
    'nearest': Image.Resampling.NEAREST,
    'bilinear': Image.Resampling.BILINEAR,
    'bicubic': Image.Resampling.BICUBIC,
    'lanczos': Image.Resampling.LANCZOS,
}


class BadImage(DataError):
  """One image file that cannot be decoded."""

  def __init__(self, file: str, reason: str):
    super().__init__(f'{file}: {reason}')
    self.file = file
    self.reason = reason


@dataclasses.dataclass(frozen=True, eq=False)
class Split:
  images: np.ndarray        # (N, H, W, 3) uint8
  labels: np.ndarray        # (N,) int32, index into Dataset.class_names
  files: tuple[str, ...]    # path relative to the dataset root, or a TFDS id

  @functools.cached_property
  def digest(self) -> str:
    """sha256 of the files, labels and pixels: equal digests, equal data."""
    h = hashlib.sha256(json.dumps([list(self.files), self.labels.tolist()]).encode())
    h.update(f'{self.images.shape}{self.images.dtype}'.encode())
    h.update(np.ascontiguousarray(self.images).tobytes())
    return h.hexdigest()


@dataclasses.dataclass(frozen=True)
class SplitReport:
  loaded: int
  skipped: tuple[tuple[str, str], ...]  # (file, reason)
  converted: int                        # images that were not RGB to begin with
  ignored: tuple[str, ...] = ()         # hidden or non-image files beside the images
  from_cache: bool = False


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
  class_names: tuple[str, ...]
  splits: Mapping[str, Split]           # keys among 'train', 'validation', 'test'
  report: Mapping[str, SplitReport]     # same keys as splits

  @property
  def num_classes(self) -> int:
    return len(self.class_names)


def _to_rgb(image: Image.Image) -> Image.Image:
  if image.mode == 'I' or image.mode.startswith('I;16'):
    # Pillow's own conversion clips 16-bit values at 255; scale them instead.
    # The clip only bounds 32-bit 'I' data to the 16-bit range it stands for.
    wide = np.clip(np.asarray(image), 0, 65535).astype(np.uint32)
    image = Image.fromarray(((wide + 128) // 257).astype(np.uint8))
  elif image.mode == 'P' and 'transparency' in image.info:
    # Via RGBA, as Pillow asks, so the transparent index maps to its colour.
    image = image.convert('RGBA')
  # RGBA/LA lose their alpha here, as in Keras' load_img.
  return image if image.mode == 'RGB' else image.convert('RGB')


def _rgb_resized(image: Image.Image, image_size: tuple[int, int],
                 interpolation: str) -> np.ndarray:
  # Converted before resizing: Pillow resizes '1' and 'P' images with
  # nearest-neighbour whatever the filter asked for.
  height, width = image_size
  image = _to_rgb(image).resize((width, height), INTERPOLATIONS[interpolation])
  return np.asarray(image)


def _check_pixels(image: Image.Image, file: str):
  # Image.open only warns between the limit and twice the limit; such an image
  # is as much a bomb as one past it.
  limit = Image.MAX_IMAGE_PIXELS
  if limit and image.width * image.height > limit:
    raise BadImage(file, f'{image.width}x{image.height} pixels is over Pillow\'s '
                   f'decompression-bomb limit of {limit}')


_SPECIAL_FILES = ((stat.S_ISFIFO, 'a named pipe'), (stat.S_ISCHR, 'a character device'),
                  (stat.S_ISBLK, 'a block device'), (stat.S_ISSOCK, 'a socket'),
                  (stat.S_ISDIR, 'a folder'))


def not_a_regular_file(path: str) -> str:
  """Why `path` (after links) is not a regular file, or '' if it is one or
  cannot be looked at (the open then says why)."""
  try:
    mode = os.stat(path).st_mode
  except OSError:
    return ''
  for test, kind in _SPECIAL_FILES:
    if test(mode):
      return f'not a regular file but {kind}'
  return ''


def decode_file(path: str, image_size: tuple[int, int],
                interpolation: str) -> tuple[np.ndarray, bool]:
  """Returns the (H, W, 3) uint8 image upright, and whether it was not RGB.

  Only regular files are read: a pipe or a device named like an image would
  block or never end."""
  special = not_a_regular_file(path)
  if special:
    raise BadImage(path, special)
  try:
    with Image.open(path) as image:
      _check_pixels(image, path)
      # JPEG decodes at 1/2, 1/4 or 1/8 scale, never below the size asked;
      # a square of the longer side stays large enough after an EXIF rotation.
      side = max(image_size)
      image.draft(None, (side, side))
      ImageOps.exif_transpose(image, in_place=True)
      return _rgb_resized(image, image_size, interpolation), image.mode != 'RGB'
  except BadImage:
    raise
  # Pillow's plugins signal malformed input with many exception types; nothing
  # else runs inside this block, so any failure is a property of the file.
  except Exception as e:  # pylint: disable=broad-except
    raise BadImage(path, _reason(path, e)) from e


def decode_image(image: Image.Image, image_size: tuple[int, int], interpolation: str,
                 name: str) -> tuple[np.ndarray, bool]:
  """Like `decode_file` for an image already opened with Pillow (left unchanged)."""
  _check_pixels(image, name)
  try:
    upright = ImageOps.exif_transpose(image)
    return _rgb_resized(upright, image_size, interpolation), image.mode != 'RGB'
  except Exception as e:  # pylint: disable=broad-except
    raise BadImage(name, f'{type(e).__name__}: {e}') from e


def _reason(path: str, error: Exception) -> str:
  if os.path.islink(path) and not os.path.exists(path):
    return f'dangling symbolic link to {os.readlink(path)}'
  if os.path.isfile(path) and os.path.getsize(path) == 0:
    return 'empty file'
  return f'{type(error).__name__}: {error}'


def decode_array(image: np.ndarray, image_size: tuple[int, int],
                 interpolation: str, file: str) -> tuple[np.ndarray, bool]:
  """Like `decode_file` for an already decoded uint8 (H, W, C) array."""
  if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
    raise BadImage(file, f'expected a uint8 (H, W, 1|3|4) image, got {image.dtype} '
                   f'{image.shape}')
  pil = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
  return _rgb_resized(pil, image_size, interpolation), pil.mode != 'RGB'


def thread_map(fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
  """[fn(x) for x in items] on one thread per CPU; the first error cancels the rest."""
  pool = concurrent.futures.ThreadPoolExecutor(os.cpu_count())
  try:
    return list(pool.map(fn, items))
  finally:
    pool.shutdown(cancel_futures=True)


def decode_split(name: str, files: Sequence[str], labels: np.ndarray,
                 decode_one: Callable[[int], tuple[np.ndarray, bool]],
                 image_size: tuple[int, int], class_names: Sequence[str],
                 on_bad_image: str) -> tuple[Split, SplitReport]:
  """Decodes item i of the split with `decode_one(i)`, on a thread pool.

  Pillow releases the GIL while it decodes and resizes, so threads scale.
  A `BadImage` is skipped (and reported) or raised, by `on_bad_image`.
  """
  images = np.empty((len(files), *image_size, 3), np.uint8)

  def work(i: int) -> bool | BadImage:
    try:
      images[i], converted = decode_one(i)
    except BadImage as e:
      if on_bad_image == 'error':
        raise
      return e
    return converted

  results = thread_map(work, range(len(files)))
  bad = np.array([isinstance(r, BadImage) for r in results], bool)
  skipped = tuple((files[i], results[i].reason) for i in np.flatnonzero(bad))
  if bad.any():
    images, labels = images[~bad], labels[~bad]
    files = [f for f, b in zip(files, bad) if not b]
  counts = np.bincount(labels, minlength=len(class_names))
  if not counts.all():
    empty = [class_names[c] for c in np.flatnonzero(counts == 0)]
    raise DataError(f'{name}: every image of class(es) {empty} was skipped as bad; '
                    'a class without images cannot be learnt')
  split = Split(images=images, labels=labels.astype(np.int32), files=tuple(files))
  report = SplitReport(
      loaded=len(files),
      skipped=skipped,
      converted=sum(r is True for r in results))
  return split, report
