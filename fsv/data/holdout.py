"""The validation images of a run, when the data's own split is not the one.

`data.validation_split=f` moves a stratified fraction f of each class's
training images into a validation split. `data.folds=k`, `data.fold=i`
pools train and validation, deals each class's images into k folds and
validates on fold i (k-fold cross-validation, as the Keras blog advises for
small validation sets). Both draw from the run's seed: the same seed holds
out the same images, whatever the machine. Test is never touched.
"""
from __future__ import annotations

import dataclasses

from absl import logging
import numpy as np

from fsv.data.decode import DataError, Dataset, Split, SplitReport

_STREAM = 0x686f6c64  # 'hold': keeps these draws apart from the run's other ones
_FOLD_STREAM = 0x666f6c64  # 'fold'


def for_run(dataset: Dataset, data_config, seed: int) -> Dataset:
  """The splits a run trains and validates on (see the module docstring)."""
  if data_config.folds:
    return with_fold(dataset, data_config.folds, data_config.fold, seed)
  if data_config.validation_split:
    return with_validation_split(dataset, data_config.validation_split, seed)
  return dataset


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


def _concatenate(*splits: Split) -> Split:
  return Split(images=np.concatenate([s.images for s in splits]),
               labels=np.concatenate([s.labels for s in splits]),
               files=tuple(f for s in splits for f in s.files))


def with_fold(dataset: Dataset, folds: int, fold: int, seed: int) -> Dataset:
  """Train and validation pooled and dealt into `folds` stratified folds;
  validation is fold `fold`, train the others."""
  pooled = _concatenate(*(dataset.splits[s] for s in ('train', 'validation')
                          if s in dataset.splits))
  rng = np.random.default_rng([seed, _FOLD_STREAM])
  assignment = np.empty(len(pooled.labels), np.int64)
  for label, name in enumerate(dataset.class_names):
    rows = np.flatnonzero(pooled.labels == label)
    if len(rows) < folds:
      raise DataError(f'data.folds={folds}: class {name!r} has only {len(rows)} image(s) in '
                      'train and validation, fewer than the folds')
    # Dealt round-robin after a shuffle: every fold gets floor or ceil of n/k.
    assignment[rng.permutation(rows)] = np.arange(len(rows)) % folds
  held = np.flatnonzero(assignment == fold)
  kept = np.flatnonzero(assignment != fold)
  logging.info('fold %d of %d: %d images validate, %d train (seed %d)', fold, folds,
               len(held), len(kept), seed)
  splits = {**dataset.splits, 'train': _rows(pooled, kept), 'validation': _rows(pooled, held)}
  report = {**dataset.report,
            'train': SplitReport(loaded=len(kept), skipped=(), converted=0),
            'validation': SplitReport(loaded=len(held), skipped=(), converted=0)}
  return Dataset(class_names=dataset.class_names, splits=splits, report=report)
