"""Xception (Chollet, 2017) as `keras.applications.Xception`, with Keras's layer names.

Entry flow: `block1_conv1`, `block1_conv2` (3x3, 'valid' padding: the input
shrinks by 3 + 2 pixels), then blocks 2, 3, 4 (two separable convolutions,
a 3x3 stride-2 max pooling `block{b}_pool`, plus a strided 1x1 convolution
of the block's input); middle flow: blocks 5-12 (three separable
convolutions, identity residual); exit flow: block 13 (as blocks 2-4) and
block 14 (two separable convolutions, 1536 and 2048 channels). BatchNorm
epsilon is Keras's default 1e-3 (momentum 0.99); every separable
convolution is Keras's SeparableConv2D ('same', no bias).

Layer names are Keras's and sit at the top level (`block{b}_sepconv{i}`,
`block{b}_sepconv{i}_bn`, `block1_conv{1,2}[_bn]`, `predictions`), except
the four 1x1 residual convolutions and their BatchNorms, which Keras's
source leaves unnamed: their names in a file are whatever Keras generated
(`conv2d_1`..`conv2d_4` and `batch_normalization_1`..`_4` in the official
Keras 2 files; in Keras 3 they depend on how many Conv2D and
BatchNormalization layers the session created before). Here they are
`block{b}_residual_conv` and `block{b}_residual_bn` for b in 2, 3, 4, 13,
the block whose output they are added to; `rename_keras_layers` maps a
file's auto-named layers onto them.

Inputs are 0-255 RGB pixels; `preprocess` (Keras's 'tf' mode, x / 127.5 - 1)
is the only place preprocessing happens.

BatchNorm layers run in inference mode (running statistics, never updated)
unless named in `batch_norm_training` (fsv/phases.py fills it).
"""
from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax.numpy as jnp
import ml_collections
import numpy as np

from fsv.models import backbone
from fsv.models import keras_weights
from fsv.models import layers
from fsv.models.layers import Head
from fsv.models.layers import SeparableConv
from fsv.models.layers import Tap
from fsv.errors import WeightsError  # = fsv.pretrained.layout.WeightsError

NAME = 'xception'
INPUT_RESCALE = 1.0  # preprocess works on 0-255 pixels
PREPROCESSING = "'tf' preprocessing x / 127.5 - 1 (pixels to [-1, 1])"
BN_MOMENTUM = 0.99
BN_EPSILON = 1e-3  # Keras's BatchNormalization default; Xception sets none
IMAGENET_CLASSES = 1000
DEFAULT_INPUT_SIZE = (299, 299)
MIN_INPUT_SIZE = 71  # Keras's min_size for Xception
# Keras's name of the last activations (block14_sepconv2's ReLU), before pooling.
GRADCAM_LAYER = 'block14_sepconv2_act'

# Blocks with a strided 1x1 convolution on their residual path:
# (block, separable convolutions' channels), entry flow and block 13.
STRIDED_BLOCKS = ((2, (128, 128)), (3, (256, 256)), (4, (728, 728)), (13, (728, 1024)))
MIDDLE_BLOCKS = range(5, 13)
MIDDLE_CHANNELS = 728
RESIDUAL_CONVS = tuple(f'block{b}_residual_conv' for b, _ in STRIDED_BLOCKS)
RESIDUAL_BNS = tuple(f'block{b}_residual_bn' for b, _ in STRIDED_BLOCKS)

_WEIGHTS = 'https://storage.googleapis.com/tensorflow/keras-applications/xception/'
# keras/src/applications/xception.py: (name, include_top) -> (url, md5 file_hash).
KERAS_FILES = {
    (NAME, True): (_WEIGHTS + 'xception_weights_tf_dim_ordering_tf_kernels.h5',
                   '0a58e3b7378bc2990ea3b43d5981f1f6'),
    (NAME, False): (_WEIGHTS + 'xception_weights_tf_dim_ordering_tf_kernels_notop.h5',
                    'b0042744bf5b25fce3cb969f33bebb97'),
}

# Keras's automatic names (class key, optional _<n>) of the unnamed layers.
_AUTO_NAMED = {'conv2d': RESIDUAL_CONVS, 'batch_normalization': RESIDUAL_BNS}
_AUTO_NAME = re.compile(r'(conv2d|batch_normalization)(?:_(\d+))?')


