"""What a run leaves in its workdir besides checkpoints: JSON and curves.

A workdir that cannot take them (read-only, full, not a folder) is a
`WorkdirError` naming the path, raised by every writer of the workdir.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import tempfile
from typing import Any, Sequence

import matplotlib

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


def check_writable(workdir: str) -> None:
  """Creates `workdir` and a file in it, so that a run fails before any work."""
  with writing(workdir):
    os.makedirs(workdir, exist_ok=True)
    tempfile.TemporaryFile(dir=workdir).close()


def write_json(path: str, obj: Any) -> None:
  """Writes atomically, so a reader never sees half a file."""
  directory = os.path.dirname(os.path.abspath(path))
  with writing(path):
    os.makedirs(directory, exist_ok=True)
    with tempfile.NamedTemporaryFile('w', dir=directory, delete=False,
                                     suffix='.tmp') as f:
      json.dump(obj, f, indent=2, sort_keys=True)
      f.write('\n')
    os.replace(f.name, path)


def data_report(dataset) -> dict:
  """Per split: images loaded, files skipped (with reasons), converted, ignored."""
  return {'class_names': list(dataset.class_names),
          'splits': {name: dataclasses.asdict(r) for name, r in dataset.report.items()}}


def plot_history(history: Sequence[dict], path: str) -> None:
  """Accuracy and loss per epoch, train vs validation, as the book plots them."""
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
  try:
    with writing(path):
      fig.savefig(path, dpi=100)
  finally:
    plt.close(fig)
