"""Which parameters train: path patterns -> labels -> optax.multi_transform.

A parameter's path is its keys joined by '/', e.g. 'block5_conv1/kernel' or
'head/dense/bias'. It trains when it fully matches one of the patterns in
`train.trainable` (regular expressions); everything else gets
`optax.set_to_zero()`, which keeps no optimizer state, and since nothing
reads a frozen parameter's gradient XLA does not compute it (the tests count
the convolutions in the compiled step). `train.group_learning_rates` gives
some trainable parameters a learning rate of their own, e.g.
(('block5_.*', 1e-5), ('head/.*', 1e-4)). A pattern '@<group>' stands for
the model's layer group of that name (`models.layer_groups`: '@top_block',
'@head', '@base'), so one config can unfreeze "the top block" of any
backbone.
"""
from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

import jax
import optax

from fsv import optim
from fsv.config import ConfigError

FROZEN = 'frozen'
TRAINABLE = 'trainable'


def path_names(params: Any) -> Any:
  """The same tree with each leaf replaced by its 'a/b/c' path."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: '/'.join(str(getattr(k, 'key', k)) for k in path), params)


def _expand(pattern: str, layer_groups: Mapping[str, Sequence[str]], what: str) -> list[str]:
  if not pattern.startswith('@'):
    return [pattern]
  if pattern[1:] not in layer_groups:
    raise ConfigError(f'{what} pattern {pattern!r}: the model has no layer group '
                      f'{pattern[1:]!r}; it has {sorted(layer_groups)}')
  return list(layer_groups[pattern[1:]])


def _matching(patterns: Sequence[str], names: list[str], what: str,
              layer_groups: Mapping[str, Sequence[str]]) -> list[set]:
  matches = []
  for pattern in patterns:
    found = set()
    for expanded in _expand(pattern, layer_groups, what):
      try:
        compiled = re.compile(expanded)
      except re.error as e:
        raise ConfigError(f'{what} pattern {expanded!r} is not a regular expression: {e}')
      found |= {n for n in names if compiled.fullmatch(n)}
    if not found:
      raise ConfigError(f'{what} pattern {pattern!r} matches no parameter; '
                        f'parameters are e.g. {names[:3] + names[-3:]}')
    matches.append(found)
  return matches


def labels(params: Any, trainable: Sequence[str],
           group_learning_rates: Sequence[tuple[str, float]] = (),
           layer_groups: Mapping[str, Sequence[str]] = {}) -> Any:  # noqa: B006 (read only)
  """The tree of labels: FROZEN, TRAINABLE or 'group<i>' (i-th learning-rate group)."""
  names = jax.tree_util.tree_leaves(path_names(params))
  trained = set().union(*_matching(trainable, names, 'train.trainable', layer_groups))
  groups = _matching([p for p, _ in group_learning_rates],
                     sorted(trained), 'train.group_learning_rates', layer_groups)

  def label(name):
    if name not in trained:
      return FROZEN
    for i, members in enumerate(groups):
      if name in members:
        return f'group{i}'
    return TRAINABLE

  return jax.tree_util.tree_map(label, path_names(params))


def optimizer(train_config, params: Any, steps_per_epoch: int,
              layer_groups: Mapping[str, Sequence[str]] = {}  # noqa: B006 (read only)
              ) -> optax.GradientTransformation:
  """The optimizer of `train_config` for the trainable parameters only."""
  groups = tuple(tuple(g) for g in train_config.group_learning_rates)
  transforms = {FROZEN: optax.set_to_zero(),
                TRAINABLE: optim.make(train_config, steps_per_epoch)}
  for i, (_, learning_rate) in enumerate(groups):
    scale = learning_rate / train_config.learning_rate
    schedule = optim.schedule(train_config, steps_per_epoch)
    transforms[f'group{i}'] = optim.optimizer(train_config, lambda s, f=schedule, k=scale: k * f(s))
  return optax.multi_transform(
      transforms, labels(params, train_config.trainable, groups, layer_groups))


def trained_layers(label_tree: Any, layers: Mapping[str, Any]) -> tuple[str, ...]:
  """The top-level `layers` (e.g. BatchNorm layers) none of whose parameters is frozen."""
  return tuple(sorted(
      name for name in layers if name in label_tree
      and FROZEN not in jax.tree_util.tree_leaves(label_tree[name])))


def count(params: Any, label_tree: Any) -> dict:
  """Number of parameters under each label, for the log."""
  totals: dict = {}
  for value, label in zip(jax.tree_util.tree_leaves(params),
                          jax.tree_util.tree_leaves(label_tree)):
    totals[label] = totals.get(label, 0) + value.size
  return totals
