"""The rows of the benchmark and what both sides of a row share.

Light on purpose (numpy only): the coordinator, the fsv worker and the Keras
workers all import it, and none of them should pay for the others' imports.
"""
from __future__ import annotations

import dataclasses
import os
import string
from typing import Callable

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository


@dataclasses.dataclass(frozen=True)
class Row:
  id: str     # the row number; a letter tells variants of one row apart
  name: str
  steps: int  # batches one repetition runs by default; 0: one epoch of the data folder


ROWS = (
    Row('1', 'convnet_train_step', 20),
    Row('2a', 'convnet_train_step_augmented_imagedatagenerator', 20),
    Row('2b', 'convnet_train_step_augmented_layers', 20),
    Row('3', 'epoch_from_jpeg', 0),
    Row('4', 'vgg16_forward', 4),
    Row('5', 'vgg16_finetune_step', 2),
)

# The book's augmentation in ImageDataGenerator's terms (shear in degrees),
# which are also fsv's `config.augment` keys: one definition for every side.
AUGMENTATION = dict(rotation_range=40.0, width_shift_range=0.2, height_shift_range=0.2,
                    shear_range=0.2, zoom_range=0.2, horizontal_flip=True,
                    fill_mode='nearest')


@dataclasses.dataclass
class Task:
  """One side set up for one row. `run()` does one repetition, returns when its
  results exist, and returns how many images it processed; `prepare()` runs
  before each repetition, untimed."""
  run: Callable[[], int]
  info: dict
  prepare: Callable[[], None] = lambda: None


def select(spec: list[str]) -> list[Row]:
  """Rows by id; a bare number also selects its lettered variants ('2': 2a, 2b)."""
  number = lambda row: row.id.rstrip(string.ascii_lowercase)
  chosen = [r for r in ROWS if r.id in spec or number(r) in spec]
  known = {r.id for r in ROWS} | {number(r) for r in ROWS}
  unknown = sorted(set(spec) - known)
  if unknown:
    raise ValueError(f'unknown rows {unknown}; rows are {[r.id for r in ROWS]}')
  return chosen


def random_images(count: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """`count` random uint8 RGB images (size x size) and 0/1 labels, the same on every side."""
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, (count, size, size, 3), dtype=np.uint8)
  return images, rng.integers(0, 2, count).astype(np.int32)
