"""ResNet50 (He et al., v1) as `keras.applications.ResNet50` builds it.

Keras's v1 ResNets differ from the paper's torchvision port in ways the
ImageNet weights depend on: the stride of a stage's first block sits on its
1x1 convolutions (`_0_conv`, the projection shortcut, and `_1_conv`), not on
the 3x3; every convolution has a bias, followed by BatchNorm with epsilon
1.001e-5 (momentum 0.99); the stem pads explicitly (`conv1_pad`, 3 pixels,
then a 'valid' 7x7/2 convolution; `pool1_pad`, 1 pixel of zeros, then a
'valid' 3x3/2 max pooling). Inputs are caffe-preprocessed
(vgg.caffe_preprocess: RGB to BGR, ImageNet means subtracted, no scaling).

Layer names are Keras's and sit at the top level: `conv1_conv`, `conv1_bn`,
`conv{stage}_block{i}_{0,1,2,3}_{conv,bn}` (stages 2-5; `_0_` is the
projection shortcut of each stage's first block), then either `predictions`
(the 1000-class ImageNet top) or `head/` (fsv's transfer head: dropout, one
dense layer on globally pooled features). So `conv5_.*` selects the top
block. The structure of every v1 ResNet is the table `STACKS`
((filters, blocks) per stage, Keras's `stack_fn`); only ResNet50 is
registered.

BatchNorm layers run in inference mode (running statistics, never updated)
unless named in `batch_norm_training`: fsv/phases.py fills it, for
`model.batch_norm='train'`, with the layers whose parameters train.
"""
from __future__ import annotations

import functools
from typing import Any, NamedTuple

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from fsv.models import backbone
from fsv.models import keras_weights
from fsv.models import layers
from fsv.models.layers import Head
from fsv.models.layers import Tap
from fsv.models.vgg import caffe_preprocess

INPUT_RESCALE = 1.0  # caffe_preprocess works on 0-255 pixels
PREPROCESSING = 'caffe preprocessing (RGB to BGR, ImageNet means subtracted)'
BN_MOMENTUM = 0.99     # Keras's BatchNormalization default
BN_EPSILON = 1.001e-5  # keras/src/applications/resnet.py
STEM_CHANNELS = 64
EXPANSION = 4          # a bottleneck block's output is 4x its filters
IMAGENET_CLASSES = 1000
IMAGENET_INPUT_SIZE = (224, 224)
# Keras's name of the last block's output (after its ReLU), the last spatial map.
GRADCAM_LAYER = 'conv5_block3_out'


class Stack(NamedTuple):
  """One stage of residual blocks (Keras's `stack_residual_blocks_v1`)."""
  filters: int  # of the bottleneck; the stage outputs EXPANSION * filters
  blocks: int
  stride: int   # of the first block's 1x1 convolutions


# Keras's stack_fn of each v1 ResNet; stages are named conv2 ... conv5.
STACKS = {
    'resnet50': (Stack(64, 3, 1), Stack(128, 4, 2), Stack(256, 6, 2), Stack(512, 3, 2)),
}
FIRST_STAGE = 2  # the stem is 'conv1'

# keras/src/applications/resnet.py: BASE_WEIGHTS_PATH, WEIGHTS_HASHES (md5).
_BASE_URL = 'https://storage.googleapis.com/tensorflow/keras-applications/resnet/'
KERAS_FILES = {
    ('resnet50', True): (_BASE_URL + 'resnet50_weights_tf_dim_ordering_tf_kernels.h5',
                         '2cb95161c43110f7111970584f804107'),
    ('resnet50', False): (_BASE_URL + 'resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5',
                          '4d473c1dd8becc155b73f8504c6f6626'),
}


def max_pool_3x3_stride_2(x: jnp.ndarray) -> jnp.ndarray:
  """Keras's `pool1_pad` (one pixel of zeros) and MaxPooling2D(3, 2, 'valid').

  The zeros are what Keras pads with (its input is a ReLU's, so they never
  win over a real value, but this needs no such argument). The maximum of
  nine strided slices rather than `nn.max_pool`: its gradient is
  elementwise, where XLA's CPU backend differentiates reduce_window through
  a slow select-and-scatter (see layers.max_pool_2x2).
  """
  x = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  _, h, w, _ = x.shape
  out_h, out_w = (h - 3) // 2 + 1, (w - 3) // 2 + 1
  windows = [x[:, u:u + 2 * (out_h - 1) + 1:2, v:v + 2 * (out_w - 1) + 1:2]
             for u in range(3) for v in range(3)]
  return functools.reduce(jnp.maximum, windows)


