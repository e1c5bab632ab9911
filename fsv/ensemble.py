"""Ensembles of finished runs, chosen on validation, reported on test once.

Every run with a workdir leaves `predictions.npz`: the validation and test
probabilities of the model it evaluated and, for models that see images,
those of the mirrored images (test-time augmentation). An ensemble averages
the probabilities of its members. `choose` scores every non-empty subset of
the runs, with and without the mirrored images, by validation accuracy
(ties: lower validation loss, then fewer members) and only then computes
the test accuracy of the one chosen; the test split chooses nothing.
"""
from __future__ import annotations

import dataclasses
import itertools
import os
import zipfile
from typing import Sequence

import numpy as np

from fsv import files
from fsv.errors import DataError, WorkdirError

SPLITS = ('validation', 'test')


@dataclasses.dataclass(frozen=True)
class Candidate:
  members: tuple[str, ...]    # workdirs
  flip: bool                  # mirrored images averaged in
  val_accuracy: float
  val_loss: float


def load(workdir: str) -> dict:
  """`predictions.npz` of a run, as {'<split>/<what>': array}."""
  path = files.as_path(os.path.join(workdir, 'predictions.npz'))
  if not path.exists():
    raise WorkdirError(f'{workdir}: no predictions.npz (written at the end of a run '
                       'with a workdir)')
  try:
    predictions = files.read_npz(path)
  except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
    raise WorkdirError(f'{workdir}: predictions.npz cannot be read ({e})') from None
  missing = [s for s in SPLITS if f'{s}/probabilities' not in predictions]
  if missing:
    raise WorkdirError(f'{workdir}: predictions.npz has no {missing} split(s)')
  return predictions


def _check_same_examples(runs: dict) -> None:
  """Members must have predicted the same files in the same order with the same labels."""
  (first, reference), *others = runs.items()
  for workdir, predictions in others:
    for split in SPLITS:
      for what in ('files', 'labels'):
        if not np.array_equal(predictions[f'{split}/{what}'], reference[f'{split}/{what}']):
          raise DataError(f'{workdir} and {first} have different {split} {what}: an '
                          'ensemble needs runs on the same data')


def probabilities(runs: dict, members: Sequence[str], flip: bool, split: str) -> np.ndarray:
  """The members' mean probabilities on `split` (and on its mirror images if `flip`)."""
  kinds = ('probabilities', 'flipped_probabilities') if flip else ('probabilities',)
  return np.mean([runs[m][f'{split}/{kind}'] for m in members for kind in kinds], axis=0)


def accuracy_and_loss(probs: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
  picked = probs[np.arange(len(labels)), labels]
  return (float(np.mean(probs.argmax(-1) == labels)),
          float(-np.mean(np.log(np.clip(picked, 1e-7, 1)))))


def candidates(runs: dict) -> list[Candidate]:
  """Every subset of the runs, with and without the mirrored images (where
  all its members have them), scored on validation; best first."""
  labels = next(iter(runs.values()))['validation/labels']
  scored = []
  for size in range(1, len(runs) + 1):
    for members in itertools.combinations(runs, size):
      for flip in (False, True):
        if flip and not all('validation/flipped_probabilities' in runs[m] for m in members):
          continue
        accuracy, loss = accuracy_and_loss(
            probabilities(runs, members, flip, 'validation'), labels)
        scored.append(Candidate(members, flip, accuracy, loss))
  return sorted(scored, key=lambda c: (-c.val_accuracy, c.val_loss, len(c.members)))


def choose(workdirs: Sequence[str]) -> dict:
  """The best ensemble of `workdirs` by validation, with its test accuracy."""
  if not workdirs:
    raise WorkdirError('no workdirs to ensemble')
  runs = {w: load(w) for w in workdirs}
  _check_same_examples(runs)
  ranked = candidates(runs)
  best = ranked[0]
  test_accuracy, test_loss = accuracy_and_loss(
      probabilities(runs, best.members, best.flip, 'test'), runs[workdirs[0]]['test/labels'])
  return {'members': list(best.members), 'flip': best.flip,
          'val_accuracy': best.val_accuracy, 'val_loss': best.val_loss,
          'test_accuracy': test_accuracy, 'test_loss': test_loss,
          'candidates': len(ranked),
          'ranking': [dataclasses.asdict(c) for c in ranked[:20]]}
