"""The `keras` op: Keras `ImageDataGenerator.random_transform`, on device.

For each image of a batch, in Keras's order: rotation in
[-rotation_range, rotation_range] degrees, shifts of up to
width/height_shift_range times the image size, shear in
[-shear_range, shear_range] degrees, independent x/y zoom in [1-z, 1+z]; then
a channel shift, optional flips, then a brightness factor. The affine map is
composed as Keras composes it (rotation @ shift @ shear @ zoom about the
image centre) and sampled with bilinear interpolation (Keras's
interpolation_order=1). Outside the image, `fill_mode` decides: 'nearest'
repeats the edge, 'reflect' mirrors (d c b a | a b c d | d c b a), 'wrap'
tiles, 'constant' fills with `cval`. Finally pixels are multiplied by
`rescale` (also applied to evaluation batches, by `preprocess`, so train and
eval see the same scale).

`channel_shift_range` and `brightness_range` copy Keras to the bit, including
its quirks, because the point of this op is that a Keras recipe ported here
trains on the same distribution of images: the channel shift adds one
intensity to every channel and clips to the image's own min and max (not to
0..255), and brightness goes through an 8-bit PIL image, so it truncates
pixels to integers before and after the factor (see
`apply_brightness_shift`).

Everything is a pure function of (images, key, config): jit-able, no state.
With all ranges 0, no flips, no channel shift and no brightness range the
transform is exactly the identity, and the random draws of the original
five ranges and flips do not depend on whether the two newer ones are on.
"""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from fsv.augment import base


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
  rotation_range: float = 0.0
  width_shift_range: float = 0.0
  height_shift_range: float = 0.0
  shear_range: float = 0.0
  zoom_range: float = 0.0
  horizontal_flip: bool = False
  vertical_flip: bool = False
  fill_mode: str = 'nearest'
  cval: float = 0.0
  rescale: float = 1.0
  # () is off; (low, high): each image times a factor drawn from [low, high].
  brightness_range: tuple = ()
  channel_shift_range: float = 0.0  # one intensity in [-r, r] added to all channels

  def __post_init__(self):
    # A tuple, whatever sequence came in: the config is a static (hashed) jit argument.
    object.__setattr__(self, 'brightness_range',
                       tuple(float(v) for v in self.brightness_range))

  @classmethod
  def from_config(cls, config: Mapping[str, Any]) -> 'AugmentConfig':
    """From `config.augment` (keys this class does not know, such as `ops`, are
    ignored; the two newer keys may be missing, as in configs written before them)."""
    defaults = cls()
    return cls(**{f.name: config.get(f.name, getattr(defaults, f.name))
                  for f in dataclasses.fields(cls)})

  @property
  def has_affine(self) -> bool:
    return any((self.rotation_range, self.width_shift_range,
                self.height_shift_range, self.shear_range, self.zoom_range))


def _fill_index(index: jnp.ndarray, size: int, mode: str) -> jnp.ndarray:
  """Maps integer sample positions outside [0, size) back into the image."""
  if mode == 'reflect':
    index = jnp.mod(index, 2 * size)
    return jnp.where(index < size, index, 2 * size - 1 - index)
  if mode == 'wrap':
    return jnp.mod(index, size)
  return jnp.clip(index, 0, size - 1)  # 'nearest'; 'constant' masks afterwards


