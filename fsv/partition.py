"""Which parameters train: path patterns -> labels -> optax.multi_transform.

A parameter's path is its keys joined by '/', e.g. 'block5_conv1/kernel' or
'head/dense/bias'. It trains when it fully matches one of the patterns in
`train.trainable` (regular expressions); everything else gets
`optax.set_to_zero()`, which keeps no optimizer state, and since nothing
reads a frozen parameter's gradient XLA does not compute it (the tests count
the convolutions in the compiled step). `train.group_learning_rates` gives
some trainable parameters a learning rate of their own, e.g.
(('block5_.*', 1e-5), ('head/.*', 1e-4)).
"""
from __future__ import annotations

import re
from typing import Any, Sequence

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


def _matching(patterns: Sequence[str], names: list[str], what: str) -> list[set]:
  matches = []
  for pattern in patterns:
    try:
      compiled = re.compile(pattern)
    except re.error as e:
      raise ConfigError(f'{what} pattern {pattern!r} is not a regular expression: {e}')
    found = {n for n in names if compiled.fullmatch(n)}
    if not found:
      raise ConfigError(f'{what} pattern {pattern!r} matches no parameter; '
                        f'parameters are e.g. {names[:3] + names[-3:]}')
    matches.append(found)
  return matches


def labels(params: Any, trainable: Sequence[str],
           group_learning_rates: Sequence[tuple[str, float]] = ()) -> Any:
  """The tree of labels: FROZEN, TRAINABLE or 'group<i>' (i-th learning-rate group)."""
  names = jax.tree_util.tree_leaves(path_names(params))
  trained = set().union(*_matching(trainable, names, 'train.trainable'))
  groups = _matching([p for p, _ in group_learning_rates],
                     sorted(trained), 'train.group_learning_rates')

  def label(name):
    if name not in trained:
      return FROZEN
    for i, members in enumerate(groups):
      if name in members:
        return f'group{i}'
    return TRAINABLE

  return jax.tree_util.tree_map(label, path_names(params))


def optimizer(train_config, params: Any, steps_per_epoch: int
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
      transforms, labels(params, train_config.trainable, groups))


def count(params: Any, label_tree: Any) -> dict:
  """Number of parameters under each label, for the log."""
  totals: dict = {}
  for value, label in zip(jax.tree_util.tree_leaves(params),
                          jax.tree_util.tree_leaves(label_tree)):
    totals[label] = totals.get(label, 0) + value.size
  return totals
