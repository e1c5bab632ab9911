"""ConvNeXt (Liu et al. 2022, "A ConvNet for the 2020s") as in `keras.applications.ConvNeXtTiny`.

As Keras builds it (keras/src/applications/convnext.py):
- preprocessing inside the model: a Normalization layer with the ImageNet
  mean (0.485, 0.456, 0.406) * 255 and std (0.229, 0.224, 0.225) * 255 on
  0-255 RGB (`keras.applications.convnext.preprocess_input` is the identity);
- a stem Conv2D 4x4 stride 4 ('valid', with bias) and a LayerNormalization;
  before each later stage a LayerNormalization and a Conv2D 2x2 stride 2;
- blocks: depthwise 7x7 Conv2D (groups=C, 'same', with bias), LayerNorm,
  Dense 4C (the pointwise conv), exact (erf) GELU, Dense C, LayerScale
  (a per-channel `gamma`), stochastic depth (training only), residual add;
- every LayerNormalization has epsilon 1e-6; there is no BatchNorm.

Layer names are Keras's, prefixed with the variant ('convnext_tiny_...'),
and sit at the top level: `{p}_stem_conv`, `{p}_stem_layernorm`,
`{p}_downsampling_layernorm_{i}`, `{p}_downsampling_conv_{i}` (i = 0..2,
before stages 1..3), `{p}_stage_{s}_block_{b}_{depthwise_conv, layernorm,
pointwise_conv_1, pointwise_conv_2, layer_scale}`, then the top.
Keras nests the stem and the downsampling layers in Sequential models
(`{p}_stem`, `{p}_downsampling_block_{i}`); its files name the inner layers
by their own names (Keras 3 `.weights.h5` by their `name` attribute, the
classic `.h5` by the `<layer>/<variable>` weight names), which
fsv.pretrained.keras_h5.read returns, so nothing nested needs renaming.

The top. Keras's include_top=True is global average pooling,
LayerNormalization `{p}_head_layernorm`, Dense `{p}_head_dense`; its
include_top=False pools (avg or max) and then applies a LayerNormalization
too, an auto-named one ('layer_normalization', 'layer_normalization_3', ...
whatever Keras's counter says). Both are the original network's final norm
(PyTorch ConvNeXt's `norm`, applied to the averaged features), so here both
are named `{p}_head_layernorm`, and `rename_keras_layers` gives the
auto-named one that name when reading an include_top=False file. fsv's
transfer head (`head/`) classifies those normalised pooled features, as
Keras's notop model outputs them.
"""
from __future__ import annotations

import functools
import re
from typing import Any, Mapping, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from fsv.models import backbone
from fsv.models import keras_weights
from fsv.models import layers
from fsv.models.layers import DepthwiseConv
from fsv.models.layers import Head
from fsv.models.layers import Tap

INPUT_RESCALE = 1.0  # the model's Normalization works on 0-255 pixels
PREPROCESSING = ('ImageNet mean/std normalisation (x - 255 * (0.485, 0.456, 0.406)) / '
                 '(255 * (0.229, 0.224, 0.225)) on 0-255 RGB (Keras\'s Normalization layer)')
MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
VARIANCE = ((0.229 * 255) ** 2, (0.224 * 255) ** 2, (0.225 * 255) ** 2)
LN_EPSILON = 1e-6
LAYER_SCALE_INIT = 1e-6
IMAGENET_CLASSES = 1000
# The activations after the last stage (the last block's residual add, which
# Keras leaves unnamed), before global pooling.
GRADCAM_LAYER = 'stage_3_output'


class Variant(NamedTuple):
  depths: tuple[int, ...]
  projection_dims: tuple[int, ...]
  default_size: int