class ResNetV1(nn.Module):
  """A Keras v1 ResNet of `stacks`: logits of the ImageNet top (`include_top`,
  global average pooling as Keras) or of `head`; `features_only` stops at the
  globally pooled (`pooling`) last block's output (what `head` classifies)."""
  stacks: tuple[Stack, ...]
  num_outputs: int = 1
  include_top: bool = False
  pooling: str = 'avg'
  head_dropout: float = 0.2
  batch_norm_training: tuple[str, ...] = ()
  dtype: Any = jnp.float32  # of the activations; parameters and BatchNorm statistics are float32

  def _bn(self, x, name: str, train: bool):
    return layers.batch_norm(self, x, name, train, BN_MOMENTUM, BN_EPSILON)

  def _conv_bn(self, x, channels: int, kernel: int, name: str, train: bool,
               stride: int = 1, padding: Any = 'VALID'):
    """Keras's `{name}_conv` (with bias) and `{name}_bn`."""
    x = nn.Conv(channels, (kernel, kernel), (stride, stride), padding=padding,
                dtype=self.dtype, name=f'{name}_conv')(x)
    return self._bn(x, f'{name}_bn', train)

  def _block(self, x, filters: int, stride: int, shortcut_conv: bool, name: str,
             train: bool):
    """Keras's residual_block_v1: 1x1 (strided), 3x3, 1x1 (4x filters), added to
    the input or to its strided 1x1 projection, then ReLU."""
    if shortcut_conv:
      shortcut = self._conv_bn(x, EXPANSION * filters, 1, f'{name}_0', train, stride)
    else:
      shortcut = x
    x = nn.relu(self._conv_bn(x, filters, 1, f'{name}_1', train, stride))
    # Keras's padding='SAME' at stride 1: one pixel on every side.
    x = nn.relu(self._conv_bn(x, filters, 3, f'{name}_2', train, padding=((1, 1), (1, 1))))
    x = self._conv_bn(x, EXPANSION * filters, 1, f'{name}_3', train)
    return nn.relu(shortcut + x)

  @nn.compact
  def __call__(self, rgb: jnp.ndarray, train: bool = False,
               features_only: bool = False) -> jnp.ndarray:
    # conv1_pad (3 pixels) and a 'valid' 7x7/2 convolution.
    x = self._conv_bn(caffe_preprocess(rgb), STEM_CHANNELS, 7, 'conv1', train, 2,
                      padding=((3, 3), (3, 3)))
    x = max_pool_3x3_stride_2(nn.relu(x))
    for s, stack in enumerate(self.stacks):
      for b in range(stack.blocks):
        x = self._block(x, stack.filters, stack.stride if b == 0 else 1, b == 0,
                        f'conv{FIRST_STAGE + s}_block{b + 1}', train)
    x = Tap(name=GRADCAM_LAYER)(x)
    if self.include_top:  # Keras's top always averages ('avg_pool')
      x = x.mean(axis=(1, 2))
      return x if features_only else nn.Dense(IMAGENET_CLASSES, dtype=self.dtype,
                                              name='predictions')(x)
    x = layers.global_pool(x, self.pooling)
    if features_only:
      return x
    return Head(self.num_outputs, self.head_dropout, self.dtype, name='head')(x, train=train)


class ResNet50(ResNetV1):
  """keras.applications.ResNet50: stages of 3, 4, 6 and 3 bottleneck blocks."""
  stacks: tuple[Stack, ...] = STACKS['resnet50']


MODULES = {'resnet50': ResNet50}


def default_config(name: str = 'resnet50') -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      name=name,
      num_classes=0,
      weights='imagenet',     # 'imagenet' (see fsv.pretrained), '' for random, or a file
      cache_dir='',           # converted weights: '' = $FSV_CACHE_DIR or ~/.cache/fsv
      pooling='avg',          # global pooling before the head: 'avg' or 'max'
      head_dropout=0.2,       # Keras's top has none; fsv's head regularises a small set
      batch_norm='frozen',    # see fsv/models/__init__.py BATCH_NORM_MODES
  ))


def min_input_size(config) -> int:
  del config
  return 32  # Keras's min_size: five stride-2 steps leave one pixel


def layer_groups(config) -> dict[str, tuple[str, ...]]:
  last_stage = FIRST_STAGE + len(STACKS[config.name]) - 1
  return {'base': ('conv[0-9]+_.*',),
          'top_block': (f'conv{last_stage}_.*',),
          'head': ('head/.*',)}


def build(config, num_outputs: int, dtype: Any = jnp.float32,
          include_top: bool = False) -> ResNetV1:
  return MODULES[config.name](num_outputs=num_outputs, include_top=include_top,
                              pooling=config.pooling, head_dropout=config.head_dropout,
                              dtype=dtype)


def port(name: str) -> keras_weights.Port:
  return keras_weights.Port(name, {top: KERAS_FILES[name, top] for top in (False, True)})


def _backbone(name: str) -> backbone.Backbone:
  config = functools.partial(default_config, name)
  weights, imagenet = keras_weights.records(port(name), build, config, IMAGENET_INPUT_SIZE)
  return backbone.Backbone(
      name=name, default_config=config, validate_config=layers.validate_head_config, build=build,
      input_rescale=INPUT_RESCALE, preprocessing=PREPROCESSING,
      default_input_size=IMAGENET_INPUT_SIZE, min_input_size=min_input_size,
      layer_groups=layer_groups, gradcam_layer=GRADCAM_LAYER, has_batch_norm=True,
      head_of=layers.head_of, weights=weights, imagenet=imagenet)


BACKBONES = tuple(_backbone(name) for name in MODULES)
