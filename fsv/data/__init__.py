"""Datasets as decoded uint8 arrays: `load(config.data)` -> `Dataset`.

Sources: an image folder in Keras' flow_from_directory layout, or a TFDS
dataset carved into balanced subsets. Decoded splits are cached on disk, keyed
by content, so a second load of unchanged data decodes nothing.
"""
from __future__ import annotations

from typing import Callable

from absl import logging
import ml_collections
import numpy as np

from fsv.data import folder
from fsv.data import tfds_source
from fsv.data.decode import BadImage, DataError, Dataset, Split, SplitReport
from fsv.data.split import make_split

__all__ = ['BadImage', 'DataError', 'Dataset', 'Split', 'SplitReport', 'load',
           'make_split']

_SOURCES = {'folder': folder.load, 'tfds': tfds_source.load}


def _log(split: str, data: Split, report: SplitReport, class_names: tuple[str, ...]):
  for file, reason in report.skipped:
    logging.warning('%s: skipped bad image %s: %s', split, file, reason)
  counts = np.bincount(data.labels, minlength=len(class_names))
  per_class = ', '.join(f'{name} {count}' for name, count in zip(class_names, counts))
  height, width = data.images.shape[1:3]
  logging.info('%s: %d images (%s), %dx%d, %d skipped, %d ignored, %d converted to RGB, %s',
               split, report.loaded, per_class, height, width,
               len(report.skipped), len(report.ignored), report.converted,
               'from cache' if report.from_cache else 'decoded')


def load(data_config: ml_collections.ConfigDict,
         check_classes: Callable[[tuple[str, ...]], None] = lambda names: None
         ) -> Dataset:
  """The dataset `data_config` (a run's `config.data`) describes.

  `check_classes(class_names)` runs as soon as the source knows its classes,
  before any image is decoded, so a run that cannot use them fails at once.
  """
  class_names, loaded = _SOURCES[data_config.source](data_config, check_classes)
  for split, (data, report) in loaded.items():
    _log(split, data, report, class_names)
  return Dataset(class_names=class_names,
                 splits={split: data for split, (data, _) in loaded.items()},
                 report={split: report for split, (_, report) in loaded.items()})
