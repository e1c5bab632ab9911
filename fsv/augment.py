"""Random affine augmentation on device, with Keras `ImageDataGenerator` semantics.

For each image of a batch, as `ImageDataGenerator.random_transform` does:
rotation in [-rotation_range, rotation_range] degrees, shifts of up to
width/height_shift_range times the image size, shear in
[-shear_range, shear_range] degrees, independent x/y zoom in [1-z, 1+z], then
optional flips. The affine map is composed as Keras composes it
(rotation @ shift @ shear @ zoom about the image centre) and sampled with
bilinear interpolation (Keras's interpolation_order=1). Outside the image,
`fill_mode` decides: 'nearest' repeats the edge, 'reflect' mirrors
(d c b a | a b c d | d c b a), 'wrap' tiles, 'constant' fills with `cval`.
Finally pixels are multiplied by `rescale` (also applied to evaluation
batches, by `preprocess`, so train and eval see the same scale).

Everything is a pure function of (images, key, config): jit-able, no state.
With all ranges 0 and no flips the transform is exactly the identity.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax
import jax.numpy as jnp


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

  @classmethod
  def from_config(cls, config: Mapping[str, Any]) -> 'AugmentConfig':
    return cls(**{f.name: config[f.name] for f in dataclasses.fields(cls)})

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


def _random_flip(key, images, axis):
  flip = jax.random.bernoulli(key, 0.5, (images.shape[0],))
  return jnp.where(flip[:, None, None, None], jnp.flip(images, axis), images)


def preprocess(images: jnp.ndarray, rescale: float) -> jnp.ndarray:
  """The deterministic part (float32, times `config.rescale`): what eval batches get."""
  return images.astype(jnp.float32) * jnp.float32(rescale)


def random_transform(images: jnp.ndarray, key: jax.Array,
                     config: AugmentConfig) -> jnp.ndarray:
  """Augments a batch (n, H, W, C) of uint8 or float pixels; returns float32.

  The i-th image's transform depends only on `key` and i, never on the
  device or on the other images.
  """
  affine_key, flip_h_key, flip_v_key = jax.random.split(key, 3)
  if config.has_affine:
    n, height, width, _ = images.shape
    a, b = _affine_matrices(affine_key, n, height, width, config)
    images = _warp(images, a, b, config)
  if config.horizontal_flip:
    images = _random_flip(flip_h_key, images, axis=2)
  if config.vertical_flip:
    images = _random_flip(flip_v_key, images, axis=1)
  return preprocess(images, config.rescale)
