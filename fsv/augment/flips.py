"""`flip_lr` and `flip_ud`: mirror each image with probability `p`.

The same draws as the `keras` op's `horizontal_flip`/`vertical_flip`, as
separate ops so that a pipeline without the affine warp can still flip
(e.g. 'flip_lr|randaugment'). p=0 is the identity.
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax.numpy as jnp

from fsv.augment import base
from fsv.augment import keras
from fsv.augment.base import arg


@dataclasses.dataclass(frozen=True)
class FlipLR(base.ImageOp):
  """Left-right mirror (what test-time augmentation averages over)."""
  name: ClassVar[str] = 'flip_lr'
  p: float = arg(0.5, 0, 1)

  @property
  def is_identity(self) -> bool:
    return self.p == 0

  def __call__(self, images, key):
    return keras._random_flip(key, jnp.asarray(images, jnp.float32), axis=2, p=self.p)


@dataclasses.dataclass(frozen=True)
class FlipUD(base.ImageOp):
  """Upside-down mirror (aerial, microscopy: images without an up)."""
  name: ClassVar[str] = 'flip_ud'
  p: float = arg(0.5, 0, 1)

  @property
  def is_identity(self) -> bool:
    return self.p == 0

  def __call__(self, images, key):
    return keras._random_flip(key, jnp.asarray(images, jnp.float32), axis=1, p=self.p)
