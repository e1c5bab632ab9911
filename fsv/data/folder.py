"""The image-folder source: DIR/{train,validation,test}/<class>/<images>.

The layout of Keras' `flow_from_directory`: classes are the sub-folders of a
split, sorted by name; images may sit in nested folders below a class folder.
The validation split may also be called `valid/` or `val/` (fastai's and
the dog-breed dataset's layouts). As in Keras (follow_links=False), a
symbolic link to an image is read but one to a folder is not walked, at any
level; it is reported as ignored, like hidden and non-image files. A folder
that cannot be read is an error naming it: its images would otherwise be
missing without a word. The whole layout is checked before anything is
decoded.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib
from typing import Callable

import ml_collections
import numpy as np

from fsv import progress
from fsv.data import cache
from fsv.data import decode
from fsv.data.decode import DataError, Split, SplitReport

SPLITS = ('train', 'validation', 'test')
# The folder names each split may have, in order of preference.
SPLIT_FOLDERS = {'train': ('train',), 'validation': ('validation', 'valid', 'val'),
                 'test': ('test',)}
IMAGE_EXTENSIONS = frozenset(
    ('.jpg', '.jpeg', '.png', '.bmp', '.gif', '.webp', '.tif', '.tiff'))


def is_image_name(name: str) -> bool:
  """Not hidden, and an image extension in any case."""
  return (not name.startswith('.')
          and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS)


@dataclasses.dataclass(frozen=True)
class _SplitListing:
  classes: dict[str, list[str]]  # class folder -> image files, relative to DIR
  ignored: list[str]             # hidden or non-image entries, relative to DIR


def _unreadable(error: OSError):
  raise DataError(f'{error.filename}: cannot be read ({error.strerror}); the images in it '
                  'would be missing without a word') from error


def _list_class(root: pathlib.Path, folder: pathlib.Path) -> tuple[list[str], list[str]]:
  images, ignored = [], []
  for dirpath, dirnames, filenames in os.walk(folder, onerror=_unreadable):
    rel = pathlib.Path(dirpath).relative_to(root)
    # Hidden folders (.ipynb_checkpoints, ...) and linked ones (which os.walk
    # would silently skip) are not walked, only reported.
    unwalked = {d for d in dirnames
                if d.startswith('.') or os.path.islink(os.path.join(dirpath, d))}
    ignored += [(rel / d).as_posix() for d in dirnames if d in unwalked]
    dirnames[:] = [d for d in dirnames if d not in unwalked]
    for name in filenames:
      (images if is_image_name(name) else ignored).append((rel / name).as_posix())
  return images, ignored


def _list_split(root: pathlib.Path, split: str) -> _SplitListing:
  classes, ignored = {}, []
  try:
    entries = list(os.scandir(root / split))
  except OSError as e:
    _unreadable(e)
  for entry in entries:
    if entry.is_dir(follow_symlinks=False) and not entry.name.startswith('.'):
      images, more = _list_class(root, root / split / entry.name)
      classes[entry.name] = images
      ignored += more
    else:
      ignored.append((pathlib.PurePosixPath(split) / entry.name).as_posix())
  return _SplitListing(classes, ignored)


def _list(root: pathlib.Path
          ) -> tuple[tuple[str, ...], dict[str, str], dict[str, _SplitListing]]:
  """Class names, each present split's folder and files; raises on a bad layout."""
  if not root.is_dir():
    raise DataError(f'data.dir {str(root)!r} is not a directory')
  if not (root / 'train').is_dir():
    raise DataError(f'{root}: no train/ folder; expected {root}/train/<class>/<images>')
  folders = {}
  for split, names in SPLIT_FOLDERS.items():
    present = [name for name in names if (root / name).is_dir()]
    if len(present) > 1:
      raise DataError(f'{root}: both {" and ".join(f"{n}/" for n in present)} are there; '
                      f'which is the {split} split? Keep one of them')
    if present:
      folders[split] = present[0]
      if present[0] != split:
        progress.report(f'{split} split: {root / present[0]}')
  listings = {split: _list_split(root, folder) for split, folder in folders.items()}
  class_names = tuple(sorted(listings['train'].classes))
  if not class_names:
    raise DataError(f'{root / "train"}: no class folders')
  for split, listing in listings.items():
    _check_classes(root / folders[split], listing, class_names, "train/'s")
  return class_names, folders, listings


