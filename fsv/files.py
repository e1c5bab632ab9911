"""Files written whole or not at all: the one atomic writer, for local paths and URLs.

Workdirs may be URLs such as gs://bucket/run (Cloud TPU), so every path goes
through etils.epath, as orbax's do. A file is written under a temporary name
beside its target and renamed over it once complete: a reader, or a run
killed mid-write, never sees half a file.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
from typing import Any, BinaryIO, Callable
import uuid
import zipfile

from etils import epath
import numpy as np

from fsv.errors import WorkdirError


def as_path(path) -> epath.Path:
  """A URL as it is, a local path made absolute (as orbax wants it; epath's
  own `absolute()` would turn gs://b into ./gs:/b)."""
  path = os.fspath(path)
  return epath.Path(path if '://' in path else os.path.abspath(os.path.expanduser(path)))


def write_atomically(path, write: Callable[[BinaryIO], None]) -> None:
  """`write(f)` fills a temporary file that then replaces `path`; if `write`
  raises, nothing is left behind and `path` is as it was."""
  target = as_path(path)
  target.parent.mkdir(parents=True, exist_ok=True)
  tmp = target.parent / f'.{target.name}.{uuid.uuid4().hex}.tmp'
  try:
    with tmp.open('wb') as f:
      write(f)
    tmp.replace(target)
  finally:
    if tmp.exists():
      tmp.unlink()


def write_bytes(path, data: bytes) -> None:
  write_atomically(path, lambda f: f.write(data))


def write_json(path, obj: Any) -> None:
  write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + '\n').encode())


def read_json(path) -> Any:
  return json.loads(as_path(path).read_text())


@contextlib.contextmanager
def writing(path, errors: tuple[type[Exception], ...] = (OSError,)):
  """Turns `errors` raised while writing `path` into a WorkdirError naming it."""
  try:
    yield
  except errors as e:
    raise WorkdirError(f'cannot write to {path}: {e}') from e


def _check_array_header(f: BinaryIO, size: int, name: str) -> None:
  """Refuses an .npy stream (of `size` bytes) whose header asks for Python
  objects, or for more bytes than it holds: numpy would unpickle the one
  and allocate the other (terabytes, from a tiny file) before noticing."""
  version = np.lib.format.read_magic(f)
  read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                 else np.lib.format.read_array_header_2_0)
  shape, _, dtype = read_header(f)
  if dtype.hasobject:
    raise ValueError(f'{name}: holds Python objects, which would be unpickled; refused')
  declared, held = math.prod(shape) * dtype.itemsize, size - f.tell()
  if declared > held:
    raise ValueError(f'{name}: its header declares {declared} bytes ({dtype} {shape}) '
                     f'but it holds {held}')


def read_npz(path) -> dict:
  """The arrays of an .npz file, each checked as `_check_array_header` says.
  Raises ValueError (or OSError, zipfile.BadZipFile) for a file that is not one."""
  with as_path(path).open('rb') as f:
    with zipfile.ZipFile(f) as archive:
      for info in archive.infolist():
        with archive.open(info) as member:
          _check_array_header(member, info.file_size, f'{path}:{info.filename}')
    f.seek(0)
    with np.load(f, allow_pickle=False) as arrays:
      return {name: arrays[name] for name in arrays.files}


def read_npy(path) -> np.ndarray:
  """The array of an .npy file, checked as `_check_array_header` says."""
  with as_path(path).open('rb') as f:
    size = f.seek(0, os.SEEK_END)
    f.seek(0)
    _check_array_header(f, size, str(path))
    f.seek(0)
    return np.load(f, allow_pickle=False)
