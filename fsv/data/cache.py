"""Decoded splits on disk, keyed by everything that determines their arrays.

An entry is `<root>/<key>/{images.npy, labels.npy, meta.json}`. It is written
in a temporary folder and renamed into place, so an entry that exists is
complete: an interrupted write leaves only a temporary folder nobody reads.
"""
from __future__ import annotations

import hashlib
import json
import os
import pathlib
import shutil
import tempfile
from typing import Any, Callable

import numpy as np
import PIL

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


def read(entries: pathlib.Path, entry_key: str) -> tuple[Split, SplitReport] | None:
  folder = entries / entry_key
  if not folder.is_dir():
    return None
  meta = json.loads((folder / 'meta.json').read_text())
  split = Split(images=np.load(folder / 'images.npy', allow_pickle=False),
                labels=np.load(folder / 'labels.npy', allow_pickle=False),
                files=tuple(meta['files']))
  report = SplitReport(loaded=meta['loaded'],
                       skipped=tuple(tuple(s) for s in meta['skipped']),
                       converted=meta['converted'], from_cache=True)
  return split, report


def write(entries: pathlib.Path, entry_key: str, split: Split, report: SplitReport,
          class_names: tuple[str, ...]):
  entries.mkdir(parents=True, exist_ok=True)
  tmp = pathlib.Path(tempfile.mkdtemp(prefix=f'.{entry_key}.', dir=entries))
  try:
    np.save(tmp / 'images.npy', split.images, allow_pickle=False)
    np.save(tmp / 'labels.npy', split.labels, allow_pickle=False)
    meta = dict(files=split.files, class_names=class_names, loaded=report.loaded,
                skipped=report.skipped, converted=report.converted)
    (tmp / 'meta.json').write_text(json.dumps(meta))
    os.rename(tmp, entries / entry_key)
  except OSError:
    # A concurrent load that wrote the same key first wins; both are equal.
    if not (entries / entry_key).is_dir():
      raise
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
