"""Models by name. Each module declares its config keys, its smallest input,
how to build it and where its pretrained weights come from; this registry is
the only place that lists them."""
from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from fsv.models import small_convnet
from fsv.models import vgg
from fsv.models.small_convnet import SmallConvNet
from fsv.models.vgg import VGG
from fsv.models.vgg import VGGClassifier

VGG16 = functools.partial(VGG, depth=16)
VGG19 = functools.partial(VGG, depth=19)

_REGISTRY = {
    'small_convnet': small_convnet,
    'vgg16': vgg,
    'vgg19': vgg,
}
NAMES = tuple(_REGISTRY)


def _module(name: str):
  if name not in _REGISTRY:
    raise ValueError(f'unknown model {name!r}; known: {NAMES}')
  return _REGISTRY[name]


def default_config(name: str):
  return _module(name).default_config(name)


def input_rescale(name: str) -> float:
  """The `augment.rescale` the model expects of 0-255 pixels by default."""
  return _module(name).INPUT_RESCALE


def min_input_size(config) -> int:
  return _module(config.name).min_input_size(config)


def has_head(config) -> bool:
  """Whether the model is a frozen-able base plus a `head` (bottleneck training)."""
  return hasattr(_module(config.name), 'head_of')


def head_of(config, model: nn.Module) -> nn.Module:
  """The module that the `head` parameters of `model` belong to."""
  return _module(config.name).head_of(model)


def validate_config(config, error) -> None:
  """Checks `config.model` (and what it needs of the rest of the run's config)."""
  model = config.model
  if model.num_classes < 0 or model.num_classes == 1:
    raise error(f'config.model.num_classes={model.num_classes}: must be 0 '
                '(take it from the data) or at least 2')
  _module(model.name).validate_config(config, error)


def num_outputs(num_classes: int) -> int:
  """Two classes share one sigmoid unit (as in Keras); more get a softmax."""
  return 1 if num_classes == 2 else num_classes


def build(config, num_classes: int, dtype: str = 'float32') -> nn.Module:
  """The model for `config.model` with a head for `num_classes`, computing
  its activations in `dtype` (the run's `config.dtype`, fsv/precision.py)."""
  return _module(config.name).build(config, num_outputs(num_classes), jnp.dtype(dtype))


def init_params(config, model: nn.Module, key: jax.Array, image_shape) -> dict:
  """Initial parameters: random, then pretrained weights where the model has them."""
  params = model.init(key, jnp.zeros((1,) + tuple(image_shape), jnp.float32))['params']
  load = getattr(_module(config.name), 'pretrained_params', None)
  return load(config, params) if load else params


__all__ = ['NAMES', 'SmallConvNet', 'VGG', 'VGG16', 'VGG19', 'VGGClassifier', 'build',
           'default_config', 'has_head', 'head_of', 'init_params', 'num_outputs']
