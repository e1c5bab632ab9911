"""The op list: the spec parser, the pipeline and `apply`.

`config.augment.ops` is a string of ops separated by '|', each `name` or
`name(key=value, ...)`, in the spirit of big_vision's preprocessing strings
but parsed into typed records (frozen dataclasses) up front, by
`fsv.config.validate`, so a misspelt op or argument, a value of the wrong
type or out of range ends the run before any work, on one line that names
the op, the argument and the closest known name.

Keys: the `keras` op (at most one) gets the step's augmentation key itself,
so ops='keras' reproduces `random_transform` to the bit (configs written
before op lists train exactly as before); the op at position i of the list
gets `fold_in(key, i)`, so ops draw independently and adding an op to the end
of a list does not change the draws of those before it.

The draws never depend on how the program is compiled, but float rounding
may (eager against jitted, XLA's fusions): discontinuous ops (posterize,
solarize, equalize, Keras's 8-bit brightness) can turn such a last-bit
difference in their input into a different pixel value. One compiled step
is deterministic.
"""
from __future__ import annotations

import ast
import dataclasses
import difflib
import re
from typing import Any, Mapping, Sequence, Tuple, Union

import jax
import jax.numpy as jnp

from fsv.augment import base
from fsv.augment import colour
from fsv.augment import erasing
from fsv.augment import flips
from fsv.augment import keras
from fsv.augment import mixing
from fsv.augment import policies
from fsv.errors import ConfigError

OPS = {op.name: op for op in (
    keras.Keras, flips.FlipLR, flips.FlipUD, colour.ColourJitter, policies.RandAugment,
    policies.TrivialAugment, erasing.RandomErasing, mixing.Mixup, mixing.CutMix)}
# config.augment keys that only the `keras` op reads.
KERAS_KEYS = ('rotation_range', 'width_shift_range', 'height_shift_range', 'shear_range',
              'zoom_range', 'horizontal_flip', 'vertical_flip', 'brightness_range',
              'channel_shift_range')
_ONCE = ('keras', 'mixup', 'cutmix')
_OP = re.compile(r'\s*([A-Za-z_]\w*)\s*(?:\((.*)\))?\s*', re.DOTALL)


def _error(message: str) -> ConfigError:
  return ConfigError(f'config.augment.ops: {message}')


def _closest(word: str, known: Sequence[str]) -> str:
  close = difflib.get_close_matches(word, known, n=1, cutoff=0.5)
  return f'; did you mean {close[0]!r}?' if close else ''


def _split(text: str, separator: str) -> list[str]:
  """`text` split at `separator` outside brackets and quotes."""
  parts, depth, quote, start = [], 0, None, 0
  for i, char in enumerate(text):
    if quote:
      quote = None if char == quote else quote
    elif char in '\'"':
      quote = char
    elif char in '([':
      depth += 1
    elif char in ')]':
      depth -= 1
    elif char == separator and depth == 0:
      parts.append(text[start:i])
      start = i + 1
  parts.append(text[start:])
  return parts


def _value(text: str) -> Any:
  """A Python literal (1, 0.5, (0.1, 0.3), 'x', True), a bare word as a string."""
  text = text.strip()
  if text.lower() in ('true', 'false'):
    return text.lower() == 'true'
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def arguments(op_class) -> Tuple[str, ...]:
  """The names an op takes in a spec."""
  return tuple(f.name for f in dataclasses.fields(op_class)
               if f.metadata.get('argument', True))


def parse_op(text: str, keras_config: keras.AugmentConfig = keras.AugmentConfig()
             ) -> base.Op:
  """One op, `name` or `name(key=value, ...)`."""
  match = _OP.fullmatch(text)
  if not match:
    raise _error(f'cannot read {text.strip()!r}: expected name or name(key=value, ...)')
  name, args = match.group(1), match.group(2)
  if name not in OPS:
    raise _error(f'unknown op {name!r}{_closest(name, list(OPS))} (ops: {", ".join(OPS)})')
  op_class, known = OPS[name], arguments(OPS[name])
  values = {}
  for item in _split(args or '', ','):
    if not item.strip():
      if args and args.strip():
        raise _error(f'{name}({args}): empty argument')
      continue
    key, equals, value = item.partition('=')
    key = key.strip()
    if not equals:
      raise _error(f'{name}({args}): expected key=value, got {item.strip()!r}')
    if key not in known:
      if name == 'keras':
        raise _error(f"keras({args}): keras takes no arguments; it is set by the other "
                     f"config.augment keys ({', '.join(KERAS_KEYS)}, fill_mode, cval)")
      raise _error(f'{name}({args}): unknown argument {key!r}{_closest(key, known)} '
                   f'({name} takes {", ".join(known) or "no arguments"})')
    if key in values:
      raise _error(f'{name}({args}): argument {key!r} given twice')
    values[key] = _value(value)
  if name == 'keras':
    values['config'] = keras_config
  return op_class(**values)