# keras.applications.convnext.MODEL_CONFIGS.
VARIANTS = {
    'convnext_tiny': Variant((3, 3, 9, 3), (96, 192, 384, 768), 224),
    'convnext_small': Variant((3, 3, 27, 3), (96, 192, 384, 768), 224),
    'convnext_base': Variant((3, 3, 27, 3), (128, 256, 512, 1024), 224),
    'convnext_large': Variant((3, 3, 27, 3), (192, 384, 768, 1536), 224),
    'convnext_xlarge': Variant((3, 3, 27, 3), (256, 512, 1024, 2048), 224),
}
REGISTERED = ('convnext_tiny',)

BASE_WEIGHTS_PATH = 'https://storage.googleapis.com/tensorflow/keras-applications/convnext/'
# Keras's WEIGHTS_HASHES (top, notop). These are SHA-256 digests (64 hex
# digits; keras.utils.get_file picks the algorithm by length), not MD5.
_WEIGHTS_HASHES = {
    'convnext_tiny': (
        '8ae6e78ce2933352b1ef4008e6dd2f17bc40771563877d156bc6426c7cf503ff',
        'd547c096cabd03329d7be5562c5e14798aa39ed24b474157cef5e85ab9e49ef1'),
    'convnext_small': (
        'ce1277d8f1ee5a0ef0e171469089c18f5233860ceaf9b168049cb9263fd7483c',
        '6fc8009faa2f00c1c1dfce59feea9b0745eb260a7dd11bee65c8e20843da6eab'),
    'convnext_base': (
        '52cbb006d3dadd03f6e095a8ca1aca47aecdd75acb4bc74bce1f5c695d0086e6',
        '40a20c5548a5e9202f69735ecc06c990e6b7c9d2de39f0361e27baeb24cb7c45'),
    'convnext_large': (
        '070c5ed9ed289581e477741d3b34beffa920db8cf590899d6d2c67fba2a198a6',
        '96f02b6f0753d4f543261bc9d09bed650f24dd6bc02ddde3066135b63d23a1cd'),
    'convnext_xlarge': (
        'c1f5ccab661354fc3a79a10fa99af82f0fbf10ec65cb894a3ae0815f17a889ee',
        'de3f8a54174130e0cecdc71583354753d557fcf1f4487331558e2a16ba0cfe05'),
}
# (name, include_top) -> (URL, file hash): Keras's `{name}.h5` and `{name}_notop.h5`.
KERAS_FILES = {
    (name, include_top): (BASE_WEIGHTS_PATH + name + ('.h5' if include_top else '_notop.h5'),
                          hashes[0 if include_top else 1])
    for name, hashes in _WEIGHTS_HASHES.items() for include_top in (True, False)}

# The class key of Keras's auto-named layers (LayerNormalization() without a name).
_AUTO_LAYER_NORM = re.compile(r'layer_normalization(_\d+)?')


def preprocess(rgb: jnp.ndarray) -> jnp.ndarray:
  """Keras's PreStem Normalization, (x - mean) / sqrt(variance), in float32
  whatever the model computes in (the stem conv casts)."""
  mean = jnp.asarray(MEAN, jnp.float32)
  std = jnp.sqrt(jnp.asarray(VARIANCE, jnp.float32))  # Keras keeps the variance in float32
  return (rgb.astype(jnp.float32) - mean) / std


def drop_rates(name: str, drop_path_rate: float) -> list[float]:
  """Keras's (and the reference's) stochastic depth schedule: linear in the
  block's index over all blocks, from 0 to `drop_path_rate`."""
  return [float(r) for r in np.linspace(0.0, drop_path_rate, sum(VARIANTS[name].depths))]


