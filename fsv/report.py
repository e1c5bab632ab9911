"""What a run leaves in its workdir besides checkpoints: JSON and curves.

A workdir that cannot take them (read-only, full, not a folder) is a
`WorkdirError` naming the path, raised by every writer of the workdir.
Workdirs may be local paths or URLs such as gs://bucket/run (Cloud TPU):
every path goes through etils.epath, as orbax's do. In a multi-host run
only process 0 writes these files; orbax coordinates the checkpoints itself.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
from typing import Any, Callable, Sequence
import uuid

from etils import epath
import jax
import matplotlib
import numpy as np

matplotlib.use('Agg')  # files only; notebooks plot through their own backend
import matplotlib.pyplot as plt  # noqa: E402


class WorkdirError(Exception):
  """The workdir cannot be written; the message names the path and the OS error."""


@contextlib.contextmanager
def writing(path: str, errors: tuple[type[Exception], ...] = (OSError,)):
  """Turns `errors` raised while writing `path` into a WorkdirError naming it."""
  try:
    yield
  except errors as e:
    raise WorkdirError(f'cannot write to {path}: {e}') from e


def as_path(path: str) -> epath.Path:
  """A workdir path: a URL as it is, a local path made absolute (as orbax
  wants it; epath's own `absolute()` would turn gs://b into ./gs:/b)."""
  return epath.Path(path if '://' in str(path) else os.path.abspath(path))


def _writes_files() -> bool:
  return jax.process_index() == 0


def _write_atomically(path: str, write: Callable[[epath.Path], None]) -> None:
  """`write` fills a temporary file that then replaces `path`, so a reader
  never sees half a file; process 0 only (every host computes the same)."""
  if not _writes_files():
    return
  target = as_path(path)
  with writing(path):
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f'.{target.name}.{uuid.uuid4().hex}.tmp'
    write(tmp)
    tmp.replace(target)


def write_npz(path: str, arrays: dict) -> None:
  """Numpy arrays, never pickled objects."""
  def write(tmp: epath.Path) -> None:
    with tmp.open('wb') as f:
      np.savez(f, **arrays)
  _write_atomically(path, write)


def check_writable(workdir: str) -> None:
  """Creates `workdir` and a file in it, so that a run fails before any work.

  On every host: each writes its part of the checkpoints.
  """
  path = as_path(workdir)
  with writing(workdir):
    path.mkdir(parents=True, exist_ok=True)
    probe = path / f'.fsv-writable-{uuid.uuid4().hex}'
    probe.write_text('')
    probe.unlink()


def write_json(path: str, obj: Any) -> None:
  _write_atomically(path, lambda tmp: tmp.write_text(
      json.dumps(obj, indent=2, sort_keys=True) + '\n'))


def data_report(dataset) -> dict:
  """Per split: images loaded, files skipped (with reasons), converted, ignored."""
  return {'class_names': list(dataset.class_names),
          'splits': {name: dataclasses.asdict(r) for name, r in dataset.report.items()}}


def plot_history(history: Sequence[dict], path: str) -> None:
  """Accuracy and loss per epoch, train vs validation, as the book plots them
  (process 0 only)."""
  if not _writes_files():
    return
  epochs = [h['epoch'] for h in history]
  fig, axes = plt.subplots(1, 2, figsize=(11, 4))
  for ax, metric in zip(axes, ('accuracy', 'loss')):
    ax.plot(epochs, [h[f'train_{metric}'] for h in history], 'o-', ms=3,
            label=f'training {metric}')
    if any(f'val_{metric}' in h for h in history):
      ax.plot(epochs, [h.get(f'val_{metric}') for h in history], 's-', ms=3,
              label=f'validation {metric}')
    ax.set_xlabel('epoch')
    ax.set_title(metric)
    ax.grid(alpha=.3)
    ax.legend()
  fig.tight_layout()
  png = io.BytesIO()
  try:
    fig.savefig(png, format='png', dpi=100)
  finally:
    plt.close(fig)
  with writing(path):
    as_path(path).write_bytes(png.getvalue())
