"""Bottleneck features: the frozen base's outputs, computed once and cached.

The cache key covers everything the features depend on and nothing else:
the base's parameters and BatchNorm statistics (their bytes), the images
(their bytes, so size and content), and the computation from images to
features (its jaxpr: architecture, preprocessing, the computation dtype, so
bfloat16 features differ from float32 ones). The head's fields (pooling,
units, dropout) do not enter it, so runs that differ only in their head, an
ablation's members, share the features; a rerun with the same weights and
data reads them back instead of running the base again.
"""
from __future__ import annotations

import hashlib

from absl import logging
import flax.linen as nn
import jax
import numpy as np

from fsv import cache_dir as cache_dir_lib
from fsv import files
from fsv import inference


def digest(*arrays_or_trees) -> str:
  """sha256 over the shapes, dtypes and bytes of every array in the arguments."""
  h = hashlib.sha256()
  for tree in arrays_or_trees:
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
      leaf = np.asarray(leaf)
      h.update(f'{jax.tree_util.keystr(path)}:{leaf.shape}:{leaf.dtype}'.encode())
      h.update(np.ascontiguousarray(leaf).tobytes())
  return h.hexdigest()


def _computation(model: nn.Module, base_variables, images: np.ndarray) -> np.ndarray:
  """The jaxpr of the features of one image, as bytes: traced, not run, and
  only on the base's variables, so nothing of the head can enter it."""
  abstract = lambda x: jax.ShapeDtypeStruct(np.shape(x), jax.numpy.result_type(x))
  jaxpr = jax.make_jaxpr(
      lambda variables, image: inference.outputs(model, variables, image, 1.0,
                                                 features_only=True))(
      jax.tree_util.tree_map(abstract, base_variables),
      jax.ShapeDtypeStruct((1, *images.shape[1:]), images.dtype))
  return np.frombuffer(str(jaxpr).encode(), np.uint8)


def cached(model: nn.Module, variables, base_variables, images: np.ndarray,
           batch_size: int, mesh: jax.sharding.Mesh, cache_dir: str,
           description: str) -> np.ndarray:
  """The base's features (float32) of uint8 `images`, from `inference.features`,
  read from / written to `<cache>/features/<key>.npy`.

  `base_variables` are the parts of `variables` the features depend on.
  """
  # BatchNorm statistics enter the key only where there are some, so that the
  # features of models without them keep the keys they had before.
  batch_stats = base_variables.get('batch_stats') or {}
  key = digest({'computation': _computation(model, base_variables, images)},
               base_variables['params'], images, *([batch_stats] if batch_stats else []))
  folder = cache_dir_lib.cache_root(cache_dir) / 'features'
  path = folder / f'{key}.npy'
  if path.exists():
    try:
      features = files.read_npy(path)
    except (OSError, ValueError, EOFError) as e:
      logging.warning('%s: cached features %s are damaged (%s); computing them again',
                      description, path, e)
    else:
      if features.shape[0] == len(images) and features.dtype == np.float32:
        logging.info('%s: bottleneck features from cache %s', description, path)
        return features
      logging.warning('%s: cached features %s have shape %s, not %d rows of float32; '
                      'computing them again', description, path, features.shape, len(images))
  features = inference.features(model, variables, images, batch_size, mesh, description)
  try:
    files.write_atomically(path, lambda f: np.save(f, features, allow_pickle=False))
    logging.info('%s: bottleneck features %s cached in %s', description, features.shape, path)
  except OSError as e:
    logging.warning('%s: cannot write the features cache %s (%s); the next run will compute '
                    'them again', description, path, e)
  return features