def _check_classes(folder: pathlib.Path, listing: _SplitListing,
                   class_names: tuple[str, ...], whose: str) -> None:
  found = set(listing.classes)
  if found != set(class_names):
    raise DataError(
        f'{folder}: its classes differ from {whose} {list(class_names)}: '
        f'missing {sorted(set(class_names) - found)}, '
        f'extra {sorted(found - set(class_names))}')
  empty = sorted(str(folder / c) for c, files in listing.classes.items() if not files)
  if empty:
    raise DataError(f'class folder(s) without image files: {empty} '
                    f'(image extensions: {sorted(IMAGE_EXTENSIONS)})')


def _sha256(path: pathlib.Path) -> str:
  special = decode.not_a_regular_file(str(path))
  if special:  # a pipe or device would block or never end
    return f'unreadable: {special}'
  try:
    return hashlib.sha256(path.read_bytes()).hexdigest()
  except OSError as e:
    # A dangling link or unreadable file is skipped as a bad image when
    # decoded; its error stands in for the content in the cache key.
    return f'unreadable: {e.strerror}'


def _load_split(root: pathlib.Path, split: str, listing: _SplitListing,
                class_names: tuple[str, ...], config: ml_collections.ConfigDict
                ) -> tuple[Split, SplitReport]:
  pairs = sorted((file, label) for label, name in enumerate(class_names)
                 for file in listing.classes[name])
  files = [file for file, _ in pairs]
  labels = np.array([label for _, label in pairs], np.int32)
  image_size = tuple(config.image_size)
  digests = decode.thread_map(lambda file: _sha256(root / file), files)
  entry_key = cache.key(dict(
      source='folder', class_names=class_names, image_size=image_size,
      interpolation=config.interpolation, on_bad_image=config.on_bad_image,
      files=[(f, int(l), d) for f, l, d in zip(files, labels, digests)]))

  def build():
    return decode.decode_split(
        split, files, labels,
        lambda i: decode.decode_file(str(root / files[i]), image_size,
                                     config.interpolation),
        image_size, class_names, config.on_bad_image)

  data, report = cache.load_or_build(cache.root(config.cache_dir), entry_key,
                                     class_names, build)
  # Ignored files are not in the key, so they come from this listing.
  return data, dataclasses.replace(report, ignored=tuple(sorted(listing.ignored)))


def load(config: ml_collections.ConfigDict,
         check: Callable[[tuple[str, ...], tuple[str, ...]], None]
         ) -> tuple[tuple[str, ...], dict[str, tuple[Split, SplitReport]]]:
  """Class names and the splits under `config.dir` (a run's `data` group);
  `check(class names, split names)` runs before any image is decoded."""
  if not config.dir:  # Path('') would be the current directory
    raise DataError('data.dir is empty; set it to DIR of DIR/train/<class>/<images>')
  root = pathlib.Path(config.dir).expanduser()
  class_names, folders, listings = _list(root)
  check(class_names, tuple(listings))
  return class_names, {
      split: _load_split(root, folders[split], listing, class_names, config)
      for split, listing in listings.items()}


def load_labelled(path: str, split: str, class_names: tuple[str, ...],
                  config: ml_collections.ConfigDict) -> tuple[Split, SplitReport]:
  """A labelled folder to evaluate a run on, decoded and cached as its training
  data was (`config` is the run's `data` group): PATH/<split>/<class>/... or
  a bare PATH/<class>/..., with exactly the run's classes."""
  root = pathlib.Path(path).expanduser()
  if not root.is_dir():
    raise DataError(f'{path!r} is not a directory')
  if (root / split).is_dir():
    where = split
  elif any((root / name).is_dir() for name in class_names):
    where = ''
  else:
    raise DataError(f'{root}: neither {root / split}/<class>/<images> nor class folders '
                    f'{list(class_names)} in it')
  listing = _list_split(root, where)
  _check_classes(root / where, listing, class_names, "the run's")
  return _load_split(root, where or root.name, listing, class_names, config)
