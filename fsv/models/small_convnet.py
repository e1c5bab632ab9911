"""The small convnet trained from scratch in the Keras recipe.

Both published variants are one module with different settings:
  book (Deep Learning with Python, ch. 5): conv 32-64-128-128, Flatten,
    Dropout 0.5, Dense 512;  `BOOK`
  blog ("very little data"): conv 32-32-64, Flatten, Dense 64, Dropout 0.5;
    `BLOG`
Each conv is 3x3 'valid' + ReLU followed by 2x2 max-pooling, as in Keras.
Initialisers are Keras's (Glorot-uniform kernels, zero biases) so the
from-scratch numbers are comparable with the recipe.
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from fsv.models import backbone
from fsv.models import conv3x3
from fsv.models.layers import Conv3x3
from fsv.models.layers import Tap
from fsv.models.layers import max_pool_2x2

BOOK = dict(conv_features=(32, 64, 128, 128), dense_units=512,
            flatten_dropout=0.5, dense_dropout=0.0)
BLOG = dict(conv_features=(32, 32, 64), dense_units=64,
            flatten_dropout=0.0, dense_dropout=0.5)

POOLINGS = ('', 'avg', 'max')
INPUT_RESCALE = 1.0 / 255  # as the recipe's ImageDataGenerator(rescale=1./255)
PREPROCESSING = ''  # nothing beyond `augment.rescale`
# The last conv's activations (after ReLU, before pooling): the finest map
# with the most class-specific features.
GRADCAM_LAYER = 'last_conv_relu'

_kernel_init = nn.initializers.glorot_uniform()


class SmallConvNet(nn.Module):
  """Outputs logits: 1 for two classes (sigmoid), else one per class."""
  num_outputs: int = 1
  conv_features: Sequence[int] = BOOK['conv_features']
  dense_units: int = BOOK['dense_units']
  flatten_dropout: float = BOOK['flatten_dropout']
  dense_dropout: float = BOOK['dense_dropout']
  # '' flattens (the book, the blog); 'avg' or 'max' pool globally (Keras's
  # GlobalAveragePooling2D), which also suits Grad-CAM (fsv/explain.py).
  pooling: str = ''
  # Of training steps (conv3x3.CONV_ALGORITHMS): 'xla' or 'winograd'; `build`
  # resolves 'auto'.
  conv_algorithm: str = 'xla'
  dtype: Any = jnp.float32  # of the activations; parameters are float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    for i, features in enumerate(self.conv_features):
      x = Conv3x3(features, 'VALID', self.conv_algorithm if train else 'xla',
                  kernel_init=_kernel_init, dtype=self.dtype, name=f'conv{i + 1}')(x)
      x = nn.relu(x)
      if i == len(self.conv_features) - 1:
        x = Tap(name=GRADCAM_LAYER)(x)
      x = max_pool_2x2(x)
    if self.pooling == 'avg':
      x = x.mean(axis=(1, 2))
    elif self.pooling == 'max':
      x = x.max(axis=(1, 2))
    else:
      x = x.reshape((x.shape[0], -1))
    x = nn.Dropout(self.flatten_dropout, deterministic=not train)(x)
    x = nn.relu(nn.Dense(self.dense_units, kernel_init=_kernel_init, dtype=self.dtype,
                         name='dense')(x))
    x = nn.Dropout(self.dense_dropout, deterministic=not train)(x)
    return nn.Dense(self.num_outputs, kernel_init=_kernel_init, dtype=self.dtype,
                    name='logits')(x)


def default_config(name: str = 'small_convnet') -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(name=name, num_classes=0, pooling='',
                                        conv_algorithm='auto', **BOOK))


def layer_groups(config) -> dict[str, tuple[str, ...]]:
  """No pretrained base: 'base' is the conv stack, 'top_block' its last conv."""
  return {'base': ('conv.*',), 'top_block': (f'conv{len(config.conv_features)}/.*',),
          'head': ('dense/.*', 'logits/.*')}


def min_input_size(config) -> int:
  """Smallest square input that leaves at least one pixel after the conv stack."""
  size = 1
  for _ in config.conv_features:
    size = 2 * size + 2  # inverse of: 3x3 valid conv (-2), then 2x2 pool (/2)
  return size


def validate_config(full_config, error) -> None:
  config = full_config.model
  if not config.conv_features or any(f < 1 for f in config.conv_features):
    raise error(f'config.model.conv_features={tuple(config.conv_features)!r}: '
                'must be a non-empty sequence of positive channel counts')
  if config.dense_units < 1:
    raise error(f'config.model.dense_units={config.dense_units}: must be >= 1')
  if config.pooling not in POOLINGS:
    raise error(f'config.model.pooling={config.pooling!r}: must be one of {POOLINGS}')
  conv3x3.validate_config(config, error)
  for key in ('flatten_dropout', 'dense_dropout'):
    if not 0 <= config[key] < 1:
      raise error(f'config.model.{key}={config[key]}: must be in [0, 1)')


def build(config, num_outputs: int, dtype: Any) -> SmallConvNet:
  return SmallConvNet(num_outputs=num_outputs, dtype=dtype,
                      conv_features=tuple(config.conv_features),
                      dense_units=config.dense_units,
                      flatten_dropout=config.flatten_dropout,
                      dense_dropout=config.dense_dropout, pooling=config.pooling,
                      conv_algorithm=conv3x3.resolve(config.conv_algorithm, dtype))


BACKBONES = (backbone.Backbone(
    name='small_convnet', default_config=default_config, validate_config=validate_config,
    build=build, input_rescale=INPUT_RESCALE, preprocessing=PREPROCESSING,
    default_input_size=(150, 150), min_input_size=min_input_size, layer_groups=layer_groups,
    gradcam_layer=GRADCAM_LAYER),)
