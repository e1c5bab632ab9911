"""`randaugment` and `trivialaugment`: torchvision's op sets and magnitudes.

Both pick, per image, ops from torchvision's list (identity, shear x/y,
translate x/y, rotate, brightness, colour (saturation), contrast, sharpness,
posterize, solarize, autocontrast, equalize) with torchvision's magnitude
tables (`RandAugment._augmentation_space`, `TrivialAugmentWide`'s wide
space) and a random sign for the signed ones. RandAugment applies
`num_ops` ops at the fixed bin `magnitude` of `num_magnitude_bins`;
TrivialAugment one op at a bin drawn per image.

Differences from torchvision, on purpose: the geometric ops use fsv's
bilinear warp (torchvision's default is nearest), filling with 0 as
torchvision's default `fill`; colour ops are computed on float pixels
(fsv/augment/colour.py). Equalize is exact on the integer part of the pixels.

In a jitted batch every image may pick a different op, so a layer computes
one warp (the identity matrix for the images whose op is not geometric,
which the warp reproduces exactly) and every colour op for the whole batch,
and selects per image: cheap next to a forward and backward pass.

As in torchvision, `magnitude=0` is not the identity (autocontrast and
equalize have no magnitude, and solarize's bin 0 inverts pure white);
`randaugment(num_ops=0)` is.
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from fsv.augment import base
from fsv.augment import colour
from fsv.augment import keras
from fsv.augment.base import arg

OPS = ('identity', 'shear_x', 'shear_y', 'translate_x', 'translate_y', 'rotate',
       'brightness', 'colour', 'contrast', 'sharpness', 'posterize', 'solarize',
       'autocontrast', 'equalize')
SIGNED = ('shear_x', 'shear_y', 'translate_x', 'translate_y', 'rotate',
          'brightness', 'colour', 'contrast', 'sharpness')
_FILL = keras.AugmentConfig(fill_mode='constant', cval=0.0)


def magnitudes(space: str, num_bins: int, height: int, width: int) -> np.ndarray:
  """(len(OPS), num_bins) magnitudes of torchvision's 'randaugment' or 'wide' space."""
  def line(high, low=0.0):
    return np.linspace(low, high, num_bins)
  bins = np.arange(num_bins)
  if space == 'randaugment':
    table = dict(shear_x=line(0.3), shear_y=line(0.3),
                 translate_x=line(150.0 / 331.0 * width),
                 translate_y=line(150.0 / 331.0 * height), rotate=line(30.0),
                 brightness=line(0.9), colour=line(0.9), contrast=line(0.9),
                 sharpness=line(0.9),
                 posterize=8 - np.round(bins / ((num_bins - 1) / 4)))
  else:
    table = dict(shear_x=line(0.99), shear_y=line(0.99), translate_x=line(32.0),
                 translate_y=line(32.0), rotate=line(135.0), brightness=line(0.99),
                 colour=line(0.99), contrast=line(0.99), sharpness=line(0.99),
                 posterize=8 - np.round(bins / ((num_bins - 1) / 6)))
  table['solarize'] = line(0.0, 255.0)
  return np.stack([table.get(op, np.zeros(num_bins)) for op in OPS]).astype(np.float32)


def _affine(op: jnp.ndarray, m: jnp.ndarray, height: int, width: int):
  """Per-image (A, b) of `keras._warp` for the geometric ops (identity otherwise).

  Shears are about the top-left corner and translations whole pixels
  (torchvision truncates the magnitude), as torchvision's `_apply_op`.
  """
  n = op.shape[0]
  ones = jnp.ones(n)
  is_op = {name: op == OPS.index(name) for name in OPS}
  shear_x = jnp.where(is_op['shear_x'], m, 0.0)
  shear_y = jnp.where(is_op['shear_y'], m, 0.0)
  theta = jnp.deg2rad(jnp.where(is_op['rotate'], m, 0.0))
  cos, sin = jnp.cos(theta), jnp.sin(theta)
  rotation = jnp.stack([jnp.stack([cos, -sin], -1), jnp.stack([sin, cos], -1)], -2)
  shear = jnp.stack([jnp.stack([ones, shear_x], -1), jnp.stack([shear_y, ones], -1)], -2)
  a = jnp.where(is_op['rotate'][:, None, None], rotation, shear)
  # About the corner: b = (A - I)(centre - corner), corner at pixel (-0.5, -0.5).
  b_shear = jnp.stack([shear_x * height / 2, shear_y * width / 2], -1)
  b_shift = -jnp.stack([jnp.where(is_op['translate_x'], jnp.trunc(m), 0.0),
                        jnp.where(is_op['translate_y'], jnp.trunc(m), 0.0)], -1)
  return a, b_shear + b_shift