def rename_keras_layers(layers: Mapping[str, Sequence[np.ndarray]],
                        name: str = 'convnext_tiny') -> dict[str, Sequence[np.ndarray]]:
  """Keras's layers with the port's names: an include_top=False file's
  auto-named LayerNormalization (after the global pooling) becomes
  `{name}_head_layernorm`.

  Keras names that layer by its class counter at the time the model was
  built ('layer_normalization', or '_N' after N unnamed ones earlier in the
  session); every other ConvNeXt layer carries an explicit name. A file
  that has `{name}_head_layernorm` (include_top=True) is returned as it is;
  one with several auto-named LayerNormalizations is too, ambiguous, and
  then fails to load naming the missing layer.
  """
  head_norm = f'{name}_head_layernorm'
  auto = [layer for layer in layers if _AUTO_LAYER_NORM.fullmatch(layer)]
  if head_norm in layers or len(auto) != 1:
    return dict(layers)
  return {head_norm if layer == auto[0] else layer: arrays for layer, arrays in layers.items()}


class LayerScale(nn.Module):
  """Keras's ConvNeXt LayerScale: a learnt per-channel factor `gamma`."""
  init_value: float = LAYER_SCALE_INIT
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    gamma = self.param('gamma', nn.initializers.constant(self.init_value), (x.shape[-1],))
    return x * gamma.astype(self.dtype)


class ConvNeXt(nn.Module):
  """Logits of the ImageNet top (`include_top`) or of `head`; `features_only`
  stops at the pooled, layer-normalised last-stage activations (what `head`
  and Keras's top classify)."""
  variant: str = 'convnext_tiny'
  num_outputs: int = 1
  include_top: bool = False
  pooling: str = 'avg'  # the global pooling before `head` ('avg' or 'max')
  head_dropout: float = 0.2
  # Stochastic depth of the residual branches, in training steps only (Keras's
  # ConvNeXtTiny builds it with 0; the reference trained Tiny with 0.1).
  drop_path_rate: float = 0.0
  dtype: Any = jnp.float32  # of the activations; parameters are float32

  def _norm(self, x, name: str):
    # Exact two-pass variance, as Keras's LayerNormalization computes it.
    return nn.LayerNorm(epsilon=LN_EPSILON, use_fast_variance=False, dtype=self.dtype,
                        name=name)(x)

  def _conv(self, x, channels: int, size: int, name: str):
    """Keras's stem and downsampling Conv2D: kernel = stride = size, 'valid', bias."""
    return nn.Conv(channels, (size, size), (size, size), padding='VALID', dtype=self.dtype,
                   name=name)(x)

  def _block(self, x, name: str, drop_rate: float, train: bool):
    inputs, channels = x, x.shape[-1]
    x = DepthwiseConv(7, use_bias=True, dtype=self.dtype, name=f'{name}_depthwise_conv')(x)
    x = self._norm(x, f'{name}_layernorm')
    x = nn.Dense(4 * channels, dtype=self.dtype, name=f'{name}_pointwise_conv_1')(x)
    x = nn.gelu(x, approximate=False)  # Keras's 'gelu' is the exact (erf) one
    x = nn.Dense(channels, dtype=self.dtype, name=f'{name}_pointwise_conv_2')(x)
    x = LayerScale(dtype=self.dtype, name=f'{name}_layer_scale')(x)
    if train and drop_rate > 0:  # stochastic depth: drop the whole branch per example
      keep = jax.random.bernoulli(self.make_rng('dropout'), 1 - drop_rate,
                                  (x.shape[0],) + (1,) * (x.ndim - 1))
      x = jnp.where(keep, x / (1 - drop_rate), 0).astype(x.dtype)
    return inputs + x

  @nn.compact
  def __call__(self, rgb: jnp.ndarray, train: bool = False,
               features_only: bool = False) -> jnp.ndarray:
    p, variant = self.variant, VARIANTS[self.variant]
    rates = iter(drop_rates(p, self.drop_path_rate))
    x = preprocess(rgb)
    for stage, (depth, channels) in enumerate(zip(variant.depths, variant.projection_dims)):
      if stage == 0:  # Keras's Sequential `{p}_stem`
        x = self._conv(x, channels, 4, f'{p}_stem_conv')
        x = self._norm(x, f'{p}_stem_layernorm')
      else:  # Keras's Sequential `{p}_downsampling_block_{stage - 1}`
        x = self._norm(x, f'{p}_downsampling_layernorm_{stage - 1}')
        x = self._conv(x, channels, 2, f'{p}_downsampling_conv_{stage - 1}')
      for block in range(depth):
        x = self._block(x, f'{p}_stage_{stage}_block_{block}', next(rates), train)
    x = Tap(name=GRADCAM_LAYER)(x)
    # Keras's top averages whatever `pooling` says; without it Keras pools as
    # asked. Either way the pooled features are layer-normalised.
    x = layers.global_pool(x, 'avg' if self.include_top else self.pooling)
    x = self._norm(x, f'{p}_head_layernorm')
    if features_only:
      return x
    if self.include_top:
      return nn.Dense(IMAGENET_CLASSES, dtype=self.dtype, name=f'{p}_head_dense')(x)
    return Head(self.num_outputs, self.head_dropout, self.dtype, name='head')(x, train=train)


