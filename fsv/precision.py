"""Mixed precision: `config.dtype`, and dynamic loss scaling for float16.

`config.dtype` is the dtype activations are computed in (the models' Flax
`dtype`). Parameters and optimizer state stay float32 (Flax's `param_dtype`),
so small updates are not rounded away; inputs are preprocessed in float32
(VGG's means have decimals that bfloat16 cannot hold) and logits and losses
are float32 again.

bfloat16 has float32's exponent range, so its gradients neither overflow nor
underflow and it needs nothing more. float16 has 5 exponent bits: small
gradients underflow to zero. So its loss is multiplied by a large power of
two before the backward pass and the gradients are divided by it after
(exact in float32). A step whose gradients overflowed is skipped and the
scale halved; after `period` steps without overflow the scale doubles
(PyTorch's GradScaler and flax.training.dynamic_scale do the same). The
scale is part of the train state, so it is checkpointed and resumed.
"""
from __future__ import annotations

from typing import Any, Optional

from flax import struct
import jax
import jax.numpy as jnp

DTYPES = ('float32', 'bfloat16', 'float16')


class DynamicLossScale(struct.PyTreeNode):
  scale: jax.Array       # float32, a power of two
  good_steps: jax.Array  # int32: steps without overflow since the scale last changed
  period: int = struct.field(pytree_node=False, default=2000)

  @classmethod
  def create(cls, scale: float = 2.0**15, period: int = 2000) -> 'DynamicLossScale':
    return cls(scale=jnp.asarray(scale, jnp.float32),
               good_steps=jnp.zeros((), jnp.int32), period=period)

  def unscale(self, grads: Any) -> Any:
    return jax.tree_util.tree_map(lambda g: g / self.scale.astype(g.dtype), grads)

  def adjust(self, finite: jax.Array) -> 'DynamicLossScale':
    """The scale after a step whose gradients were `finite` (or overflowed)."""
    grow = finite & (self.good_steps + 1 >= self.period)
    # Never below 1: a loss that overflows unscaled is float16's range, not the scale.
    scale = jnp.where(finite, jnp.where(grow, self.scale * 2, self.scale),
                      jnp.maximum(self.scale / 2, 1.0))
    return self.replace(scale=scale,
                        good_steps=jnp.where(finite & ~grow, self.good_steps + 1, 0))


def loss_scale(dtype: str) -> Optional[DynamicLossScale]:
  """The initial loss scale of a run computing in `dtype`; None: no scaling."""
  return DynamicLossScale.create() if dtype == 'float16' else None


def all_finite(tree: Any) -> jax.Array:
  return jnp.all(jnp.stack([jnp.isfinite(x).all() for x in jax.tree_util.tree_leaves(tree)]))


def select(condition: jax.Array, on_true: Any, on_false: Any) -> Any:
  """`on_true` if `condition` else `on_false`, leaf by leaf (trees of one structure)."""
  return jax.tree_util.tree_map(lambda a, b: jnp.where(condition, a, b), on_true, on_false)
