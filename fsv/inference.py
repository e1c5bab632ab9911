"""Inference: the one batched, jitted, mesh-aware way fsv applies a model.

Validation after every epoch, results.json, predictions.npz, the evaluation
report, bottleneck features, `Run.predict`, Grad-CAM (fsv/explain.py) and
`imagenet_top5` all run through `map_batches`: global batches of one fixed
size (the last one padded by repeating the last example, the padding
dropped), split over the mesh's devices, with a function that is jitted
once at module level so every call with the same model and batch shape
reuses one compilation (Flax modules compare by their fields).

Outputs are float32 numpy arrays on the host, whatever the model computes
in. Losses and accuracies are computed from the logits by the training
loss itself (`fsv.losses.loss_and_correct`), so an evaluation of the same images
gives the numbers the run reported.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from fsv import augment as augment_lib
from fsv import losses as losses_lib
from fsv import parallel
from fsv import progress


def map_batches(fn: Callable, variables: Any, inputs: Sequence[np.ndarray], batch_size: int,
                mesh: Optional[jax.sharding.Mesh] = None, description: str = '') -> Any:
  """`fn(variables, *rows)` over every row of `inputs`, in global batches on `mesh`.

  `fn` is a jitted function whose outputs (an array or a tree of arrays)
  have the batch as their first axis; the result holds the rows of all
  batches, as numpy, in input order. `batch_size` is rounded up to split
  evenly over the devices. `description` shows a progress bar.
  """
  mesh = parallel.make_mesh() if mesh is None else mesh
  num_rows = len(inputs[0])
  if not num_rows:
    raise ValueError('no inputs to apply the model to')
  batch_size = -(-batch_size // mesh.size) * mesh.size
  variables = parallel.put_state(mesh, variables)
  starts = range(0, num_rows, batch_size)
  if description:
    starts = progress.bar(starts, description, 'batch')
  chunks = []
  for start in starts:
    rows, real = parallel.padded_rows(start, batch_size, num_rows)
    outputs = fn(variables, *(parallel.shard_rows(mesh, array, rows) for array in inputs))
    chunks.append(jax.tree_util.tree_map(lambda o: parallel.to_host(o)[:real], outputs))
  return jax.tree_util.tree_map(lambda *parts: np.concatenate(parts), *chunks)


def outputs(model: nn.Module, variables, images, rescale: float,
             features_only: bool = False) -> jax.Array:
  """The model's float32 outputs of a batch, preprocessed as evaluation is."""
  inputs = augment_lib.preprocess(images, rescale)
  kwargs = {'features_only': True} if features_only else {}
  return model.apply(variables, inputs, **kwargs).astype(jnp.float32)


@functools.partial(jax.jit, static_argnames=('model', 'rescale', 'features_only'))
def _apply(variables, images, flip, *, model: nn.Module, rescale: float,
           features_only: bool):
  # `flip` is traced, not static: mirrored and plain images share one
  # compilation. Cached features (a head's inputs) are never mirrored.
  if images.ndim == 4:
    images = jnp.where(flip, images[:, :, ::-1], images)
  return outputs(model, variables, images, rescale, features_only)


def _to_probabilities(logits_: jax.Array) -> jax.Array:
  """Two classes share one sigmoid unit, p(class 1) = sigmoid(logit); more
  classes, a softmax."""
  if logits_.shape[-1] == 1:
    p = jax.nn.sigmoid(logits_[:, 0])
    return jnp.stack([1 - p, p], -1)
  return jax.nn.softmax(logits_, -1)


def serving_function(model: nn.Module, variables, rescale: float):
  """uint8 images (batch, H, W, 3) -> class probabilities (batch, classes), the
  variables baked in: what an exported model computes (fsv/export.py), the
  same functions as `logits` and `probabilities`."""
  return lambda images: _to_probabilities(outputs(model, variables, images, rescale))


def logits(model: nn.Module, variables, images: np.ndarray, batch_size: int,
           mesh: Optional[jax.sharding.Mesh] = None, rescale: float = 1.0,
           flip: bool = False, description: str = '') -> np.ndarray:
  """(n, outputs) float32 logits of `images` (uint8 pixels, or cached features
  for a head), preprocessed as evaluation batches are: `rescale`d, and
  mirrored left-right if `flip` (test-time augmentation)."""
  apply = functools.partial(_apply, model=model, rescale=float(rescale), features_only=False)
  return map_batches(lambda variables, batch: apply(variables, batch, flip),
                     variables, (images,), batch_size, mesh, description)


def features(model: nn.Module, variables, images: np.ndarray, batch_size: int,
             mesh: Optional[jax.sharding.Mesh] = None, description: str = '') -> np.ndarray:
  """The base's features (float32) of uint8 images: what the head classifies."""
  apply = functools.partial(_apply, model=model, rescale=1.0, features_only=True)
  return map_batches(lambda variables, batch: apply(variables, batch, False),
                     variables, (images,), batch_size, mesh, description)


def probabilities(logits_: np.ndarray) -> np.ndarray:
  """(n, num_classes) class probabilities of `logits` (see `_to_probabilities`)."""
  return np.asarray(_to_probabilities(jnp.asarray(logits_, jnp.float32)))


def losses(logits_: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Per-example training loss and 0/1 correctness, as float32 numpy arrays."""
  loss, correct = losses_lib.loss_and_correct(jnp.asarray(logits_), jnp.asarray(labels))
  return np.asarray(loss), np.asarray(correct)


def loss_and_accuracy(logits_: np.ndarray, labels: np.ndarray) -> dict:
  """{'loss', 'accuracy'}: means over every example."""
  loss, correct = losses(logits_, labels)
  return {'loss': float(np.mean(loss, dtype=np.float64)),
          'accuracy': float(np.mean(correct, dtype=np.float64))}