def rename_keras_layers(layers: Mapping[str, Sequence[np.ndarray]]) -> dict:
  """`layers` (keras_h5.read) with the residual layers under this module's names.

  Keras numbers automatic names in creation order, and Xception creates its
  residual convolutions (and BatchNorms) block after block, so ordered by
  their numeric suffix ('conv2d' is 0) they are blocks 2, 3, 4, 13 whatever
  the first number is.

  A file that already uses these names and has no auto-named layer (an .npz
  as fsv's weights cache holds it) is returned as it is.

  Raises WeightsError unless the file has exactly four auto-named Conv2D
  and four auto-named BatchNormalization layers (or is such an .npz).
  """
  found: dict[str, list[tuple[int, str]]] = {cls: [] for cls in _AUTO_NAMED}
  renamed = {}
  for name, arrays in layers.items():
    match = _AUTO_NAME.fullmatch(name)
    if match:
      found[match[1]].append((int(match[2] or 0), name))
    else:
      renamed[name] = arrays
  ours = RESIDUAL_CONVS + RESIDUAL_BNS
  if not any(found.values()) and all(name in layers for name in ours):
    return dict(layers)
  for cls, names in _AUTO_NAMED.items():
    if len(found[cls]) != len(names):
      raise WeightsError(
          f'Xception weights: expected {len(names)} auto-named {cls} layers (the '
          f'residual 1x1 convolutions of blocks 2, 3, 4, 13 and their BatchNorms), '
          f'found {len(found[cls])}: {[n for _, n in sorted(found[cls])]}')
    for (_, old), new in zip(sorted(found[cls]), names):
      renamed[new] = layers[old]
  return renamed


def preprocess(rgb: jnp.ndarray) -> jnp.ndarray:
  """keras.applications.xception.preprocess_input ('tf' mode) for 0-255 RGB
  pixels, in float32 whatever the model computes in (the first conv casts)."""
  return rgb.astype(jnp.float32) / 127.5 - 1.0


