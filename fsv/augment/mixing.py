"""`mixup` and `cutmix`: label-aware ops on a whole batch, after every image op.

Both pair example i with example n-1-i (the batch reversed, as timm's
'batch' mode flips it): a partner that needs no extra random draw and
lies in the same global batch however it is split over devices, since the
step augments the global batch before it is sharded into micro-batches.
One lambda per batch is drawn from Beta(alpha, alpha). Mixup blends whole
images, lambda * x_i + (1 - lambda) * x_partner; CutMix pastes one box of
the partner (the same box for the whole batch, timm's `rand_bbox`: side
sqrt(1 - lambda) of the image's, centre uniform, clipped at the borders)
and then sets lambda to the fraction of the image left unpasted, so the
target weights are the pixels' real shares. Targets are mixed with the
same lambda: lambda * onehot(y_i) + (1 - lambda) * onehot(y_partner).
With both ops listed, each batch uses one of them, chosen with
probability 0.5 (timm's `switch_prob`). alpha=0 turns an op off exactly.

With a batch of odd size the middle example is its own partner, and stays
as it was.

Train accuracy under mixed labels is the fraction of examples whose
prediction (argmax) agrees with the dominant, largest-weight label of the
mixed target (`dominant_label`; a tie, lambda = 0.5 exactly, goes to the
lower class index). That is the label most of the image shows, so it
stays comparable to the unmixed accuracy, though lower than it.
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar, Sequence

import jax
import jax.numpy as jnp

from fsv.augment import base
from fsv.augment.base import arg


class MixOp(base.Op):
  mixes_labels: ClassVar[bool] = True

  @property
  def is_identity(self) -> bool:
    return self.alpha == 0

  def lam(self, key: jax.Array) -> jnp.ndarray:
    return jax.random.beta(key, self.alpha, self.alpha).astype(jnp.float32)


def _mix(a: jnp.ndarray, lam: jnp.ndarray) -> jnp.ndarray:
  return lam * a + (1 - lam) * a[::-1]


@dataclasses.dataclass(frozen=True)
class Mixup(MixOp):
  """Blends each image and its target with its partner's (Zhang et al., 2018)."""
  name: ClassVar[str] = 'mixup'
  alpha: float = arg(0.2, 0)

  def __call__(self, images, targets, key):
    lam = self.lam(key)
    return _mix(images, lam), _mix(targets, lam)


def box(key: jax.Array, lam: jnp.ndarray, height: int, width: int):
  """timm's `rand_bbox`: (top, bottom, left, right) of the pasted box."""
  ratio = jnp.sqrt(1 - lam)
  cut_h = jnp.floor(height * ratio).astype(jnp.int32)
  cut_w = jnp.floor(width * ratio).astype(jnp.int32)
  u = jax.random.uniform(key, (2,))
  cy = jnp.minimum(jnp.floor(u[0] * height), height - 1).astype(jnp.int32)
  cx = jnp.minimum(jnp.floor(u[1] * width), width - 1).astype(jnp.int32)
  return (jnp.clip(cy - cut_h // 2, 0, height), jnp.clip(cy + cut_h // 2, 0, height),
          jnp.clip(cx - cut_w // 2, 0, width), jnp.clip(cx + cut_w // 2, 0, width))


@dataclasses.dataclass(frozen=True)
class CutMix(MixOp):
  """Pastes a box of the partner into each image (Yun et al., 2019)."""
  name: ClassVar[str] = 'cutmix'
  alpha: float = arg(1.0, 0)

  def __call__(self, images, targets, key):
    lam_key, box_key = jax.random.split(key)
    _, height, width, _ = images.shape
    top, bottom, left, right = box(box_key, self.lam(lam_key), height, width)
    rows = jnp.arange(height)[:, None]
    cols = jnp.arange(width)[None, :]
    inside = (rows >= top) & (rows < bottom) & (cols >= left) & (cols < right)
    images = jnp.where(inside[None, :, :, None], images[::-1], images)
    lam = 1 - ((bottom - top) * (right - left)).astype(jnp.float32) / (height * width)
    return images, _mix(targets, lam)


def mix(ops: Sequence[MixOp], images: jnp.ndarray, targets: jnp.ndarray,
        key: jax.Array):
  """Applies the mixing op, or one of two chosen with probability 0.5 per batch."""
  ops = [op for op in ops if not op.is_identity]
  if not ops:
    return images, targets
  if len(ops) == 1:
    return ops[0](images, targets, key)
  switch_key, *keys = jax.random.split(key, len(ops) + 1)
  results = [op(images, targets, k) for op, k in zip(ops, keys)]
  second = jax.random.uniform(switch_key) < 0.5
  return jax.tree_util.tree_map(lambda a, b: jnp.where(second, b, a), *results)


def dominant_label(targets: jnp.ndarray) -> jnp.ndarray:
  """(n,) int32: the largest-weight class of each (mixed) target; train accuracy
  counts a prediction right when it agrees with this label."""
  return jnp.argmax(targets, axis=-1).astype(jnp.int32)
