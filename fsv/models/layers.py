"""Layers shared by several models."""
from __future__ import annotations

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
