"""What every op record shares: typed, range-checked, hashable arguments.

An op is a frozen dataclass, so a pipeline is a hashable value that can be a
static argument of `jax.jit` (a new spec compiles a new step, an equal one
reuses it). Its fields are its arguments: their annotations are the types
the spec parser converts `key=value` text to, and `arg(..., low, high)`
states the range that `__post_init__` checks, so an op built by hand is
checked exactly as a parsed one. Errors name the op and the argument, on one
line, because they end a run before any work (`fsv.config.validate`).
"""
from __future__ import annotations

import dataclasses
import math
import typing
from typing import Any, ClassVar, Optional

import jax
import jax.numpy as jnp

from fsv.errors import ConfigError

# Pixels are 0..255 from the first op to the last; the rescale comes after.
PIXEL_MAX = 255.0


def arg(default: Any, low: Optional[float] = None, high: Optional[float] = None,
        *, low_open: bool = False, choices: tuple = ()) -> Any:
  """A field with a range ([low, high], or (low, high] with `low_open`) and,
  for strings, the allowed words."""
  return dataclasses.field(default=default, metadata=dict(
      low=low, high=high, low_open=low_open, choices=choices))


_TYPE_NAMES = {float: 'a number', int: 'an integer', bool: 'true or false', str: 'a string'}


def _type_name(tp) -> str:
  if typing.get_origin(tp) is typing.Union:
    return ' or '.join(_type_name(t) for t in typing.get_args(tp))
  if typing.get_origin(tp) is tuple:
    return f'a pair {tuple(_TYPE_NAMES.get(t, t.__name__)[2:] for t in typing.get_args(tp))}'.replace("'", '')
  return _TYPE_NAMES.get(tp, tp.__name__)


def coerce(value: Any, tp) -> Any:
  """`value` as type `tp` (int as float is fine, bool as a number is not);
  raises TypeError when it is not one."""
  if typing.get_origin(tp) is typing.Union:
    for option in typing.get_args(tp):
      try:
        return coerce(value, option)
      except TypeError:
        pass
    raise TypeError
  if typing.get_origin(tp) is tuple:
    items = typing.get_args(tp)
    if not isinstance(value, (tuple, list)) or len(value) != len(items):
      raise TypeError
    return tuple(coerce(v, t) for v, t in zip(value, items))
  if tp is bool:
    if isinstance(value, bool):
      return value
    raise TypeError
  if tp is int:
    if isinstance(value, int) and not isinstance(value, bool):
      return value
    raise TypeError
  if tp is float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
      return float(value)
    raise TypeError
  if isinstance(value, tp):
    return value
  raise TypeError


class Op:
  """Base of the op records (each a frozen dataclass with `name`)."""
  name: ClassVar[str]
  # Label-aware: acts on (images, targets) of the whole batch, after every image op.
  mixes_labels: ClassVar[bool] = False

  def __post_init__(self):
    hints = typing.get_type_hints(type(self))
    for field in dataclasses.fields(self):
      value = getattr(self, field.name)
      try:
        value = coerce(value, hints[field.name])
      except TypeError:
        raise self.error(field.name, value,
                         f'must be {_type_name(hints[field.name])}') from None
      object.__setattr__(self, field.name, value)
      meta = field.metadata
      numbers = [v for v in (value if isinstance(value, tuple) else (value,))
                 if isinstance(v, float) or type(v) is int]
      for number in numbers:
        if not math.isfinite(number):
          raise self.error(field.name, value, 'must be finite')
        low, high = meta.get('low'), meta.get('high')
        too_low = low is not None and (number <= low if meta.get('low_open') else number < low)
        if too_low or (high is not None and number > high):
          raise self.error(field.name, value, f'must be {_interval(meta)}')
      if isinstance(value, str) and meta.get('choices') and value not in meta['choices']:
        raise self.error(field.name, value, f'must be a number or one of {meta["choices"]}')
    self.check()

  def check(self) -> None:
    """Checks across arguments (e.g. low <= high); raise `self.error`."""

  def error(self, argument: str, value: Any, message: str) -> ConfigError:
    return ConfigError(f'config.augment.ops: {self.name}({argument}={value!r}): '
                       f'{argument} {message}')

  def spec(self) -> str:
    """The op as the spec parser reads it, with every argument that differs from its default."""
    changed = [f'{f.name}={getattr(self, f.name)!r}'.replace(' ', '')
               for f in dataclasses.fields(self) if getattr(self, f.name) != f.default]
    return f'{self.name}({",".join(changed)})' if changed else self.name


class ImageOp(Op):
  """An op on images alone: (n, H, W, C) 0..255 pixels and a key -> float32 pixels.

  The i-th image's draws depend only on the key and i (arrays of shape (n, ...)
  drawn from one key), so a batch split over devices is augmented the same.
  """

  @property
  def is_identity(self) -> bool:
    """True when the arguments turn the op off (it is then skipped, exactly)."""
    return False

  def __call__(self, images: jnp.ndarray, key: jax.Array) -> jnp.ndarray:
    raise NotImplementedError


def _interval(meta) -> str:
  low, high = meta.get('low'), meta.get('high')
  if high is None:
    return f'{">" if meta.get("low_open") else ">="} {low:g}'
  return f'in {"(" if meta.get("low_open") else "["}{low:g}, {high:g}]'


def per_image(values: jnp.ndarray) -> jnp.ndarray:
  """(n,) -> (n, 1, 1, 1), to scale or offset each image of a batch."""
  return values.reshape(values.shape[0], 1, 1, 1)


def blend(images: jnp.ndarray, other: jnp.ndarray, factor: jnp.ndarray) -> jnp.ndarray:
  """torchvision's `_blend`: factor * images + (1 - factor) * other, clipped to
  0..255 (images and other float32; factor per image, shape (n,))."""
  factor = per_image(factor.astype(jnp.float32))
  return jnp.clip(factor * images + (1 - factor) * other, 0, PIXEL_MAX)
