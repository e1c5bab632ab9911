"""Shared fixtures, and one XLA compilation cache for the whole test session."""
import atexit
import os
import pathlib
import shutil
import tempfile
from typing import Mapping

# The tests compile the same small programs again and again (the steps of
# every tiny run, in many files): XLA's persistent compilation cache, one per
# session and shared by the xdist workers (which inherit this environment)
# and the subprocesses they start, compiles each of them once.
if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
  os.environ['JAX_COMPILATION_CACHE_DIR'] = tempfile.mkdtemp(prefix='fsv-tests-xla-')
  atexit.register(shutil.rmtree, os.environ['JAX_COMPILATION_CACHE_DIR'], ignore_errors=True)
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')

import jax  # noqa: E402  after the environment it reads
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
import pytest  # noqa: E402

from fsv.data.decode import Dataset, Split, SplitReport  # noqa: E402

jax.config.update('jax_compilation_cache_dir', os.environ['JAX_COMPILATION_CACHE_DIR'])
jax.config.update('jax_persistent_cache_min_compile_time_secs',
                  float(os.environ['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS']))

# Solid colour of the class at each index of the sorted class names, so a
# label can be checked from the pixels.
IMAGE_FOLDER_COLOURS = np.array(
    [(220, 40, 40), (40, 200, 60), (50, 60, 210), (240, 220, 30)], np.uint8)


@pytest.fixture
def image_folder_colours() -> np.ndarray:
  """(classes, 3) uint8: the colour `make_image_folder` paints each class."""
  return IMAGE_FOLDER_COLOURS


@pytest.fixture
def make_image_folder(tmp_path):
  """Writes ROOT/<split>/<class>/<class>.<i>.png, 20x24 (HxW) solid colours.

  Called as make_image_folder({'train': {'cats': 3, 'dogs': 2}, ...},
  name='data'); returns ROOT. A class is painted
  IMAGE_FOLDER_COLOURS[its index among all the layout's class names, sorted].
  """
  def make(layout: Mapping[str, Mapping[str, int]], name: str = 'data') -> pathlib.Path:
    root = tmp_path / name
    names = sorted({c for classes in layout.values() for c in classes})
    for split, classes in layout.items():
      for class_name, count in classes.items():
        folder = root / split / class_name
        folder.mkdir(parents=True)
        colour = tuple(int(v) for v in IMAGE_FOLDER_COLOURS[names.index(class_name)])
        for i in range(count):
          Image.new('RGB', (24, 20), colour).save(folder / f'{class_name}.{i}.png')
    return root

  return make


@pytest.fixture(scope='session')
def two_class_dataset():
  """Called as two_class_dataset(size, train=8, held_out=3): a Dataset of
  'cats' (random dark pixels) and 'dogs' (the same, plus red), `train` and
  `held_out` (validation, test) images per class: learnable from features."""
  return _two_class_dataset


def _two_class_dataset(size: int, train: int, held_out: int) -> Dataset:
  rng = np.random.default_rng(0)

  def split(n):
    labels = np.repeat([0, 1], n).astype(np.int32)
    images = rng.integers(0, 80, (len(labels), size, size, 3)).astype(np.uint8)
    images[labels == 1, :, :, 0] += 170
    return Split(images=images, labels=labels, files=tuple(map(str, range(len(labels)))))

  splits = {'train': split(train), 'validation': split(held_out), 'test': split(held_out)}
  return Dataset(class_names=('cats', 'dogs'), splits=splits,
                 report={k: SplitReport(len(v.labels), (), 0) for k, v in splits.items()})


def pretrained_backbone_config(name: str, size: int, cache_dir: str):
  """`name`'s config at `size`x`size` with random weights (a tiny head for VGG),
  `data.dir` unused: for runs on a dataset passed in."""
  import fsv
  config = fsv.base_config(name)
  config.data.dir = 'unused'
  config.data.image_size = (size, size)
  config.model.weights = ''
  config.model.cache_dir = cache_dir
  if name.startswith('vgg'):
    config.model.head_units = 8
  return config
