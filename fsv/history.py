"""A run's history (history.json: one entry per epoch, every phase) and
what it decides: the best epoch, how many epochs a phase has trained,
whether to lower the learning rate or stop.

An entry has 'phase', 'epoch', the training metrics ('train_loss',
'train_accuracy'), the validation ones when there is a validation split,
and 'seconds'. A phase that continues a trained model has an epoch 0 with
'start' (what it started from) and validation metrics only.
"""
from __future__ import annotations

from typing import Optional, Sequence


def epochs_trained(history: Sequence[dict], phase: str) -> int:
  """The phase's last epoch in `history` (0: none, or only its starting point)."""
  return max((h['epoch'] for h in history if h['phase'] == phase), default=0)


def best_entry(history: Sequence[dict], phase: str) -> Optional[dict]:
  """The phase's first epoch with the best `selection_metric` (None if none)."""
  entries = [h for h in history if h['phase'] == phase]
  return max(entries, key=selection_metric) if entries else None


def selection_metric(entry: dict) -> float:
  """What makes an epoch the best: validation accuracy, else train accuracy."""
  return entry['val_accuracy'] if 'val_accuracy' in entry else entry['train_accuracy']


def stale_epochs(history: Sequence[dict], phase: str, since_key: str = '') -> int:
  """Epochs since the phase's best (or since the last entry holding
  `since_key`, if later)."""
  entries = [h for h in history if h['phase'] == phase]
  mark = best_entry(history, phase)['epoch']
  mark = max([mark] + [h['epoch'] for h in entries if since_key and since_key in h])
  return entries[-1]['epoch'] - mark


def stops_early(history: Sequence[dict], phase: str, patience: int) -> bool:
  """Early stopping: `patience` epochs without a better selection metric."""
  return bool(patience) and any(h['phase'] == phase for h in history) and (
      stale_epochs(history, phase) >= patience)
