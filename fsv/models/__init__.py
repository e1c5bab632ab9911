"""Models by name; this registry is the only place that lists them.

A backbone is one module declaring:
  default_config(name)       its `config.model` keys;
  INPUT_RESCALE              the `augment.rescale` it expects of 0-255 pixels;
                             1.0 means the model preprocesses 0-255 pixels
                             itself, in one place, and other values are
                             refused;
  PREPROCESSING              what that preprocessing is, in words;
  default_input_size(name)   `data.image_size` by default;
  min_input_size(config)     the smallest square input it accepts;
  layer_groups(config)       named groups of parameter patterns, used as
                             '@base', '@top_block', '@head' in `train.trainable`
                             so that "unfreeze the top block" means the same for
                             every backbone;
  GRADCAM_LAYER              the name of the `layers.Tap` whose activations
                             Grad-CAM explains (fsv/explain.py);
  validate_config, build     checks and the Flax module;
optionally head_of (a separately trainable `head`, for bottleneck features),
pretrained_variables and pretrained_in_cache (its weight sources) and
imagenet_model (its ImageNet classifier, for `fsv.imagenet_top5`). Adding a backbone is one module and one
line in `_REGISTRY`.
"""
from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from fsv.models import efficientnet_lite
from fsv.models import small_convnet
from fsv.models import vgg
from fsv.models.efficientnet_lite import EfficientNetLite
from fsv.models.small_convnet import SmallConvNet
from fsv.models.vgg import VGG
from fsv.models.vgg import VGGClassifier

VGG16 = functools.partial(VGG, depth=16)
VGG19 = functools.partial(VGG, depth=19)

_REGISTRY = {
    'small_convnet': small_convnet,
    'vgg16': vgg,
    'vgg19': vgg,
    'efficientnet_lite0': efficientnet_lite,
    'efficientnet_lite1': efficientnet_lite,
    'efficientnet_lite2': efficientnet_lite,
}
NAMES = tuple(_REGISTRY)
# config.model.batch_norm of models with BatchNorm: 'frozen' runs every
# BatchNorm layer on its running statistics and never changes them (also
# in training steps: Keras's trainable=False); 'train' lets the layers whose
# parameters `train.trainable` selects normalise with batch statistics in
# training steps and update their running statistics. Frozen layers always
# keep theirs.
BATCH_NORM_MODES = ('frozen', 'train')


def _module(name: str):
  if name not in _REGISTRY:
    raise ValueError(f'unknown model {name!r}; known: {NAMES}')
  return _REGISTRY[name]


def default_config(name: str):
  return _module(name).default_config(name)


def input_rescale(name: str) -> float:
  """The `augment.rescale` the model expects of 0-255 pixels by default."""
  return _module(name).INPUT_RESCALE


def default_input_size(name: str) -> tuple[int, int]:
  return tuple(_module(name).default_input_size(name))


def preprocessing(name: str) -> str:
  """In words, what the model does to 0-255 pixels before its first layer."""
  return _module(name).PREPROCESSING


def gradcam_layer(name: str) -> str:
  """The `layers.Tap` whose activations Grad-CAM explains."""
  return _module(name).GRADCAM_LAYER


def min_input_size(config) -> int:
  return _module(config.name).min_input_size(config)


def layer_groups(config) -> dict[str, tuple[str, ...]]:
  """Group name -> parameter patterns ('@<name>' in `train.trainable`)."""
  return _module(config.name).layer_groups(config)


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
  module = _module(model.name)
  if module.INPUT_RESCALE == 1 and config.augment.rescale != 1:
    raise error(
        f'config.augment.rescale={config.augment.rescale}: {model.name} applies its own '
        f'{module.PREPROCESSING} to 0-255 pixels; rescaling them first (the blog\'s '
        'rescale=1./255) would feed the ImageNet weights the wrong inputs. Set it to 1.')
  if 'batch_norm' in model and model.batch_norm not in BATCH_NORM_MODES:
    raise error(f'config.model.batch_norm={model.batch_norm!r}: must be one of '
                f'{BATCH_NORM_MODES}')
  module.validate_config(config, error)


def num_outputs(num_classes: int) -> int:
  """Two classes share one sigmoid unit (as in Keras); more get a softmax."""
  return 1 if num_classes == 2 else num_classes


def build(config, num_classes: int, dtype: str = 'float32') -> nn.Module:
  """The model for `config.model` with a head for `num_classes`, computing
  its activations in `dtype` (the run's `config.dtype`, fsv/precision.py)."""
  return _module(config.name).build(config, num_outputs(num_classes), jnp.dtype(dtype))


@functools.partial(jax.jit, static_argnums=(0, 2))
def _random_variables(model: nn.Module, key: jax.Array, image_shape: tuple) -> dict:
  # Jitted: initialising VGG16 op by op took about 22 s on a 2-core CPU.
  return dict(model.init(key, jnp.zeros((1,) + image_shape, jnp.float32)))


def init_variables(config, model: nn.Module, key: jax.Array, image_shape) -> dict:
  """Initial variables ('params', and 'batch_stats' for models with BatchNorm):
  random, then pretrained weights where the model has them."""
  variables = _random_variables(model, key, tuple(image_shape))
  load = getattr(_module(config.name), 'pretrained_variables', None)
  return load(config, variables) if load else variables


def uses_uncached_weights(config) -> bool:
  """Whether the model would fetch pretrained weights that are not in the cache."""
  module = _module(config.name)
  return (bool(config.get('weights')) and config.weights == 'imagenet'
          and not module.pretrained_in_cache(config))


def imagenet_model(name: str, cache_dir: str = '') -> tuple[nn.Module, dict, tuple[int, int]]:
  """(module, variables, input size) of a backbone's 1000-class ImageNet classifier."""
  module = _module(name)
  if not hasattr(module, 'imagenet_model'):
    raise ValueError(f'{name} has no ImageNet classifier; models that do: '
                     f'{tuple(n for n in NAMES if hasattr(_module(n), "imagenet_model"))}')
  return (*module.imagenet_model(name, cache_dir), module.imagenet_input_size(name))


__all__ = ['BATCH_NORM_MODES', 'EfficientNetLite', 'NAMES', 'SmallConvNet', 'VGG', 'VGG16',
           'VGG19', 'VGGClassifier', 'build', 'default_config', 'default_input_size',
           'gradcam_layer', 'has_head', 'head_of', 'imagenet_model', 'init_variables',
           'layer_groups', 'num_outputs', 'preprocessing']
