"""Bottleneck features: the frozen base's outputs, computed once and cached.

The cache key covers everything the features depend on: the base's
parameters and BatchNorm statistics (their bytes), the images (their bytes,
so size and content), and the model (its fields, the computation dtype among
them: bfloat16 features differ from float32 ones); a rerun with the same
weights and data reads them back instead of
running the base again.
"""
from __future__ import annotations

import functools
import hashlib
import os
import tempfile

from absl import logging
import flax.linen as nn
import jax
import numpy as np
import tqdm

from fsv import cache_dir as cache_dir_lib
from fsv import parallel


def digest(*arrays_or_trees) -> str:
  """sha256 over the shapes, dtypes and bytes of every array in the arguments."""
  h = hashlib.sha256()
  for tree in arrays_or_trees:
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
      leaf = np.asarray(leaf)
      h.update(f'{jax.tree_util.keystr(path)}:{leaf.shape}:{leaf.dtype}'.encode())
      h.update(np.ascontiguousarray(leaf).tobytes())
  return h.hexdigest()


@functools.partial(jax.jit, static_argnums=0)
def features_of_batch(model: nn.Module, variables, images) -> jax.Array:
  """The base's features of a uint8 batch, BatchNorm in inference mode, as
  float32 whatever the model computes in (the head casts them back); compiled
  once per model and shape (modules compare by their fields), so every split
  reuses one compilation."""
  return model.apply(variables, images.astype(np.float32),
                     features_only=True).astype(np.float32)


def extract(model: nn.Module, variables, images: np.ndarray, batch_size: int,
            mesh: jax.sharding.Mesh, description: str = 'features') -> np.ndarray:
  """The base's features (float32) of uint8 images, in global batches on `mesh`."""
  variables = parallel.put_state(mesh, variables)
  chunks = []
  for start in tqdm.trange(0, len(images), batch_size, desc=description, leave=False):
    rows, real = parallel.padded_rows(start, batch_size, len(images))
    batch = features_of_batch(model, variables, parallel.shard_rows(mesh, images, rows))
    chunks.append(parallel.to_host(batch)[:real])
  return np.concatenate(chunks)


def cached(model: nn.Module, variables, base_variables, images: np.ndarray,
           batch_size: int, mesh: jax.sharding.Mesh, cache_dir: str,
           description: str) -> np.ndarray:
  """`extract`, read from / written to `<cache>/features/<key>.npy`.

  `base_variables` are the parts of `variables` the features depend on.
  """
  # BatchNorm statistics enter the key only where there are some, so that the
  # features of models without them keep the keys they had before.
  batch_stats = base_variables.get('batch_stats') or {}
  key = digest({'model': np.frombuffer(repr(model).encode(), np.uint8)},
               base_variables['params'], images, *([batch_stats] if batch_stats else []))
  folder = cache_dir_lib.cache_root(cache_dir) / 'features'
  path = folder / f'{key}.npy'
  if path.exists():
    logging.info('%s: bottleneck features from cache %s', description, path)
    return np.load(path, allow_pickle=False)
  features = extract(model, variables, images, batch_size, mesh, description)
  folder.mkdir(parents=True, exist_ok=True)
  with tempfile.NamedTemporaryFile(dir=folder, suffix='.tmp', delete=False) as f:
    np.save(f, features, allow_pickle=False)
  os.replace(f.name, path)  # complete or absent, never half written
  logging.info('%s: bottleneck features %s cached in %s', description,
               features.shape, path)
  return features