def default_config(name: str = 'convnext_tiny') -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      name=name,
      num_classes=0,
      weights='imagenet',     # 'imagenet' (see fsv.pretrained), '' for random, or a file
      cache_dir='',           # converted weights: '' = $FSV_CACHE_DIR or ~/.cache/fsv
      pooling='avg',          # global pooling of the last stage before the head: 'avg' or 'max'
      # Keras's top has no dropout; 0.2 as Keras's transfer-learning guide.
      head_dropout=0.2,
      # Stochastic depth in training steps, of every block, frozen or not;
      # 0 (Keras's) keeps a frozen base deterministic.
      drop_path_rate=0.0,
  ))


def validate_config(full_config, error) -> None:
  layers.validate_head_config(full_config, error)
  rate = full_config.model.drop_path_rate
  if not 0 <= rate < 1:
    raise error(f'config.model.drop_path_rate={rate}: must be in [0, 1)')


def build(config, num_outputs: int, dtype: Any = jnp.float32,
          include_top: bool = False) -> ConvNeXt:
  return ConvNeXt(variant=config.name, num_outputs=num_outputs, include_top=include_top,
                  pooling=config.pooling, head_dropout=config.head_dropout,
                  drop_path_rate=config.drop_path_rate, dtype=dtype)


def min_input_size(config) -> int:
  del config
  return 32  # Keras's min_size: stride 4, then three stride-2 stages leave one pixel


def layer_groups(config) -> dict[str, tuple[str, ...]]:
  p = config.name
  last = len(VARIANTS[p].depths) - 1
  return {'base': (f'{p}_stem_.*', f'{p}_downsampling_.*', f'{p}_stage_.*',
                   f'{p}_head_layernorm/.*'),
          # The last stage with the downsampling that enters it (the
          # reference's stage 4: downsample_layers[3] + stages[3]) and the
          # final LayerNorm after the pooling.
          'top_block': (f'{p}_downsampling_(layernorm|conv)_{last - 1}/.*',
                        f'{p}_stage_{last}_.*', f'{p}_head_layernorm/.*'),
          'head': ('head/.*',)}


def port(name: str) -> keras_weights.Port:
  return keras_weights.Port(name, {top: KERAS_FILES[name, top] for top in (False, True)},
                            rename=functools.partial(rename_keras_layers, name=name))


def _backbone(name: str) -> backbone.Backbone:
  config = functools.partial(default_config, name)
  size = (VARIANTS[name].default_size,) * 2
  weights, imagenet = keras_weights.records(port(name), build, config, size)
  return backbone.Backbone(
      name=name, default_config=config, validate_config=validate_config, build=build,
      input_rescale=INPUT_RESCALE, preprocessing=PREPROCESSING, default_input_size=size,
      min_input_size=min_input_size, layer_groups=layer_groups,
      gradcam_layer=GRADCAM_LAYER, head_of=layers.head_of, weights=weights, imagenet=imagenet)


BACKBONES = tuple(_backbone(name) for name in REGISTERED)
