"""Colour ops on 0..255 pixels, with torchvision's semantics, and `colour_jitter`.

The functions follow torchvision's tensor kernels (`adjust_brightness`,
`adjust_contrast`, `adjust_saturation`, `adjust_hue`, `adjust_sharpness`,
`posterize`, `solarize`, `autocontrast`, `equalize`) so that a recipe tuned
with torchvision transfers, but on float pixels in 0..255: nothing is
rounded to 8 bits between ops (torchvision rounds only on uint8 tensors),
except where the op is defined on integers (posterize, equalize). Each takes
a batch (n, H, W, C), C = 1 or 3, and per-image factors of shape (n,), and
returns float32 pixels within 0..255.
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp

from fsv.augment import base
from fsv.augment.base import PIXEL_MAX, arg, blend, per_image


def grayscale(images: jnp.ndarray) -> jnp.ndarray:
  """(n, H, W, 1) luma with torchvision's weights (0.2989, 0.587, 0.114)."""
  if images.shape[-1] == 1:
    return images
  r, g, b = images[..., 0], images[..., 1], images[..., 2]
  return (0.2989 * r + 0.587 * g + 0.114 * b)[..., None]


def brightness(images: jnp.ndarray, factor: jnp.ndarray) -> jnp.ndarray:
  """Blend with black: factor 0 is black, 1 the image."""
  images = jnp.asarray(images, jnp.float32)
  return blend(images, jnp.zeros_like(images), factor)


def contrast(images: jnp.ndarray, factor: jnp.ndarray) -> jnp.ndarray:
  """Blend with the image's mean grey level: factor 0 is uniform grey."""
  images = jnp.asarray(images, jnp.float32)
  mean = grayscale(images).mean(axis=(1, 2, 3), keepdims=True)
  return blend(images, mean, factor)


def saturation(images: jnp.ndarray, factor: jnp.ndarray) -> jnp.ndarray:
  """Blend with the image's grayscale: factor 0 is grey, 2 doubly saturated."""
  images = jnp.asarray(images, jnp.float32)
  if images.shape[-1] == 1:
    return images
  return blend(images, grayscale(images), factor)


def _rgb_to_hsv(rgb: jnp.ndarray) -> jnp.ndarray:
  r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
  maxc, minc = rgb.max(-1), rgb.min(-1)
  equal = maxc == minc
  chroma = maxc - minc
  s = chroma / jnp.where(equal, 1.0, maxc)
  divisor = jnp.where(equal, 1.0, chroma)
  rc, gc, bc = (maxc - r) / divisor, (maxc - g) / divisor, (maxc - b) / divisor
  h = ((maxc == r) * (bc - gc) + ((maxc == g) & (maxc != r)) * (2.0 + rc - bc)
       + ((maxc != g) & (maxc != r)) * (4.0 + gc - rc))
  h = jnp.fmod(h / 6.0 + 1.0, 1.0)
  return jnp.stack([h, s, maxc], -1)


def _hsv_to_rgb(hsv: jnp.ndarray) -> jnp.ndarray:
  h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
  sector = jnp.floor(h * 6.0)
  f = h * 6.0 - sector
  sector = sector.astype(jnp.int32) % 6
  p = jnp.clip(v * (1.0 - s), 0.0, 1.0)
  q = jnp.clip(v * (1.0 - s * f), 0.0, 1.0)
  t = jnp.clip(v * (1.0 - s * (1.0 - f)), 0.0, 1.0)
  table = jnp.stack([jnp.stack(c, -1) for c in (
      (v, q, p, p, t, v), (t, v, v, q, p, p), (p, p, t, v, v, q))], -2)  # (..., 3, 6)
  return jnp.take_along_axis(table, sector[..., None, None], -1)[..., 0]


def hue(images: jnp.ndarray, shift: jnp.ndarray) -> jnp.ndarray:
  """Rotates the hue by `shift` (n,) turns, in [-0.5, 0.5]; grey images are unchanged."""
  images = jnp.asarray(images, jnp.float32)
  if images.shape[-1] == 1:
    return images
  hsv = _rgb_to_hsv(images / PIXEL_MAX)
  h = jnp.mod(hsv[..., 0] + per_image(shift.astype(jnp.float32))[..., 0], 1.0)
  rgb = _hsv_to_rgb(jnp.stack([h, hsv[..., 1], hsv[..., 2]], -1))
  return jnp.clip(rgb * PIXEL_MAX, 0, PIXEL_MAX)