def _affine_matrices(key: jax.Array, n: int, height: int, width: int,
                     config: AugmentConfig):
  """Per-image (A, b) such that input_xy = A @ (output_xy - centre) + centre + b."""
  keys = jax.random.split(key, 5)

  def uniform(k, limit, shape=(n,)):
    return jax.random.uniform(k, shape, minval=-limit, maxval=limit)

  theta = jnp.deg2rad(uniform(keys[0], config.rotation_range))
  shift_x = uniform(keys[1], config.width_shift_range) * width
  shift_y = uniform(keys[2], config.height_shift_range) * height
  shear = jnp.deg2rad(uniform(keys[3], config.shear_range))
  zoom = 1.0 + uniform(keys[4], config.zoom_range, (n, 2))

  cos, sin = jnp.cos(theta), jnp.sin(theta)
  rotation = jnp.stack([jnp.stack([cos, -sin], -1), jnp.stack([sin, cos], -1)], -2)
  shear_m = jnp.stack([
      jnp.stack([jnp.ones_like(shear), -jnp.sin(shear)], -1),
      jnp.stack([jnp.zeros_like(shear), jnp.cos(shear)], -1)], -2)
  zoom_m = jax.vmap(jnp.diag)(zoom)
  # Keras: rotation @ shift @ shear @ zoom, so the shift is rotated too.
  a = rotation @ shear_m @ zoom_m
  b = jnp.einsum('nij,nj->ni', rotation, jnp.stack([shift_x, shift_y], -1))
  return a, b


def _warp(images: jnp.ndarray, a: jnp.ndarray, b: jnp.ndarray,
          config: AugmentConfig) -> jnp.ndarray:
  n, height, width, channels = images.shape
  centre = jnp.array([(width - 1) / 2, (height - 1) / 2], jnp.float32)
  ys, xs = jnp.meshgrid(jnp.arange(height, dtype=jnp.float32),
                        jnp.arange(width, dtype=jnp.float32), indexing='ij')
  out_xy = jnp.stack([xs.ravel(), ys.ravel()], -1) - centre  # (H*W, 2)
  in_xy = jnp.einsum('nij,pj->npi', a, out_xy) + centre + b[:, None, :]
  x, y = in_xy[..., 0], in_xy[..., 1]                        # (n, H*W)
  x0, y0 = jnp.floor(x), jnp.floor(y)
  fx, fy = (x - x0)[..., None], (y - y0)[..., None]
  x0, y0 = x0.astype(jnp.int32), y0.astype(jnp.int32)
  flat = images.reshape(n, height * width, channels)

  def sample(xi, yi):
    cols = _fill_index(xi, width, config.fill_mode)
    rows = _fill_index(yi, height, config.fill_mode)
    values = jnp.take_along_axis(flat, (rows * width + cols)[..., None], axis=1)
    values = values.astype(jnp.float32)
    if config.fill_mode == 'constant':
      inside = (xi >= 0) & (xi < width) & (yi >= 0) & (yi < height)
      values = jnp.where(inside[..., None], values, jnp.float32(config.cval))
    return values

  top = sample(x0, y0) * (1 - fx) + sample(x0 + 1, y0) * fx
  bottom = sample(x0, y0 + 1) * (1 - fx) + sample(x0 + 1, y0 + 1) * fx
  return (top * (1 - fy) + bottom * fy).reshape(n, height, width, channels)


def _random_flip(key, images, axis, p=0.5):
  flip = jax.random.bernoulli(key, p, (images.shape[0],))
  return jnp.where(flip[:, None, None, None], jnp.flip(images, axis), images)


def apply_channel_shift(images: jnp.ndarray, intensity: jnp.ndarray) -> jnp.ndarray:
  """Keras's `apply_channel_shift`, per image: `intensity` (n,) added to every
  channel, clipped to the image's own min and max over all channels."""
  x = jnp.asarray(images, jnp.float32)
  low = x.min(axis=(1, 2, 3), keepdims=True)
  high = x.max(axis=(1, 2, 3), keepdims=True)
  return jnp.clip(x + base.per_image(intensity.astype(jnp.float32)), low, high)


_BY_255 = np.arange(256, dtype=np.float32) / np.float32(255)  # k / 255, correctly rounded


