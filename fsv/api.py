"""Small conveniences for notebooks that the entry points do not need."""
from __future__ import annotations

import importlib.util

import jax
import jax.numpy as jnp
import numpy as np

from fsv import augment as augment_lib


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
  config = result.config
  aug = augment_lib.AugmentConfig.from_config(config.augment)
  apply = jax.jit(lambda variables, x: result.model.apply(
      variables, augment_lib.preprocess(x, aug)).astype(jnp.float32))
  outputs = []
  for start in range(0, len(images), batch_size):
    logits = apply(result.variables(), jnp.asarray(images[start:start + batch_size]))
    if logits.shape[-1] == 1:
      p = jax.nn.sigmoid(logits[:, 0])
      logits = jnp.stack([1 - p, p], -1)
    else:
      logits = jax.nn.softmax(logits, -1)
    outputs.append(np.asarray(logits))
  return np.concatenate(outputs)
