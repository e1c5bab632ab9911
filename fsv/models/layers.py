"""Layers shared by several models."""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp


def max_pool_2x2(x: jnp.ndarray) -> jnp.ndarray:
  """Keras MaxPooling2D(2) ('valid': an odd last row/column is dropped).

  Written as reshape + max rather than `nn.max_pool`: XLA's CPU backend
  differentiates reduce_window through select-and-scatter, which made the
  small convnet's training step 35% slower here; the max's gradient is
  elementwise.
  """
  n, h, w, c = x.shape
  x = x[:, :h // 2 * 2, :w // 2 * 2]
  return x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


class DepthwiseConv(nn.Module):
  """A depthwise convolution with TF/lax 'SAME' padding and no bias; the kernel
  is (k, k, 1, channels), as `nn.Conv(feature_group_count=channels)` holds it.

  Computed as k*k shifted multiply-adds rather than a grouped convolution:
  XLA's CPU backend runs grouped convolutions 4-20x slower forward and 6-15x
  slower backward than this, at EfficientNet-Lite's shapes (batch 32).
  """
  kernel_size: int
  stride: int = 1
  dtype: Any = jnp.float32  # of the computation; the kernel is stored in float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    k, s = self.kernel_size, self.stride
    kernel = self.param('kernel', nn.initializers.lecun_normal(), (k, k, 1, x.shape[-1]))
    x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
    _, h, w, _ = x.shape
    out_h, out_w = -(-h // s), -(-w // s)
    pad_h, pad_w = max((out_h - 1) * s + k - h, 0), max((out_w - 1) * s + k - w, 0)
    # TF 'same': an odd total padding puts the extra row/column after.
    x = jnp.pad(x, ((0, 0), (pad_h // 2, pad_h - pad_h // 2),
                    (pad_w // 2, pad_w - pad_w // 2), (0, 0)))
    out = jnp.zeros(x.shape[:1] + (out_h, out_w) + x.shape[3:], x.dtype)
    for u in range(k):
      for v in range(k):
        window = x[:, u:u + (out_h - 1) * s + 1:s, v:v + (out_w - 1) * s + 1:s]
        out = out + window * kernel[u, v, 0]
    return out


class Tap(nn.Module):
  """The identity, named: marks the activations that Grad-CAM explains.

  It has no parameters, so placing one changes no parameter tree or
  checkpoint; fsv/explain.py finds it by name with `nn.intercept_methods`.
  """

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    return x
