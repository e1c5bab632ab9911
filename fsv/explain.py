"""Grad-CAM (Selvaraju et al. 2017): where in an image the model found its class.

For a class c and the activations A (h, w, k) of the layer the backbone
declares (`models.gradcam_layer`, a `layers.Tap`), the heatmap is
ReLU(sum_k alpha_k A_k) with alpha_k the spatial mean of dS_c/dA_k, scaled
to [0, 1] per image and resized to the input (bilinear), as in DLwP's
chapter on visualising what convnets learn. S_c is the class's logit;
where two classes share one sigmoid unit, S is the logit for class 1 and
minus the logit for class 0.

The gradient with respect to A is taken by adding a zero `delta` to the
Tap's output (`nn.intercept_methods`) and differentiating with respect to
it, so no model needs a Grad-CAM-specific code path. It runs in batches
through `inference.map_batches`, like every other use of a model.
"""
from __future__ import annotations

import dataclasses
import functools
import os
from typing import Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from fsv import augment as augment_lib
from fsv import inference
from fsv import plots
from fsv.models.layers import Tap


def _with_tap(layer: str, delta: Optional[jax.Array], captured: dict):
  """An interceptor that records the named Tap's output (and adds `delta` to it)."""
  def interceptor(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    if isinstance(context.module, Tap) and context.module.name == layer:
      captured['activations'] = out
      if delta is not None:
        out = out + delta.astype(out.dtype)
    return out
  return interceptor


@functools.partial(jax.jit, static_argnames=('model', 'layer', 'rescale'))
def _gradcam_batch(variables, images, classes, *, model: nn.Module, layer: str,
                   rescale: float):
  inputs = augment_lib.preprocess(images, rescale)

  def logits_and_activations(delta):
    captured = {}
    with nn.intercept_methods(_with_tap(layer, delta, captured)):
      logits = model.apply(variables, inputs).astype(jnp.float32)
    if 'activations' not in captured:
      raise ValueError(f'{type(model).__name__} has no Grad-CAM layer {layer!r}')
    return logits, captured['activations'].astype(jnp.float32)

  logits, activations = logits_and_activations(None)
  if logits.shape[-1] == 1:
    predicted = (logits[:, 0] > 0).astype(jnp.int32)
  else:
    predicted = jnp.argmax(logits, -1).astype(jnp.int32)
  classes = jnp.where(classes < 0, predicted, classes)

  def score(delta):
    logits, activations = logits_and_activations(delta)
    if logits.shape[-1] == 1:
      chosen = jnp.where(classes == 1, logits[:, 0], -logits[:, 0])
    else:
      chosen = jnp.take_along_axis(logits, classes[:, None], axis=1)[:, 0]
    # Images are independent (BatchNorm runs on its statistics), so the
    # gradient of the sum is each image's own.
    return chosen.sum(), (logits, activations)

  gradients, (logits, activations) = jax.grad(score, has_aux=True)(
      jnp.zeros(activations.shape, jnp.float32))
  weights = gradients.mean(axis=(1, 2), keepdims=True)                 # (n, 1, 1, k)
  cam = jax.nn.relu((weights * activations).sum(-1))                  # (n, h, w)
  cam = cam / jnp.maximum(cam.max(axis=(1, 2), keepdims=True), 1e-12)
  heatmaps = jax.image.resize(cam, (cam.shape[0], *images.shape[1:3]), 'bilinear')
  return jnp.clip(heatmaps, 0, 1), logits, classes


def gradcam(model: nn.Module, variables, images: np.ndarray, classes: np.ndarray,
            layer: str, rescale: float, batch_size: int,
            mesh: Optional[jax.sharding.Mesh] = None
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(heatmaps (n, H, W) in [0, 1], logits (n, outputs), explained classes (n,))
  of uint8 `images`, for the class index of each image in `classes` (-1: the
  class the model predicts)."""
  fn = functools.partial(_gradcam_batch, model=model, layer=layer, rescale=float(rescale))
  return inference.map_batches(fn, variables, (images, np.asarray(classes, np.int32)),
                               batch_size, mesh)


@dataclasses.dataclass(frozen=True, eq=False)
class Explanation:
  """Grad-CAM heatmaps of a batch of images; `write` saves a PNG per image."""
  names: tuple[str, ...]
  images: np.ndarray          # (n, H, W, 3) uint8, as the model saw them
  heatmaps: np.ndarray        # (n, H, W) in [0, 1]
  probabilities: np.ndarray   # (n, num_classes)
  explained: np.ndarray       # (n,) the class each heatmap is for
  class_names: tuple[str, ...]
  layer: str

  def title(self, i: int) -> str:
    predicted = int(self.probabilities[i].argmax())
    return (f'{os.path.basename(self.names[i])}: predicted {self.class_names[predicted]} '
            f'({self.probabilities[i, predicted]:.3f}); Grad-CAM of '
            f'{self.class_names[self.explained[i]]} at {self.layer}')

  def figure(self, i: int):
    return plots.gradcam(self.images[i], self.heatmaps[i], self.title(i))

  def write(self, folder: str) -> list[str]:
    """One PNG per image (input, heatmap, overlay), named after the image."""
    paths = []
    for i, name in enumerate(self.names):
      stem = os.path.splitext(os.path.basename(name))[0] or f'image{i}'
      path = os.path.join(folder, f'{i:04d}_{stem}_gradcam.png')
      plots.save(self.figure(i), path)
      paths.append(path)
    return paths


def explanation(model: nn.Module, variables, names: Sequence[str], images: np.ndarray,
                class_names: Sequence[str], layer: str, rescale: float, batch_size: int,
                class_index: Optional[int] = None,
                mesh: Optional[jax.sharding.Mesh] = None) -> Explanation:
  """Grad-CAM of each image for `class_index`, or for its predicted class."""
  classes = np.full(len(images), -1 if class_index is None else class_index, np.int32)
  heatmaps, logits, explained = gradcam(model, variables, images, classes, layer, rescale,
                                        batch_size, mesh)
  return Explanation(names=tuple(names), images=images, heatmaps=heatmaps,
                     probabilities=inference.probabilities(logits), explained=explained,
                     class_names=tuple(class_names), layer=layer)
