"""A validation split held out of train, for data that comes without one.

`data.validation_split=f` moves a stratified fraction f of each class's
training images into a validation split, drawn from the run's seed: the
same seed holds out the same images, whatever the machine.
"""
from __future__ import annotations

import dataclasses

from absl import logging
import numpy as np

from fsv.data.decode import DataError, Dataset, Split, SplitReport

_STREAM = 0x686f6c64  # 'hold': keeps these draws apart from the run's other ones


def _rows(split: Split, rows: np.ndarray) -> Split:
  return Split(images=split.images[rows], labels=split.labels[rows],
               files=tuple(split.files[i] for i in rows))


def with_validation_split(dataset: Dataset, fraction: float, seed: int) -> Dataset:
  """`dataset` with `fraction` of each class of train held out as validation."""
  train = dataset.splits['train']
  rng = np.random.default_rng([seed, _STREAM])
  held = []
  for label, name in enumerate(dataset.class_names):
    rows = np.flatnonzero(train.labels == label)
    count = max(1, round(fraction * len(rows)))
    if count >= len(rows):
      raise DataError(f'data.validation_split={fraction}: class {name!r} has only '
                      f'{len(rows)} training image(s), too few to hold any out')
    held.append(rng.permutation(rows)[:count])
  held = np.sort(np.concatenate(held))
  kept = np.setdiff1d(np.arange(len(train.labels)), held)
  logging.info('validation: %d images held out of train (data.validation_split=%g, seed %d)',
               len(held), fraction, seed)
  report = dataset.report['train']
  return Dataset(
      class_names=dataset.class_names,
      splits={**dataset.splits, 'train': _rows(train, kept), 'validation': _rows(train, held)},
      report={**dataset.report,
              'train': dataclasses.replace(report, loaded=len(kept)),
              'validation': SplitReport(loaded=len(held), skipped=(), converted=0,
                                        from_cache=report.from_cache)})
