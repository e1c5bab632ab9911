"""Builds a balanced DST/{train,validation,test}/<class>/ from a full dataset.

The book's recipe (1000/500/500 cats and dogs out of Kaggle's 25,000), drawn
at random with a seed instead of by file number.
"""
from __future__ import annotations

import os
import pathlib
import shutil
from typing import Mapping

import numpy as np

from fsv.data.decode import DataError
from fsv.data.folder import SPLITS, is_image_name


def _by_class(src: pathlib.Path) -> dict[str, list[pathlib.Path]]:
  """Image files per class, each list sorted so a seed fixes the draw."""
  entries = [e for e in sorted(src.iterdir()) if not e.name.startswith('.')]
  folders = [e for e in entries if e.is_dir()]
  loose = [e for e in entries if e.is_file() and is_image_name(e.name)]
  if folders and loose:
    raise DataError(f'{src}: has both class folders and image files; use one layout: '
                    'SRC/<class>/<images> or SRC/<class>.<anything>.<ext>')
  if folders:
    return {folder.name: [p for p in sorted(folder.iterdir())
                          if p.is_file() and is_image_name(p.name)]
            for folder in folders}
  by_class = {}
  # Kaggle's flat layout: the class is the file name up to its first '.'.
  for path in loose:
    by_class.setdefault(path.name.split('.', 1)[0], []).append(path)
  return by_class


def make_split(src: str, dst: str, per_class: Mapping[str, int], seed: int = 0,
               link: bool = False) -> dict[str, dict[str, int]]:
  """Copies (or symlinks) a random, balanced subset of `src` into `dst`.

  Args:
    src: SRC/<class>/<images>, or flat SRC/<class>.<anything>.<ext> (Kaggle).
    dst: a missing or empty folder.
    per_class: images per class of each split, keys among 'train',
      'validation', 'test'; splits with 0 are not made.
    seed: for numpy.random.default_rng; the same seed gives the same split.
    link: symlink to the source files instead of copying them.

  Returns:
    {split: {class: count}} of what was written.
  """
  src_path, dst_path = pathlib.Path(src), pathlib.Path(dst)
  unknown = set(per_class) - set(SPLITS)
  if unknown:
    raise DataError(f'per_class has unknown splits {sorted(unknown)}; known: {SPLITS}')
  counts = {split: per_class.get(split, 0) for split in SPLITS}
  if not src_path.is_dir():
    raise DataError(f'{src}: not a directory')
  if dst_path.exists() and any(dst_path.iterdir()):
    raise DataError(f'{dst}: not empty; refusing to write into it')
  by_class = _by_class(src_path)
  if not by_class:
    raise DataError(f'{src}: no class folders or images found')
  wanted = sum(counts.values())
  short = {c: len(files) for c, files in by_class.items() if len(files) < wanted}
  if short:
    raise DataError(f'{src}: too few images for {wanted} per class ({counts}): {short}')

  rng = np.random.default_rng(seed)
  bounds = np.cumsum([0, *counts.values()])
  plan = []  # (source file, destination folder)
  for name in sorted(by_class):
    order = rng.permutation(len(by_class[name]))
    for split, start, stop in zip(SPLITS, bounds[:-1], bounds[1:]):
      plan += [(by_class[name][i], dst_path / split / name) for i in order[start:stop]]

  try:
    for file, folder in plan:
      folder.mkdir(parents=True, exist_ok=True)
      if link:
        os.symlink(file.resolve(), folder / file.name)
      else:
        shutil.copy2(file, folder / file.name)
  except OSError as e:
    raise DataError(f'cannot write the split into {dst}: {e}') from None
  return {split: {name: count for name in sorted(by_class)}
          for split, count in counts.items() if count}
