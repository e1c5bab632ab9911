"""Files written whole or not at all: the one atomic writer, for local paths and URLs.

Workdirs may be URLs such as gs://bucket/run (Cloud TPU), so every path goes
through etils.epath, as orbax's do. A file is written under a temporary name
beside its target and renamed over it once complete: a reader, or a run
killed mid-write, never sees half a file.
"""
from __future__ import annotations

import contextlib
import json
import os
from typing import Any, BinaryIO, Callable
import uuid

from etils import epath

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