def apply_ops(images: jnp.ndarray, op: jnp.ndarray, m: jnp.ndarray) -> jnp.ndarray:
  """Applies op `op[i]` (an index into OPS) with signed magnitude `m[i]` to image i."""
  images = jnp.asarray(images, jnp.float32)
  _, height, width, _ = images.shape
  a, b = _affine(op, m, height, width)
  out = keras._warp(images, a, b, _FILL)
  colour_ops = dict(
      brightness=lambda x: colour.brightness(x, 1.0 + m),
      colour=lambda x: colour.saturation(x, 1.0 + m),
      contrast=lambda x: colour.contrast(x, 1.0 + m),
      sharpness=lambda x: colour.sharpness(x, 1.0 + m),
      posterize=lambda x: colour.posterize(x, m),
      solarize=lambda x: colour.solarize(x, m),
      autocontrast=colour.autocontrast,
      equalize=colour.equalize)
  for name, fn in colour_ops.items():
    out = jnp.where(base.per_image(op == OPS.index(name)), fn(images), out)
  return out


def _layer(images, key, table, magnitude_bin):
  """One op per image; `magnitude_bin` None draws a bin per image (TrivialAugment).

  The op, the bin and the sign come from one (n, 3) uniform draw: every
  separate draw is another random-bits computation for XLA to compile."""
  n = images.shape[0]
  u = jax.random.uniform(key, (n, 3))
  op = jnp.minimum(jnp.floor(u[:, 0] * len(OPS)), len(OPS) - 1).astype(jnp.int32)
  if magnitude_bin is None:
    bins = jnp.minimum(jnp.floor(u[:, 1] * table.shape[1]), table.shape[1] - 1)
    bins = bins.astype(jnp.int32)
  else:
    bins = jnp.full((n,), magnitude_bin)
  m = jnp.asarray(table)[op, bins]
  signed = jnp.isin(op, jnp.array([OPS.index(name) for name in SIGNED]))
  negative = signed & (u[:, 2] < 0.5)
  return apply_ops(images, op, jnp.where(negative, -m, m))


@dataclasses.dataclass(frozen=True)
class RandAugment(base.ImageOp):
  """torchvision's `RandAugment(num_ops, magnitude, num_magnitude_bins)`."""
  name: ClassVar[str] = 'randaugment'
  num_ops: int = arg(2, 0, 16)
  magnitude: int = arg(9, 0)
  num_magnitude_bins: int = arg(31, 2)

  def check(self):
    if self.magnitude >= self.num_magnitude_bins:
      raise self.error('magnitude', self.magnitude,
                       f'must be < num_magnitude_bins={self.num_magnitude_bins}')

  @property
  def is_identity(self) -> bool:
    return self.num_ops == 0

  def __call__(self, images, key):
    _, height, width, _ = images.shape
    table = magnitudes('randaugment', self.num_magnitude_bins, height, width)
    # A loop, not num_ops copies of the layer: one layer to compile.
    return jax.lax.fori_loop(
        0, self.num_ops,
        lambda i, x: _layer(x, jax.random.fold_in(key, i), table, self.magnitude),
        jnp.asarray(images, jnp.float32))


@dataclasses.dataclass(frozen=True)
class TrivialAugment(base.ImageOp):
  """torchvision's `TrivialAugmentWide(num_magnitude_bins)`: one op, a random bin."""
  name: ClassVar[str] = 'trivialaugment'
  num_magnitude_bins: int = arg(31, 2)

  def __call__(self, images, key):
    _, height, width, _ = images.shape
    table = magnitudes('wide', self.num_magnitude_bins, height, width)
    return _layer(jnp.asarray(images, jnp.float32), key, table, None)
