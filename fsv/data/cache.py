"""Decoded splits on disk, keyed by everything that determines their arrays.

An entry is `<root>/<key>/{images.npy, labels.npy, meta.json}`. It is written
in a temporary folder and renamed into place, so an entry that exists is
complete: an interrupted write leaves only a temporary folder nobody reads.
`meta.json` holds a digest of the arrays, checked on every read: an entry
damaged later (a truncated or altered file) is rebuilt, with a warning,
never used. A cache that cannot be written (read-only, full) costs a
warning and the next run's decoding, not the run.
"""
from __future__ import annotations

import hashlib
import json
import os
import pathlib
import shutil
import tempfile
from typing import Any, Callable
import uuid

from absl import logging
import numpy as np
import PIL

from fsv import files
from fsv.cache_dir import cache_root
from fsv.data.decode import DECODER_VERSION, Split, SplitReport


def root(cache_dir: str) -> pathlib.Path:
  """The folder of data entries under the cache root (see fsv/cache_dir.py)."""
  return cache_root(cache_dir) / 'data'


def key(parts: dict[str, Any]) -> str:
  """sha256 of `parts` (JSON-able) plus the decoder's own version."""
  # Pillow's version is in the key as its resize filters have changed between
  # releases.
  everything = dict(parts, decoder=DECODER_VERSION, pillow=PIL.__version__)
  text = json.dumps(everything, sort_keys=True, separators=(',', ':'))
  return hashlib.sha256(text.encode()).hexdigest()


def _digest(images: np.ndarray, labels: np.ndarray, files_: list) -> str:
  h = hashlib.sha256(json.dumps([list(files_), labels.tolist(), images.shape,
                                 str(images.dtype)]).encode())
  h.update(np.ascontiguousarray(images).tobytes())
  return h.hexdigest()


class _Damaged(Exception):
  pass


def _read(folder: pathlib.Path) -> tuple[Split, SplitReport]:
  try:
    meta = json.loads((folder / 'meta.json').read_text())
    images = files.read_npy(folder / 'images.npy')
    labels = files.read_npy(folder / 'labels.npy')
  except (OSError, ValueError, EOFError) as e:  # json's errors are ValueErrors
    raise _Damaged(f'{type(e).__name__}: {e}') from e
  if meta.get('digest') != _digest(images, labels, meta.get('files', [])):
    raise _Damaged('its arrays do not match the digest written with them')
  split = Split(images=images, labels=labels, files=tuple(meta['files']))
  report = SplitReport(loaded=meta['loaded'], skipped=tuple(tuple(s) for s in meta['skipped']),
                       converted=meta['converted'], from_cache=True)
  return split, report


def read(entries: pathlib.Path, entry_key: str) -> tuple[Split, SplitReport] | None:
  """The entry, or None if there is none or it is damaged (then it is removed)."""
  folder = entries / entry_key
  if not folder.is_dir():
    return None
  try:
    return _read(folder)
  except _Damaged as e:
    logging.warning('decoded-image cache entry %s is damaged (%s); decoding again', folder, e)
    # Moved aside first: removing it in place could race a concurrent reader.
    aside = entries / f'.damaged.{entry_key}.{uuid.uuid4().hex}'
    try:
      folder.rename(aside)
      shutil.rmtree(aside, ignore_errors=True)
    except OSError:
      pass  # read-only: the rebuilt entry cannot be written either; `write` says so
    return None


def write(entries: pathlib.Path, entry_key: str, split: Split, report: SplitReport,
          class_names: tuple[str, ...]):
  """Stores the entry; a cache that cannot be written is a warning, not an error."""
  try:
    entries.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f'.{entry_key}.', dir=entries))
  except OSError as e:
    logging.warning('cannot write the decoded-image cache in %s (%s); the next run will '
                    'decode the images again', entries, e.strerror or e)
    return
  try:
    np.save(tmp / 'images.npy', split.images, allow_pickle=False)
    np.save(tmp / 'labels.npy', split.labels, allow_pickle=False)
    meta = dict(files=split.files, class_names=class_names, loaded=report.loaded,
                skipped=report.skipped, converted=report.converted,
                digest=_digest(split.images, split.labels, list(split.files)))
    (tmp / 'meta.json').write_text(json.dumps(meta))
    os.rename(tmp, entries / entry_key)
  except OSError as e:
    # A concurrent load that wrote the same key first wins; both are equal.
    if not (entries / entry_key).is_dir():
      logging.warning('cannot write the decoded-image cache in %s (%s); the next run will '
                      'decode the images again', entries, e.strerror or e)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


def load_or_build(entries: pathlib.Path, entry_key: str, class_names: tuple[str, ...],
                  build: Callable[[], tuple[Split, SplitReport]]
                  ) -> tuple[Split, SplitReport]:
  """The cached entry, or `build()`'s result, stored for next time."""
  cached = read(entries, entry_key)
  if cached is not None:
    return cached
  split, report = build()
  write(entries, entry_key, split, report, class_names)
  return split, report
