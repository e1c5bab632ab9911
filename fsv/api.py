"""Small conveniences for notebooks that the entry points do not need."""
from __future__ import annotations

import importlib.util

import numpy as np

from fsv import augment as augment_lib
from fsv import train


def load_config(path: str):
  """The ConfigDict of a config file (its `get_config()`), to change and `fit`."""
  spec = importlib.util.spec_from_file_location('fsv_config_file', path)
  if spec is None:
    raise FileNotFoundError(f'no config file at {path!r}')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def predict(result, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
  """Class probabilities (n, num_classes) for uint8 images already sized like
  the training data, preprocessed exactly as evaluation batches are."""
  return train.probabilities(result.model, result.variables(),
                             augment_lib.AugmentConfig.from_config(result.config.augment),
                             images, batch_size)
