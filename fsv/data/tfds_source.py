"""The TFDS source: balanced per-class subsets carved from one TFDS split.

Reads through `as_data_source` (random access over array_record files), which
needs no TensorFlow. The carving is the book's: walking the split in order,
each class gives its first `per_class.train` examples to train, its next
`per_class.validation` to validation, and its next `per_class.test` to test.
"""
from __future__ import annotations

import functools
import socket
from typing import Any, Callable, Sequence
import urllib.parse

import ml_collections
import numpy as np
import tensorflow_datasets as tfds

from fsv.data import cache
from fsv.data import decode
from fsv.data.decode import DataError, Split, SplitReport
from fsv.data.folder import SPLITS

# Examples whose labels are read in one go; a carving reads at most this many
# more than it needs.
_CHUNK = 256


def _cannot_download(builder: tfds.core.DatasetBuilder) -> str:
  """Why downloading the dataset would fail, or ''. Asked before TFDS tries:
  offline, TFDS retries for minutes before it gives up."""
  for url in getattr(builder, 'url_infos', None) or {}:
    host = urllib.parse.urlparse(url).hostname
    try:
      socket.create_connection((host, 443), timeout=10).close()
    except OSError as e:
      return f'cannot be downloaded (no network? {host}: {e})'
  return ''


def _ways_out(name: str) -> str:
  return ('Either point at an image folder with --config.data.dir=DIR '
          '(`python -m experiments.make_split` builds one from a download such as '
          'Kaggle\'s "Dogs vs. Cats" train folder), or prepare the dataset where there is '
          f'a network (`tfds build {name} --file_format=array_record`) and set '
          '--config.data.tfds_data_dir to a copy of it')


def _source(builder: tfds.core.DatasetBuilder, config: ml_collections.ConfigDict):
  if not builder.is_prepared():
    where = f'TFDS dataset {config.name!r} is not prepared in {builder.data_dir}'
    if not config.download:
      raise DataError(f'{where}; set data.download=True to let TFDS download and prepare '
                      f'it. {_ways_out(config.name)}')
    blocker = _cannot_download(builder)
    if blocker:
      raise DataError(f'{where} and {blocker}. {_ways_out(config.name)}')
    try:
      builder.download_and_prepare(file_format='array_record')
    except OSError as e:  # requests' errors are OSErrors too
      raise DataError(f'{where} and downloading it failed ({e}). '
                      f'{_ways_out(config.name)}') from None
    except ImportError as e:
      if e.name != 'tensorflow':
        raise
      # Some builders (cats_vs_dogs) re-encode the images with TensorFlow while
      # they prepare the dataset; reading it back needs none.
      raise DataError(f'{where}: preparing it needs TensorFlow, pip install -e '
                      "'.[tfds]' and run again (TFDS keeps what it downloaded). "
                      f'{_ways_out(config.name)}') from None
  return builder.as_data_source(config.tfds_split)


def _carve(source: Sequence[Any], class_names: tuple[str, ...], per_class: dict[str, int],
           where: str) -> dict[str, tuple[list[int], np.ndarray]]:
  """Source indices and labels of each split with a non-zero count."""
  quotas = [(split, per_class[split]) for split in SPLITS if per_class[split]]
  # bounds[k]: how many examples of a class the splits up to quotas[k] take.
  bounds = np.cumsum([count for _, count in quotas])
  wanted = bounds[-1]
  taken = np.zeros(len(class_names), np.int64)
  picks = {split: [] for split, _ in quotas}
  for start in range(0, len(source), _CHUNK):
    stop = min(start + _CHUNK, len(source))
    labels = decode.thread_map(lambda i: int(source[i]['label']), range(start, stop))
    for index, label in enumerate(labels, start):
      if not 0 <= label < len(class_names):  # e.g. -1 in unlabelled splits
        raise DataError(f'{where}: example {index} has label {label}, not a class '
                        f'index of {class_names}')
      if taken[label] < wanted:
        split = quotas[np.searchsorted(bounds, taken[label], side='right')][0]
        picks[split].append((index, label))
        taken[label] += 1
    if (taken == wanted).all():
      return {split: ([i for i, _ in pairs], np.array([l for _, l in pairs], np.int32))
              for split, pairs in picks.items()}
  short = {class_names[c]: int(taken[c]) for c in np.flatnonzero(taken < wanted)}
  raise DataError(f'{where} has too few examples for per_class={per_class}: '
                  f'each class needs {wanted}, but it has only {short}')


def load(config: ml_collections.ConfigDict,
         check: Callable[[tuple[str, ...], tuple[str, ...]], None]
         ) -> tuple[tuple[str, ...], dict[str, tuple[Split, SplitReport]]]:
  """Class names and the carved splits of TFDS dataset `config.name`;
  `check(class names, split names)` runs before anything is read."""
  builder = tfds.builder(config.name, data_dir=config.tfds_data_dir or None)
  features = builder.info.features
  if not ('image' in features and 'label' in features
          and isinstance(features['label'], tfds.features.ClassLabel)):
    raise DataError(f'TFDS dataset {config.name!r} has no image and class label '
                    f'features: {features}')
  class_names = tuple(features['label'].names)
  per_class = {split: int(config.per_class[split]) for split in SPLITS}
  if not per_class['train']:
    raise DataError(f'data.per_class.train is 0: the {config.name!r} dataset '
                    'would have no train split')
  check(class_names, tuple(split for split in SPLITS if per_class[split]))
  image_size = tuple(config.image_size)
  where = f'{config.name}:{builder.version} split {config.tfds_split!r}'

  # Opened and carved only when some split misses the cache.
  @functools.cache
  def carved():
    source = _source(builder, config)
    return source, _carve(source, class_names, per_class, where)

  def build(split: str) -> tuple[Split, SplitReport]:
    source, picks = carved()
    indices, labels = picks[split]
    files = [f'{config.name}/{config.tfds_split}[{i}]' for i in indices]
    return decode.decode_split(
        split, files, labels,
        lambda k: decode.decode_array(source[indices[k]]['image'], image_size,
                                      config.interpolation, files[k]),
        image_size, class_names, config.on_bad_image)

  def entry_key(split: str) -> str:
    return cache.key(dict(
        source='tfds', name=config.name, version=str(builder.version),
        tfds_split=config.tfds_split, per_class=per_class, split=split,
        class_names=class_names, image_size=image_size,
        interpolation=config.interpolation, on_bad_image=config.on_bad_image))

  entries = cache.root(config.cache_dir)
  return class_names, {
      split: cache.load_or_build(entries, entry_key(split), class_names,
                                 functools.partial(build, split))
      for split in SPLITS if per_class[split]}
