"""VGG16 and VGG19 as in `keras.applications`, with Keras's layer names.

Layer names (`block1_conv1` ... `block5_conv3`, `fc1`, `fc2`, `predictions`)
are Keras's, so weights map one to one and freezing patterns read the same
as in the Keras recipe. Inputs are RGB pixels in 0-255; `caffe_preprocess`,
the only place preprocessing happens, turns them into what the ImageNet
weights expect, so train, eval and predict cannot disagree.

`VGG` is the Keras application (optionally with its 1000-class top).
`VGGClassifier` is the transfer model of the recipe: the conv base, then
flatten (or global pooling) and the blog's head (Dense 256, ReLU,
Dropout 0.5, one sigmoid unit or a softmax). Its parameters are the conv
layers at the top level plus `head/`, so `('block5_.*', 'head/.*')` selects
what fine-tuning trains.
"""
from __future__ import annotations

import functools
from typing import Any, Optional

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from fsv.models import backbone
from fsv.models import conv3x3
from fsv.models.layers import Conv3x3
from fsv.models.layers import Tap
from fsv.models.layers import max_pool_2x2

BLOCKS = {16: (2, 2, 3, 3, 3), 19: (2, 2, 4, 4, 4)}
WIDTHS = (64, 128, 256, 512, 512)
# keras.applications.imagenet_utils, mode 'caffe': BGR means, no scaling.
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
POOLINGS = ('', 'avg', 'max')
INPUT_RESCALE = 1.0  # caffe_preprocess works on 0-255 pixels
PREPROCESSING = 'caffe preprocessing (RGB to BGR, ImageNet means subtracted)'
IMAGENET_INPUT_SIZE = (224, 224)  # the top's fc1 is sized for it
# Keras's 'block5_conv3' output (after its ReLU): the layer DLwP's Grad-CAM uses.
GRADCAM_LAYER = 'block5_conv3_relu'


def caffe_preprocess(rgb: jnp.ndarray) -> jnp.ndarray:
  """keras.applications.vgg16.preprocess_input for 0-255 RGB pixels.

  In float32 whatever the model computes in: bfloat16 holds 0-255 in steps
  of up to 1, so it would round the means and the interpolated pixels
  before the difference is taken. The first conv casts the result.
  """
  return rgb[..., ::-1].astype(jnp.float32) - jnp.asarray(CAFFE_BGR_MEAN, jnp.float32)


def conv_layer_names(depth: int) -> list[str]:
  return [f'block{b + 1}_conv{i + 1}' for b, n in enumerate(BLOCKS[depth])
          for i in range(n)]


def conv_base(x: jnp.ndarray, depth: int, dtype: Any,
              conv_algorithm: str = 'xla') -> jnp.ndarray:
  """The 13 (16) or 16 (19) conv layers, computing in `dtype` by
  `conv_algorithm` ('xla' or 'winograd', fsv/models/conv3x3.py); call inside
  a compact module so the layers are named at that module's top level."""
  for block, (count, width) in enumerate(zip(BLOCKS[depth], WIDTHS)):
    for i in range(count):
      name = f'block{block + 1}_conv{i + 1}'
      # XLA's convolutions stay nn.Conv's exact computation, which keys the
      # features cache (fsv/features.py): features cached before stay valid.
      conv = (nn.Conv(width, (3, 3), padding='SAME', dtype=dtype, name=name)
              if conv_algorithm == 'xla' else
              Conv3x3(width, 'SAME', conv_algorithm, dtype=dtype, name=name))
      x = nn.relu(conv(x))
    if block == len(WIDTHS) - 1:
      x = Tap(name=GRADCAM_LAYER)(x)
    x = max_pool_2x2(x)
  return x


def _pool(x: jnp.ndarray, pooling: Optional[str]) -> jnp.ndarray:
  if pooling == 'avg':
    return x.mean(axis=(1, 2))
  if pooling == 'max':
    return x.max(axis=(1, 2))
  return x.reshape((x.shape[0], -1))


