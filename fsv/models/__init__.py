"""Models by name. Each module declares its config keys, its smallest input
and how to build it; this registry is the only place that lists them."""
from __future__ import annotations

import flax.linen as nn

from fsv.models import small_convnet
from fsv.models.small_convnet import SmallConvNet

_REGISTRY = {
    'small_convnet': small_convnet,
}
NAMES = tuple(_REGISTRY)


def _module(name: str):
  if name not in _REGISTRY:
    raise ValueError(f'unknown model {name!r}; known: {NAMES}')
  return _REGISTRY[name]


def default_config(name: str):
  return _module(name).default_config()


def min_input_size(config) -> int:
  return _module(config.name).min_input_size(config)


def validate_config(config, error) -> None:
  if config.num_classes < 0 or config.num_classes == 1:
    raise error(f'config.model.num_classes={config.num_classes}: must be 0 '
                '(take it from the data) or at least 2')
  _module(config.name).validate_config(config, error)


def num_outputs(num_classes: int) -> int:
  """Two classes share one sigmoid unit (as in Keras); more get a softmax."""
  return 1 if num_classes == 2 else num_classes


def build(config, num_classes: int) -> nn.Module:
  """The model for `config.model` with a head for `num_classes`."""
  return _module(config.name).build(config, num_outputs(num_classes))


__all__ = ['SmallConvNet', 'NAMES', 'build', 'default_config', 'num_outputs']