def sharpness(images: jnp.ndarray, factor: jnp.ndarray) -> jnp.ndarray:
  """Blend with a smoothed image (3x3 kernel, 5 in the centre, border pixels
  kept): factor 0 is smooth, 2 sharpened. Images of side <= 2 are unchanged."""
  images = jnp.asarray(images, jnp.float32)
  n, height, width, _ = images.shape
  if height <= 2 or width <= 2:
    return images
  neighbours = sum(images[:, 1 + dy:height - 1 + dy, 1 + dx:width - 1 + dx]
                   for dy in (-1, 0, 1) for dx in (-1, 0, 1))
  smooth = (neighbours + 4 * images[:, 1:-1, 1:-1]) / 13
  degenerate = images.at[:, 1:-1, 1:-1].set(smooth)
  return blend(images, degenerate, factor)


def posterize(images: jnp.ndarray, bits: jnp.ndarray) -> jnp.ndarray:
  """Keeps the top `bits` (n,) of each 8-bit pixel (floors float pixels); 8 keeps all."""
  images = jnp.asarray(images, jnp.float32)
  bits = per_image(bits.astype(jnp.float32))
  step = 2.0 ** (8.0 - bits)
  return jnp.where(bits >= 8, images, jnp.floor(images / step) * step)


def solarize(images: jnp.ndarray, threshold: jnp.ndarray) -> jnp.ndarray:
  """Inverts pixels >= `threshold` (n,)."""
  images = jnp.asarray(images, jnp.float32)
  return jnp.where(images >= per_image(threshold.astype(jnp.float32)),
                   PIXEL_MAX - images, images)


def autocontrast(images: jnp.ndarray) -> jnp.ndarray:
  """Stretches each channel of each image to 0..255 (a flat channel is kept)."""
  images = jnp.asarray(images, jnp.float32)
  low = images.min(axis=(1, 2), keepdims=True)
  high = images.max(axis=(1, 2), keepdims=True)
  flat = high == low
  scale = jnp.where(flat, 1.0, PIXEL_MAX / jnp.where(flat, 1.0, high - low))
  return jnp.clip((images - jnp.where(flat, 0.0, low)) * scale, 0, PIXEL_MAX)


def _equalize_channel(values: jnp.ndarray, pixels: jnp.ndarray) -> jnp.ndarray:
  """torchvision's (and PIL's) equalize of one channel; `values` int32 0..255."""
  hist = jnp.bincount(values, length=256)
  last = hist[values.max()]                      # count of the last non-empty bin
  step = (hist.sum() - last) // 255
  safe = jnp.maximum(step, 1)
  lut = (jnp.cumsum(hist) + step // 2) // safe
  lut = jnp.clip(jnp.concatenate([jnp.zeros((1,), lut.dtype), lut[:-1]]), 0, 255)
  return jnp.where(step == 0, pixels, lut[values].astype(jnp.float32))


def equalize(images: jnp.ndarray) -> jnp.ndarray:
  """Histogram equalization of each channel of each image, on the integer
  part of the pixels (exactly torchvision's and PIL's on 8-bit images)."""
  images = jnp.asarray(images, jnp.float32)
  n, height, width, channels = images.shape
  pixels = images.transpose(0, 3, 1, 2).reshape(n * channels, height * width)
  values = jnp.clip(jnp.floor(pixels), 0, 255).astype(jnp.int32)
  out = jax.vmap(_equalize_channel)(values, pixels)
  return out.reshape(n, channels, height, width).transpose(0, 2, 3, 1)


def _factor(u, amount):
  """torchvision's ColorJitter factor: uniform in [max(0, 1 - amount), 1 + amount]."""
  low = max(0.0, 1.0 - amount)
  return low + u * (1.0 + amount - low)


@dataclasses.dataclass(frozen=True)
class ColourJitter(base.ImageOp):
  """torchvision's `ColorJitter(brightness, contrast, saturation, hue)`, per image.

  Brightness, contrast and saturation factors are drawn from
  [max(0, 1 - x), 1 + x], the hue shift from [-hue, hue] turns. Unlike
  torchvision, which shuffles the four per call, they apply in a fixed order
  (brightness, contrast, saturation, hue): a random order per image would,
  in a jitted batch, compute every part once per position it can take, and
  the orders differ little in effect. An argument of 0 skips its part, so
  all 0 is exactly the identity.
  """
  name: ClassVar[str] = 'colour_jitter'
  brightness: float = arg(0.0, 0)
  contrast: float = arg(0.0, 0)
  saturation: float = arg(0.0, 0)
  hue: float = arg(0.0, 0, 0.5)

  @property
  def is_identity(self) -> bool:
    return not (self.brightness or self.contrast or self.saturation or self.hue)

  def __call__(self, images, key):
    u = jax.random.uniform(key, (images.shape[0], 4))  # one draw: one thing to compile
    images = jnp.asarray(images, jnp.float32)
    if self.brightness:
      images = brightness(images, _factor(u[:, 0], self.brightness))
    if self.contrast:
      images = contrast(images, _factor(u[:, 1], self.contrast))
    if self.saturation:
      images = saturation(images, _factor(u[:, 2], self.saturation))
    if self.hue:
      images = hue(images, self.hue * (2 * u[:, 3] - 1))
    return images
