"""MobileNetV2 (Sandler et al. 2018) as in `keras.applications.MobileNetV2`.

Inverted residual blocks: a 1x1 expansion (ReLU6), a 3x3 depthwise conv
(ReLU6), a linear 1x1 projection, and a residual add when the block keeps
its shape. As Keras builds it: BatchNorm with epsilon 1e-3 and momentum
0.999 after every conv, no conv biases, inputs x / 127.5 - 1 on 0-255 RGB
(`preprocess_input`, mode 'tf').

Padding: Keras 3 gives the stem conv `padding='same'` and pads the stride-2
depthwise convs with `ZeroPadding2D(correct_pad(x, 3))` then 'valid'. For a
3x3 kernel at stride 2 that pad is (0, 1) on an even side and (1, 1) on an
odd one: exactly TF/lax 'SAME', so every conv here uses 'SAME'
(tests/test_mobilenet_v2.py checks it at an odd input size).

Layer names are Keras's and sit at the top level: `Conv1`, `bn_Conv1`, the
first block `expanded_conv_{depthwise, depthwise_BN, project, project_BN}`
(no expansion), then `block_{1..16}_{expand, expand_BN, depthwise,
depthwise_BN, project, project_BN}`, `Conv_1`, `Conv_1_bn`, then either
`predictions` (the 1000-class ImageNet top, on globally averaged
features) or `head/` (fsv's transfer head). So `block_16_.*` and `Conv_1.*`
select the top block. Keras's activations (`Conv1_relu`, `out_relu`, ...)
hold no parameters; `out_relu` is marked with a `Tap` for Grad-CAM.

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
from fsv.models.layers import DepthwiseConv
from fsv.models.layers import Head
from fsv.models.layers import Tap

INPUT_RESCALE = 1.0  # preprocess works on 0-255 pixels
PREPROCESSING = "'tf' preprocessing x / 127.5 - 1 (pixels to [-1, 1])"
BN_MOMENTUM = 0.999
BN_EPSILON = 1e-3
IMAGENET_CLASSES = 1000
DEFAULT_INPUT_SIZE = (224, 224)
# Keras's name of the last ReLU6 (after Conv_1_bn), the last spatial map.
GRADCAM_LAYER = 'out_relu'
ALPHAS = {'mobilenet_v2': 1.0}  # registered names; Keras has 0.35 ... 1.4 too

BASE_WEIGHT_PATH = ('https://storage.googleapis.com/tensorflow/keras-applications/'
                    'mobilenet_v2/')
# The official ImageNet files for alpha 1.0 at 224 px (Keras picks the file by
# alpha and input rows in 96, 128, ..., 224). Keras's source gives no file
# hash for MobileNetV2 (get_file without file_hash), hence None.
KERAS_FILES = {
    ('mobilenet_v2', True): (
        BASE_WEIGHT_PATH + 'mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5',
        None),
    ('mobilenet_v2', False): (
        BASE_WEIGHT_PATH + 'mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5',
        None),
}


class Block(NamedTuple):
  """One inverted residual block of keras.applications.MobileNetV2, before alpha."""
  filters: int
  stride: int
  expansion: int


# The 17 `_inverted_res_block` calls, block_id 0..16.
BLOCKS = (
    Block(16, 1, 1),
    Block(24, 2, 6), Block(24, 1, 6),
    Block(32, 2, 6), Block(32, 1, 6), Block(32, 1, 6),
    Block(64, 2, 6), Block(64, 1, 6), Block(64, 1, 6), Block(64, 1, 6),
    Block(96, 1, 6), Block(96, 1, 6), Block(96, 1, 6),
    Block(160, 2, 6), Block(160, 1, 6), Block(160, 1, 6),
    Block(320, 1, 6),
)


def make_divisible(value: float, divisor: int = 8) -> int:
  """Keras's `_make_divisible`: the nearest multiple of `divisor`, never 10% below."""
  rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
  return rounded + divisor if rounded < 0.9 * value else rounded


def block_prefix(block_id: int) -> str:
  """Keras's prefix of a block's layer names (the first block has no expansion)."""
  return f'block_{block_id}_' if block_id else 'expanded_conv_'


def preprocess(rgb: jnp.ndarray) -> jnp.ndarray:
  """keras.applications.mobilenet_v2.preprocess_input ('tf' mode) for 0-255 RGB,
  in float32 whatever the model computes in (the first conv casts)."""
  return rgb.astype(jnp.float32) / 127.5 - 1.0


