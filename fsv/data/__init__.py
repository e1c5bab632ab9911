"""Datasets as decoded uint8 arrays: `load(config.data)` -> `Dataset`.

Sources: an image folder in Keras' flow_from_directory layout, a TFDS
dataset carved into balanced subsets, or generated images (smoke runs).
`data.source='auto'` takes the folder `data.dir` if it is set, else the
TFDS dataset `data.name`. Decoded splits are cached on disk, keyed by
content, so a second load of unchanged data decodes nothing.
"""
from __future__ import annotations

import importlib
from typing import Callable

from absl import logging
import ml_collections
import numpy as np

from fsv import progress
from fsv.data.decode import BadImage, DataError, Dataset, Split, SplitReport
from fsv.data.split import make_split

__all__ = ['BadImage', 'DataError', 'Dataset', 'Split', 'SplitReport', 'load',
           'make_split', 'source_of']

# Modules imported when used: TFDS takes seconds to import, a folder needs none of it.
_SOURCES = {'folder': 'fsv.data.folder', 'tfds': 'fsv.data.tfds_source',
            'synthetic': 'fsv.data.synthetic'}


def source_of(data_config: ml_collections.ConfigDict) -> str:
  """The source `data_config` reads: 'auto' resolved."""
  if data_config.source != 'auto':
    return data_config.source
  if data_config.dir:
    return 'folder'
  if data_config.name:
    return 'tfds'
  raise DataError('no data: set --config.data.dir=DIR (an image folder, DIR/train/<class>/'
                  '<images>) or --config.data.name=NAME (a TFDS dataset)')


def _log(split: str, data: Split, report: SplitReport, class_names: tuple[str, ...]):
  for file, reason in report.skipped:
    logging.warning('%s: skipped bad image %s: %s', split, file, reason)
  counts = np.bincount(data.labels, minlength=len(class_names))
  per_class = ', '.join(f'{name} {count}' for name, count in zip(class_names, counts))
  height, width = data.images.shape[1:3]
  progress.report(
      f'{split}: {report.loaded} images ({per_class}), {height}x{width}, '
      f'{len(report.skipped)} skipped, {len(report.ignored)} ignored, {report.converted} '
      f'converted to RGB, {"from cache" if report.from_cache else "decoded"}')


def load(data_config: ml_collections.ConfigDict,
         check: Callable[[tuple[str, ...], tuple[str, ...]], None] = lambda *_: None
         ) -> Dataset:
  """The dataset `data_config` (a run's `config.data`) describes.

  `check(class names, split names)` runs as soon as the source knows them,
  before any image is decoded, so a run that cannot use them fails at once.
  """
  source = importlib.import_module(_SOURCES[source_of(data_config)])
  class_names, loaded = source.load(data_config, check)
  for split, (data, report) in loaded.items():
    _log(split, data, report, class_names)
  return Dataset(class_names=class_names,
                 splits={split: data for split, (data, _) in loaded.items()},
                 report={split: report for split, (_, report) in loaded.items()})