class VGG(nn.Module):
  """keras.applications.VGG16/VGG19; returns logits (the top) or features."""
  depth: int = 16
  include_top: bool = True
  pooling: Optional[str] = None  # without the top: None (4D features), 'avg', 'max'
  num_classes: int = 1000
  dtype: Any = jnp.float32  # of the activations; parameters are float32

  @nn.compact
  def __call__(self, rgb: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    x = conv_base(caffe_preprocess(rgb), self.depth, self.dtype)
    if not self.include_top:
      return x if not self.pooling else _pool(x, self.pooling)
    x = _pool(x, None)
    x = nn.relu(nn.Dense(4096, dtype=self.dtype, name='fc1')(x))
    x = nn.relu(nn.Dense(4096, dtype=self.dtype, name='fc2')(x))
    return nn.Dense(self.num_classes, dtype=self.dtype, name='predictions')(x)


class Head(nn.Module):
  """The blog's classifier on bottleneck features: Dense, ReLU, Dropout, logits."""
  num_outputs: int = 1
  units: int = 256
  dropout: float = 0.5
  pooling: str = ''
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, features: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    x = _pool(features, self.pooling)
    x = nn.relu(nn.Dense(self.units, dtype=self.dtype, name='dense')(x))
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return nn.Dense(self.num_outputs, dtype=self.dtype, name='logits')(x)


class VGGClassifier(nn.Module):
  """Conv base (Keras names, top level) + `head`.

  `features_only=True` stops after the conv base: the bottleneck features
  that `Head` (the `head` parameters) classifies.
  """
  depth: int = 16
  num_outputs: int = 1
  head_units: int = 256
  head_dropout: float = 0.5
  pooling: str = ''
  # Of training steps (conv3x3.CONV_ALGORITHMS): 'xla' or 'winograd'; `build`
  # resolves 'auto'. Inference runs XLA's convolutions.
  conv_algorithm: str = 'xla'
  dtype: Any = jnp.float32  # of the activations; parameters are float32

  @nn.compact
  def __call__(self, rgb: jnp.ndarray, train: bool = False,
               features_only: bool = False) -> jnp.ndarray:
    x = conv_base(caffe_preprocess(rgb), self.depth, self.dtype,
                  self.conv_algorithm if train else 'xla')
    if features_only:
      return x
    return Head(**_head_fields(self), name='head')(x, train=train)


def _head_fields(classifier: VGGClassifier) -> dict:
  return dict(num_outputs=classifier.num_outputs, units=classifier.head_units,
              dropout=classifier.head_dropout, pooling=classifier.pooling,
              dtype=classifier.dtype)


def head_of(classifier: VGGClassifier) -> Head:
  """The classifier's head as a module of its own, for the `head` parameters."""
  return Head(**_head_fields(classifier), parent=None)


def default_config(name: str = 'vgg16') -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      name=name,
      num_classes=0,
      weights='imagenet',   # 'imagenet' (see fsv.pretrained), '' for random, or a file
      cache_dir='',         # converted weights: '' = $FSV_CACHE_DIR or ~/.cache/fsv
      pooling='',           # '' flattens (the blog); 'avg' or 'max' pool globally
      head_units=256,
      head_dropout=0.5,
      conv_algorithm='auto',  # of training steps: conv3x3.CONV_ALGORITHMS
  ))


def min_input_size(config) -> int:
  del config
  return 32  # five 2x2 poolings leave one pixel


def layer_groups(config) -> dict[str, tuple[str, ...]]:
  return {'base': ('block.*',), 'top_block': (f'block{len(WIDTHS)}_.*',),
          'head': ('head/.*',)}


def validate_config(full_config, error) -> None:
  config = full_config.model
  if config.pooling not in POOLINGS:
    raise error(f'config.model.pooling={config.pooling!r}: must be one of {POOLINGS}')
  if config.head_units < 1:
    raise error(f'config.model.head_units={config.head_units}: must be >= 1')
  if not 0 <= config.head_dropout < 1:
    raise error(f'config.model.head_dropout={config.head_dropout}: must be in [0, 1)')
  conv3x3.validate_config(config, error)


def _depth(config) -> int:
  return int(config.name[len('vgg'):])


def pretrained_variables(config, variables: dict) -> dict:
  """`variables` with the conv base replaced by `config.weights` (if any)."""
  if not config.weights:
    return variables
  from fsv import pretrained  # the loaders need h5py/onnx only when used
  base = pretrained.load_vgg(_depth(config), config.weights, include_top=False,
                             cache_dir=config.cache_dir)
  return {**variables, 'params': {**variables['params'], **base}}


def pretrained_in_cache(config) -> bool:
  """Whether `config.weights='imagenet'` would load without a download."""
  from fsv.pretrained import sources
  return sources.cache_path(_depth(config), False, config.cache_dir).is_file()


def imagenet_model(depth: int, weights: str = 'imagenet', cache_dir: str = '') -> tuple[VGG, dict]:
  """Keras's VGG with its 1000-class top and the ImageNet weights (or a file's)."""
  from fsv import pretrained
  return VGG(depth=depth), {'params': pretrained.load_vgg(depth, weights, True, cache_dir)}


def build(config, num_outputs: int, dtype: Any) -> VGGClassifier:
  return VGGClassifier(depth=_depth(config), num_outputs=num_outputs, dtype=dtype,
                       head_units=config.head_units, head_dropout=config.head_dropout,
                       pooling=config.pooling,
                       conv_algorithm=conv3x3.resolve(config.conv_algorithm, dtype))


BACKBONES = tuple(
    backbone.Backbone(
        name=f'vgg{depth}', default_config=functools.partial(default_config, f'vgg{depth}'),
        validate_config=validate_config, build=build, input_rescale=INPUT_RESCALE,
        preprocessing=PREPROCESSING,
        default_input_size=(150, 150),  # the recipe's; ImageNet's is IMAGENET_INPUT_SIZE
        min_input_size=min_input_size, layer_groups=layer_groups,
        gradcam_layer=GRADCAM_LAYER, head_of=head_of,
        weights=backbone.Weights(load=pretrained_variables, in_cache=pretrained_in_cache),
        imagenet=backbone.ImageNetClassifier(
            load=functools.partial(imagenet_model, depth), input_size=IMAGENET_INPUT_SIZE))
    for depth in BLOCKS)