class MobileNetV2(nn.Module):
  """Logits of the ImageNet top (`include_top`) or of `head`; `features_only`
  stops at the globally pooled `out_relu` activations (what `head` classifies)."""
  alpha: float = 1.0
  num_outputs: int = 1
  include_top: bool = False
  pooling: str = 'avg'  # the global pooling before `head` ('avg' or 'max')
  head_dropout: float = 0.2
  batch_norm_training: tuple[str, ...] = ()
  dtype: Any = jnp.float32  # of the activations; parameters and BatchNorm statistics are float32

  def _bn(self, x, name: str, train: bool):
    return layers.batch_norm(self, x, name, train, BN_MOMENTUM, BN_EPSILON)

  def _conv(self, x, channels: int, kernel: int, name: str, stride: int = 1):
    return nn.Conv(channels, (kernel, kernel), (stride, stride), padding='SAME',
                   use_bias=False, dtype=self.dtype, name=name)(x)

  def _block(self, x, block: Block, block_id: int, train: bool):
    """Inverted residual: 1x1 expand, 3x3 depthwise, linear 1x1 project, add."""
    inputs, prefix = x, block_prefix(block_id)
    filters = make_divisible(int(block.filters * self.alpha))
    if block_id:  # Keras expands every block but the first, even by a factor 1
      x = self._conv(x, block.expansion * x.shape[-1], 1, f'{prefix}expand')
      x = nn.relu6(self._bn(x, f'{prefix}expand_BN', train))
    x = DepthwiseConv(3, block.stride, dtype=self.dtype, name=f'{prefix}depthwise')(x)
    x = nn.relu6(self._bn(x, f'{prefix}depthwise_BN', train))
    x = self._conv(x, filters, 1, f'{prefix}project')
    x = self._bn(x, f'{prefix}project_BN', train)
    if block.stride == 1 and inputs.shape[-1] == filters:
      x = x + inputs
    return x

  @nn.compact
  def __call__(self, rgb: jnp.ndarray, train: bool = False,
               features_only: bool = False) -> jnp.ndarray:
    x = self._conv(preprocess(rgb), make_divisible(32 * self.alpha), 3, 'Conv1', stride=2)
    x = nn.relu6(self._bn(x, 'bn_Conv1', train))
    for block_id, block in enumerate(BLOCKS):
      x = self._block(x, block, block_id, train)
    # Keras widens the last conv with alpha > 1 only.
    last = make_divisible(1280 * self.alpha) if self.alpha > 1.0 else 1280
    x = self._conv(x, last, 1, 'Conv_1')
    x = nn.relu6(self._bn(x, 'Conv_1_bn', train))
    x = Tap(name=GRADCAM_LAYER)(x)
    if self.include_top:  # Keras's top: average pooling whatever `pooling` says
      return nn.Dense(IMAGENET_CLASSES, dtype=self.dtype,
                      name='predictions')(x.mean(axis=(1, 2)))
    x = layers.global_pool(x, self.pooling)
    if features_only:
      return x
    return Head(self.num_outputs, self.head_dropout, self.dtype, name='head')(x, train=train)


def default_config(name: str = 'mobilenet_v2') -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      name=name,
      num_classes=0,
      weights='imagenet',     # 'imagenet' (see fsv.pretrained), '' for random, or a file
      cache_dir='',           # converted weights: '' = $FSV_CACHE_DIR or ~/.cache/fsv
      pooling='avg',          # global pooling of out_relu before the head: 'avg' or 'max'
      head_dropout=0.2,       # as Keras's transfer-learning guide on MobileNetV2
      batch_norm='frozen',    # see fsv/models/__init__.py BATCH_NORM_MODES
  ))


def build(config, num_outputs: int, dtype: Any = jnp.float32,
          include_top: bool = False) -> MobileNetV2:
  return MobileNetV2(alpha=ALPHAS[config.name], num_outputs=num_outputs,
                     include_top=include_top, pooling=config.pooling,
                     head_dropout=config.head_dropout, dtype=dtype)


def min_input_size(config) -> int:
  del config
  return 32  # Keras's min_size; five stride-2 layers leave one pixel


def layer_groups(config) -> dict[str, tuple[str, ...]]:
  del config
  last = len(BLOCKS) - 1
  return {'base': ('Conv1/.*', 'bn_Conv1/.*', 'expanded_conv_.*', 'block_.*',
                   'Conv_1/.*', 'Conv_1_bn/.*'),
          # The last block (the only one of the 320-channel stage) and the 1x1
          # conv to 1280 channels after it.
          'top_block': (f'block_{last}_.*', 'Conv_1/.*', 'Conv_1_bn/.*'),
          'head': ('head/.*',)}


def port(name: str) -> keras_weights.Port:
  return keras_weights.Port(name, {top: KERAS_FILES[name, top] for top in (False, True)})


def _backbone(name: str) -> backbone.Backbone:
  config = functools.partial(default_config, name)
  weights, imagenet = keras_weights.records(port(name), build, config, DEFAULT_INPUT_SIZE)
  return backbone.Backbone(
      name=name, default_config=config, validate_config=layers.validate_head_config, build=build,
      input_rescale=INPUT_RESCALE, preprocessing=PREPROCESSING,
      default_input_size=DEFAULT_INPUT_SIZE, min_input_size=min_input_size,
      layer_groups=layer_groups, gradcam_layer=GRADCAM_LAYER, has_batch_norm=True,
      head_of=layers.head_of, weights=weights, imagenet=imagenet)


BACKBONES = tuple(_backbone(name) for name in ALPHAS)