def max_pool_3x3_same(x: jnp.ndarray, stride: int = 2) -> jnp.ndarray:
  """Keras MaxPooling2D((3, 3), strides, padding='same'), as nine shifted maxima.

  Padded with -inf the TF way (an odd total padding goes after). Written
  as slices rather than `nn.max_pool` for the reason `max_pool_2x2` is:
  XLA's CPU backend differentiates reduce_window through select-and-scatter,
  slower than elementwise maxima.
  """
  k, s = 3, stride
  _, h, w, _ = x.shape
  out_h, out_w = -(-h // s), -(-w // s)
  pad_h, pad_w = max((out_h - 1) * s + k - h, 0), max((out_w - 1) * s + k - w, 0)
  x = jnp.pad(x, ((0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2),
                  (0, 0)), constant_values=-jnp.inf)
  out = None
  for u in range(k):
    for v in range(k):
      window = x[:, u:u + (out_h - 1) * s + 1:s, v:v + (out_w - 1) * s + 1:s]
      out = window if out is None else jnp.maximum(out, window)
  return out


class Xception(nn.Module):
  """Logits of the ImageNet top (`include_top`) or of `head`; `features_only`
  stops at the globally pooled block 14 activations (what `head` classifies)."""
  num_outputs: int = 1
  include_top: bool = False
  pooling: str = 'avg'  # before `head`; the ImageNet top always averages, as Keras's
  head_dropout: float = 0.2
  batch_norm_training: tuple[str, ...] = ()
  dtype: Any = jnp.float32  # of the activations; parameters and BatchNorm statistics are float32

  def _bn(self, x, name: str, train: bool):
    return layers.batch_norm(self, x, name, train, BN_MOMENTUM, BN_EPSILON)

  def _sepconv(self, x, channels: int, name: str, train: bool):
    """SeparableConv2D 3x3 'same' and its BatchNorm (the ReLU, where there is
    one, comes before: Xception's blocks are pre-activated)."""
    x = SeparableConv(channels, 3, dtype=self.dtype, name=name)(x)
    return self._bn(x, f'{name}_bn', train)

  def _strided_block(self, x, block: int, channels: tuple[int, int], train: bool):
    """Blocks 2, 3, 4, 13: two separable convs, 3x3 stride-2 max pooling, plus
    a strided 1x1 conv of the block's input (before its ReLU)."""
    name = f'block{block}'
    residual = nn.Conv(channels[1], (1, 1), (2, 2), padding='SAME', use_bias=False,
                       dtype=self.dtype, name=f'{name}_residual_conv')(x)
    residual = self._bn(residual, f'{name}_residual_bn', train)
    if block != 2:  # block 2's input is block1_conv2_act's, already rectified
      x = nn.relu(x)
    x = self._sepconv(x, channels[0], f'{name}_sepconv1', train)
    x = self._sepconv(nn.relu(x), channels[1], f'{name}_sepconv2', train)
    return max_pool_3x3_same(x) + residual

  def _middle_block(self, x, block: int, train: bool):
    residual = x
    for i in range(1, 4):
      x = self._sepconv(nn.relu(x), MIDDLE_CHANNELS, f'block{block}_sepconv{i}', train)
    return x + residual

  @nn.compact
  def __call__(self, rgb: jnp.ndarray, train: bool = False,
               features_only: bool = False) -> jnp.ndarray:
    x = preprocess(rgb)
    for i, (channels, stride) in enumerate(((32, 2), (64, 1))):
      name = f'block1_conv{i + 1}'
      x = nn.Conv(channels, (3, 3), (stride, stride), padding='VALID', use_bias=False,
                  dtype=self.dtype, name=name)(x)
      x = nn.relu(self._bn(x, f'{name}_bn', train))
    for block, channels in STRIDED_BLOCKS[:3]:
      x = self._strided_block(x, block, channels, train)
    for block in MIDDLE_BLOCKS:
      x = self._middle_block(x, block, train)
    x = self._strided_block(x, *STRIDED_BLOCKS[3], train)
    x = nn.relu(self._sepconv(x, 1536, 'block14_sepconv1', train))
    x = nn.relu(self._sepconv(x, 2048, 'block14_sepconv2', train))
    x = Tap(name=GRADCAM_LAYER)(x)
    if self.include_top:
      x = layers.global_pool(x, 'avg')  # Keras's avg_pool
      if features_only:
        return x
      return nn.Dense(IMAGENET_CLASSES, dtype=self.dtype, name='predictions')(x)
    x = layers.global_pool(x, self.pooling)
    if features_only:
      return x
    return Head(self.num_outputs, self.head_dropout, self.dtype, name='head')(x, train=train)


def default_config(name: str = NAME) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      name=name,
      num_classes=0,
      weights='imagenet',     # 'imagenet' (see fsv.pretrained), '' for random, or a file
      cache_dir='',           # converted weights: '' = $FSV_CACHE_DIR or ~/.cache/fsv
      pooling='avg',          # global pooling before the head: 'avg' or 'max'
      head_dropout=0.2,       # Keras's transfer-learning guide uses Xception with 0.2
      batch_norm='frozen',    # see fsv/models/__init__.py BATCH_NORM_MODES
  ))


def build(config, num_outputs: int, dtype: Any = jnp.float32,
          include_top: bool = False) -> Xception:
  return Xception(num_outputs=num_outputs, include_top=include_top, pooling=config.pooling,
                  head_dropout=config.head_dropout, dtype=dtype)


def min_input_size(config) -> int:
  del config
  return MIN_INPUT_SIZE  # 'valid' stem convs, then four stride-2 poolings


def layer_groups(config) -> dict[str, tuple[str, ...]]:
  """'top_block' is the paper's exit flow: block 13 (the last residual block,
  its residual convolution included) and block 14 after it, as
  EfficientNet's top_block is its last stage and the top conv."""
  del config
  return {'base': ('block.*',),
          'top_block': ('block13_.*', 'block14_.*'),
          'head': ('head/.*',)}


def port(name: str = NAME) -> keras_weights.Port:
  return keras_weights.Port(name, {top: KERAS_FILES[name, top] for top in (False, True)},
                            rename=rename_keras_layers)


_WEIGHTS, _IMAGENET = keras_weights.records(port(), build, default_config, DEFAULT_INPUT_SIZE)
BACKBONES = (
    backbone.Backbone(
        name=NAME, default_config=default_config, validate_config=layers.validate_head_config,
        build=build, input_rescale=INPUT_RESCALE, preprocessing=PREPROCESSING,
        default_input_size=DEFAULT_INPUT_SIZE, min_input_size=min_input_size,
        layer_groups=layer_groups, gradcam_layer=GRADCAM_LAYER, has_batch_norm=True,
        head_of=layers.head_of, weights=_WEIGHTS, imagenet=_IMAGENET),
)