def apply_brightness_shift(images: jnp.ndarray, factor: jnp.ndarray) -> jnp.ndarray:
  """Keras's `apply_brightness_shift(x, factor, scale=False)`, per image.

  Keras converts the image to an 8-bit PIL image (truncating), blends it with
  black (`ImageEnhance.Brightness`: factor * pixel in float32, truncated to an
  integer and clipped to 0..255). An image with pixels outside 0..255 (a
  `cval` out of range) is first stretched to 0..255 by its min and max and
  mapped back afterwards, as Keras does.
  """
  x = jnp.asarray(images, jnp.float32)
  x_min = x.min(axis=(1, 2, 3), keepdims=True)
  x_max = x.max(axis=(1, 2, 3), keepdims=True)
  outside = (x_min < 0) | (x_max > 255)
  shifted = x - x_min
  span = shifted.max(axis=(1, 2, 3), keepdims=True)
  stretched = jnp.where(span != 0, shifted / jnp.where(span != 0, span, 1), shifted) * 255
  pixels = jnp.floor(jnp.where(outside, stretched, x))  # PIL's uint8: truncation
  pixels = jnp.clip(jnp.floor(base.per_image(factor.astype(jnp.float32)) * pixels), 0, 255)
  # pixels / 255 from a table: XLA turns a division by a constant into a
  # multiplication by its reciprocal, which differs from numpy's in the last bit.
  fraction = jnp.asarray(_BY_255)[pixels.astype(jnp.int32)]
  return jnp.where(outside, fraction * (x_max - x_min) + x_min, pixels)


def preprocess(images: jnp.ndarray, rescale: float) -> jnp.ndarray:
  """The deterministic part (float32, times `config.rescale`): what eval batches get."""
  return images.astype(jnp.float32) * jnp.float32(rescale)


def _colour_draws(key: jax.Array, n: int, config: AugmentConfig):
  """Per-image channel shift intensity and brightness factor, (n,) each, or
  None when off. Drawn from keys of their own (not a wider split of `key`),
  so turning them on leaves the affine and flip draws as they were."""
  intensity = factor = None
  if config.channel_shift_range:
    limit = config.channel_shift_range
    intensity = jax.random.uniform(jax.random.fold_in(key, 3), (n,),
                                   minval=-limit, maxval=limit)
  if config.brightness_range:
    low, high = config.brightness_range
    factor = jax.random.uniform(jax.random.fold_in(key, 4), (n,), minval=low, maxval=high)
  return intensity, factor


def transform(images: jnp.ndarray, key: jax.Array, config: AugmentConfig) -> jnp.ndarray:
  """`random_transform` without the rescale: float32 pixels in the input's range."""
  affine_key, flip_h_key, flip_v_key = jax.random.split(key, 3)
  n, height, width, _ = images.shape
  if config.has_affine:
    a, b = _affine_matrices(affine_key, n, height, width, config)
    images = _warp(images, a, b, config)
  intensity, factor = _colour_draws(key, n, config)
  if intensity is not None:
    images = apply_channel_shift(images, intensity)
  if config.horizontal_flip:
    images = _random_flip(flip_h_key, images, axis=2)
  if config.vertical_flip:
    images = _random_flip(flip_v_key, images, axis=1)
  if factor is not None:
    images = apply_brightness_shift(images, factor)
  return images.astype(jnp.float32)


def random_transform(images: jnp.ndarray, key: jax.Array,
                     config: AugmentConfig) -> jnp.ndarray:
  """Augments a batch (n, H, W, C) of uint8 or float pixels; returns float32.

  The i-th image's transform depends only on `key` and i, never on the
  device or on the other images.
  """
  return preprocess(transform(images, key, config), config.rescale)


@dataclasses.dataclass(frozen=True)
class Keras(base.ImageOp):
  """The `keras` op: `transform` with the config.augment keys (without the
  rescale, which the pipeline applies last). It takes no arguments in the
  spec: its settings are the config's keys, as in the configs written before
  op lists, so 'keras' alone is exactly the old augmentation."""
  name: ClassVar[str] = 'keras'
  config: AugmentConfig = dataclasses.field(default=AugmentConfig(),
                                            metadata=dict(argument=False))

  @property
  def is_identity(self) -> bool:
    c = self.config
    return not (c.has_affine or c.horizontal_flip or c.vertical_flip
                or c.brightness_range or c.channel_shift_range)

  def spec(self) -> str:
    return self.name

  def __call__(self, images, key):
    return transform(images, key, self.config)