def parse(spec: str, keras_config: keras.AugmentConfig = keras.AugmentConfig()
          ) -> Tuple[base.Op, ...]:
  """The ops of a spec ('' is none), checked: known names and arguments, typed
  and in range values, each of keras/mixup/cutmix at most once, label-aware ops last."""
  if not isinstance(spec, str):
    raise _error(f'must be a string of ops separated by "|", got {spec!r}')
  if not spec.strip():
    return ()
  ops = tuple(parse_op(text, keras_config) for text in _split(spec, '|'))
  names = [op.name for op in ops]
  for name in _ONCE:
    if names.count(name) > 1:
      raise _error(f'{name} is listed {names.count(name)} times; at most once')
  mixing_at = [i for i, op in enumerate(ops) if op.mixes_labels]
  if mixing_at and any(not op.mixes_labels for op in ops[mixing_at[0]:]):
    after = next(op.name for op in ops[mixing_at[0]:] if not op.mixes_labels)
    raise _error(f'{ops[mixing_at[0]].name} mixes labels, so it must come after every '
                 f'image op, and {after!r} follows it')
  return ops


@dataclasses.dataclass(frozen=True)
class Pipeline:
  """A parsed op list and the rescale applied after it: hashable, so a static
  argument of `jax.jit`."""
  ops: Tuple[base.Op, ...] = ()
  rescale: float = 1.0

  @property
  def image_ops(self) -> Tuple[base.ImageOp, ...]:
    return tuple(op for op in self.ops if not op.mixes_labels)

  @property
  def mixing_ops(self) -> Tuple[mixing.MixOp, ...]:
    return tuple(op for op in self.ops if op.mixes_labels)

  @property
  def mixes_labels(self) -> bool:
    """Whether the list has a mixup or cutmix op: the targets may then be
    mixtures, and accuracy is measured against `dominant_label`."""
    return bool(self.mixing_ops)

  @property
  def spec(self) -> str:
    return '|'.join(op.spec() for op in self.ops)


def pipeline(augment_config: Mapping[str, Any]) -> Pipeline:
  """The pipeline `config.augment` describes: `ops` parsed, its `keras` op
  built from the other keys. Refuses a Keras key that is set while no
  `keras` op would read it: a silently ignored setting is a typo by another name."""
  aug = dict(augment_config)
  keras_config = dataclasses.replace(keras.AugmentConfig.from_config(aug), rescale=1.0)
  ops = parse(aug.get('ops', 'keras'), keras_config)
  if not any(op.name == 'keras' for op in ops):
    default = keras.AugmentConfig()
    for key in KERAS_KEYS:
      if getattr(keras_config, key) != getattr(default, key):
        raise ConfigError(
            f'config.augment.{key}={aug[key]!r}: only the keras op reads it, and '
            f'config.augment.ops={aug.get("ops", "keras")!r} has none (add keras to '
            f'ops or leave {key} at its default)')
  return Pipeline(ops, rescale=float(aug.get('rescale', 1.0)))


def _in_own_buffer(x: jnp.ndarray, key: jax.Array) -> jnp.ndarray:
  """`x`, written to memory before the next op reads it.

  XLA's CPU fusion copies cheap elementwise producers into every consumer, so
  without this the `keras` warp's interpolation is recomputed for each read of
  its output: by colour_jitter's contrast mean and saturation grey level and
  by mixup's partner image (a batch of 32 at 150x150 through
  keras|colour_jitter|mixup: 750 ms, 74 ms with this; BENCHMARKS.md). The
  operand of a conditional is always a buffer of its own. The predicate holds
  for every key, but XLA does not prove it, so the conditional survives
  compilation; its other branch is never taken.
  """
  always = (jax.random.key_data(key).ravel()[0] | 1) != 0
  return jax.lax.cond(always, lambda v: v, jnp.zeros_like, x)


def apply(pipeline: Pipeline, images: jnp.ndarray, labels: jnp.ndarray, key: jax.Array,
          num_classes: int) -> Tuple[jnp.ndarray, jnp.ndarray]:
  """(inputs, targets) of a training batch: every op, then the rescale.

  `images` (n, H, W, C) uint8 or float pixels 0..255, `labels` (n,) ints.
  `inputs` are float32 after every op and `keras.preprocess(., rescale)`;
  `targets` (n, num_classes) float32 class probabilities, one-hot unless a
  mixing op mixed them. Jit-able with `pipeline` and `num_classes` static.
  """
  x = images
  for index, op in enumerate(pipeline.ops):
    if op.mixes_labels or op.is_identity:
      continue
    x = _in_own_buffer(op(x, key if op.name == 'keras' else jax.random.fold_in(key, index)),
                       key)
  x = x.astype(jnp.float32)
  targets = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
  if pipeline.mixing_ops:
    first = next(i for i, op in enumerate(pipeline.ops) if op.mixes_labels)
    x, targets = mixing.mix(pipeline.mixing_ops, x, targets, jax.random.fold_in(key, first))
  return keras.preprocess(x, pipeline.rescale), targets


def as_pipeline(aug: Union[Pipeline, keras.AugmentConfig]) -> Pipeline:
  """`aug` as a pipeline: an `AugmentConfig` is the `keras` op alone."""
  if isinstance(aug, Pipeline):
    return aug
  return Pipeline((keras.Keras(dataclasses.replace(aug, rescale=1.0)),),
                  rescale=aug.rescale)
