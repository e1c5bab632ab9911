"""`random_erasing`: torchvision's `RandomErasing`, per image, on 0..255 pixels.

With probability `p` an image gets one rectangle of area fraction drawn from
`scale` and aspect ratio (height / width) log-uniform in `ratio`, placed
uniformly where it fits, filled with `value`: a number (0..255 pixels) or
'random', uniform noise in 0..255 per pixel and channel. torchvision's
'random' is standard normal noise because its images are normalised by
then; here erasing runs before the rescale, so noise over the pixel range
is the equivalent that keeps pixels in 0..255. As torchvision, up to 10
draws are tried for a rectangle that fits (height < H and width < W); an
image where none fits is left as it is. The draws are made for every image
at once (one uniform array of shape (n, 23)), so an image's rectangle
depends only on the key and its index.
"""
from __future__ import annotations

import dataclasses
import math
from typing import ClassVar, Tuple, Union

import jax
import jax.numpy as jnp

from fsv.augment import base
from fsv.augment.base import PIXEL_MAX, arg

ATTEMPTS = 10


def rectangles(key: jax.Array, n: int, height: int, width: int, scale, ratio):
  """Per-image (top, left, rect_height, rect_width, found, u) as torchvision
  draws them, from one (n, 2 * ATTEMPTS + 3) uniform draw; u (n,) is left
  over for the coin that decides whether to erase at all."""
  u = jax.random.uniform(key, (n, 2 * ATTEMPTS + 3))
  area = height * width
  erase_area = area * (scale[0] + u[:, :ATTEMPTS] * (scale[1] - scale[0]))
  log_low, log_high = math.log(ratio[0]), math.log(ratio[1])
  aspect = jnp.exp(log_low + u[:, ATTEMPTS:2 * ATTEMPTS] * (log_high - log_low))
  h = jnp.round(jnp.sqrt(erase_area * aspect)).astype(jnp.int32)
  w = jnp.round(jnp.sqrt(erase_area / aspect)).astype(jnp.int32)
  fits = (h < height) & (w < width)
  first = jnp.argmax(fits, axis=1)
  h = jnp.take_along_axis(h, first[:, None], 1)[:, 0]
  w = jnp.take_along_axis(w, first[:, None], 1)[:, 0]
  found = fits.any(axis=1)
  top = jnp.floor(u[:, -2] * (height - h + 1)).astype(jnp.int32)
  left = jnp.floor(u[:, -1] * (width - w + 1)).astype(jnp.int32)
  return (jnp.minimum(top, height - h), jnp.minimum(left, width - w), h, w, found,
          u[:, -3])


@dataclasses.dataclass(frozen=True)
class RandomErasing(base.ImageOp):
  """torchvision's `RandomErasing(p, scale, ratio, value)`; p=0 is the identity."""
  name: ClassVar[str] = 'random_erasing'
  p: float = arg(0.25, 0, 1)
  scale: Tuple[float, float] = arg((0.02, 0.33), 0, 1, low_open=True)
  ratio: Tuple[float, float] = arg((0.3, 3.3), 0, low_open=True)
  value: Union[float, str] = arg('random', 0, PIXEL_MAX, choices=('random',))

  def check(self):
    for name in ('scale', 'ratio'):
      low, high = getattr(self, name)
      if low > high:
        raise self.error(name, getattr(self, name), 'must be (low, high) with low <= high')

  @property
  def is_identity(self) -> bool:
    return self.p == 0

  def __call__(self, images, key):
    images = jnp.asarray(images, jnp.float32)
    n, height, width, _ = images.shape
    top, left, h, w, found, coin = rectangles(key, n, height, width, self.scale, self.ratio)
    erase = found & (coin < self.p)
    rows = jnp.arange(height)[None, :, None]
    cols = jnp.arange(width)[None, None, :]
    inside = ((rows >= top[:, None, None]) & (rows < (top + h)[:, None, None])
              & (cols >= left[:, None, None]) & (cols < (left + w)[:, None, None]))
    mask = (inside & erase[:, None, None])[..., None]
    if self.value == 'random':
      fill = jax.random.uniform(jax.random.fold_in(key, 1), images.shape, maxval=PIXEL_MAX)
    else:
      fill = jnp.float32(self.value)
    return jnp.where(mask, fill, images)
