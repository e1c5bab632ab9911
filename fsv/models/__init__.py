"""Models by name: the registry of `Backbone` records (fsv/models/backbone.py).

Every part of fsv asks this registry, never a model module, what it needs
to know of a model. A model module declares its records in `BACKBONES`;
the built-in ones are registered below, and a notebook adds its own with
`fsv.models.register(Backbone(...))`, which checks the record against the
contract first.
"""
from __future__ import annotations

import functools
import math

import flax.linen as nn
from flax import traverse_util
import jax
import jax.extend.random
import jax.numpy as jnp

from fsv.models import convnext
from fsv.models import efficientnet_lite
from fsv.models import mobilenet_v2
from fsv.models import resnet
from fsv.models import small_convnet
from fsv.models import vgg
from fsv.models import xception
from fsv.models.backbone import Backbone
from fsv.models.backbone import BackboneError
from fsv.models.backbone import ImageNetClassifier
from fsv.models.backbone import check
from fsv.models.backbone import Weights
from fsv.models.efficientnet_lite import EfficientNetLite
from fsv.models.small_convnet import SmallConvNet
from fsv.models.vgg import VGG
from fsv.models.vgg import VGGClassifier

VGG16 = functools.partial(VGG, depth=16)
VGG19 = functools.partial(VGG, depth=19)

_REGISTRY: dict[str, Backbone] = {}


def register(backbone: Backbone) -> None:
  """Makes `backbone` a `config.model.name`, after checking it meets the contract
  (BackboneError naming what is missing). A name is registered once."""
  check(backbone)
  if backbone.name in _REGISTRY:
    raise BackboneError(f'backbone {backbone.name!r} is already registered')
  _REGISTRY[backbone.name] = backbone


for _backbone in (small_convnet.BACKBONES + vgg.BACKBONES + efficientnet_lite.BACKBONES
                  + xception.BACKBONES + resnet.BACKBONES + mobilenet_v2.BACKBONES
                  + convnext.BACKBONES):
  register(_backbone)


def names() -> tuple[str, ...]:
  """The registered `config.model.name`s."""
  return tuple(_REGISTRY)


NAMES = names()  # the built-in ones

# config.model.batch_norm of models with BatchNorm: 'frozen' runs every
# BatchNorm layer on its running statistics and never changes them (also
# in training steps: Keras's trainable=False); 'train' lets the layers whose
# parameters `train.trainable` selects normalise with batch statistics in
# training steps and update their running statistics. Frozen layers always
# keep theirs.
BATCH_NORM_MODES = ('frozen', 'train')


def get(name: str) -> Backbone:
  """The registered record of `config.model.name`."""
  if name not in _REGISTRY:
    raise ValueError(f'unknown model {name!r}; known: {names()}')
  return _REGISTRY[name]


def default_config(name: str):
  return get(name).default_config()


def input_rescale(name: str) -> float:
  """The `augment.rescale` the model expects of 0-255 pixels by default."""
  return get(name).input_rescale


def default_input_size(name: str) -> tuple[int, int]:
  return tuple(get(name).default_input_size)


def preprocessing(name: str) -> str:
  """In words, what the model does to 0-255 pixels before its first layer."""
  return get(name).preprocessing


def gradcam_layer(name: str) -> str:
  """The `layers.Tap` whose activations Grad-CAM explains."""
  return get(name).gradcam_layer


def min_input_size(config) -> int:
  return get(config.name).min_input_size(config)


def layer_groups(config) -> dict[str, tuple[str, ...]]:
  """Group name -> parameter patterns ('@<name>' in `train.trainable`)."""
  return dict(get(config.name).layer_groups(config))


def has_head(config) -> bool:
  """Whether the model is a frozen-able base plus a `head` (bottleneck training)."""
  return get(config.name).head_of is not None


def head_of(config, model: nn.Module) -> nn.Module:
  """The module that the `head` parameters of `model` belong to."""
  return get(config.name).head_of(model)


def validate_config(config, error) -> None:
  """Checks `config.model` (and what it needs of the rest of the run's config)."""
  model = config.model
  if model.num_classes < 0 or model.num_classes == 1:
    raise error(f'config.model.num_classes={model.num_classes}: must be 0 '
                '(take it from the data) or at least 2')
  record = get(model.name)
  if record.input_rescale == 1 and config.augment.rescale != 1:
    raise error(
        f'config.augment.rescale={config.augment.rescale}: {model.name} applies its own '
        f'{record.preprocessing} to 0-255 pixels; rescaling them first (the blog\'s '
        'rescale=1./255) would feed the ImageNet weights the wrong inputs. Set it to 1.')
  if 'batch_norm' in model and model.batch_norm not in BATCH_NORM_MODES:
    raise error(f'config.model.batch_norm={model.batch_norm!r}: must be one of '
                f'{BATCH_NORM_MODES}')
  record.validate_config(config, error)


def num_outputs(num_classes: int) -> int:
  """Two classes share one sigmoid unit (as in Keras); more get a softmax."""
  return 1 if num_classes == 2 else num_classes


def build(config, num_classes: int, dtype: str = 'float32') -> nn.Module:
  """The model for `config.model` with a head for `num_classes`, computing
  its activations in `dtype` (the run's `config.dtype`, fsv/precision.py)."""
  return get(config.name).build(config, num_outputs(num_classes), jnp.dtype(dtype))


def _flat_random_bits(key: jax.Array, bit_width: int, shape: tuple) -> jax.Array:
  return _THREEFRY.random_bits(key, bit_width, (math.prod(shape),)).reshape(shape)


# Threefry drawing every array at rank 1, then reshaped: with partitionable
# threefry (jax's default) the counters are the flattened index, so these are
# the same bits, but XLA on CPU compiles a draw of rank 4 (a conv kernel) in
# about 2 s and one of rank 1 in 0.3 s: drawing EfficientNet-Lite0's weights
# compiled in 27 s, now 15 s, the small convnet's in 5.1 s, now 2.0 s.
_THREEFRY = jax.extend.random.threefry_prng_impl
_FLAT_THREEFRY = jax.extend.random.define_prng_impl(
    key_shape=_THREEFRY.key_shape, seed=_THREEFRY.seed, split=_THREEFRY.split,
    random_bits=_flat_random_bits, fold_in=_THREEFRY.fold_in, name='threefry2x32_flat',
    tag='fry_flat')


def _drawing_flat(key: jax.Array) -> jax.Array:
  """`key`, drawing its arrays at rank 1 where that gives the same bits."""
  if str(jax.random.key_impl(key)) != _THREEFRY.name or not jax.config.jax_threefry_partitionable:
    return key
  return jax.random.wrap_key_data(jax.random.key_data(key), impl=_FLAT_THREEFRY)


@functools.partial(jax.jit, static_argnums=(0, 2, 3))
def _draw(model: nn.Module, key: jax.Array, image_shape: tuple,
          paths: tuple[tuple[str, ...], ...] | None) -> dict:
  # XLA drops the draws of the leaves not asked for, and flax draws each leaf
  # from its own path's key, so a leaf is the same whatever else is drawn.
  drawn = traverse_util.flatten_dict(model.init(_drawing_flat(key),
                                                jnp.zeros((1,) + image_shape, jnp.float32)))
  return {path: drawn[path] for path in (drawn if paths is None else paths)}


def random_variables(model: nn.Module, key: jax.Array, image_shape) -> dict:
  """`model.init(key, images)`'s variables for images of `image_shape` (h, w, 3),
  as one compiled program (op by op, VGG16's took about 22 s on a 2-core CPU)."""
  return traverse_util.unflatten_dict(_draw(model, key, tuple(image_shape), None))


def init_variables(config, model: nn.Module, key: jax.Array, image_shape) -> dict:
  """Initial variables ('params', and 'batch_stats' for models with BatchNorm):
  pretrained weights where the model has them, random elsewhere.

  Only what the weights leave is drawn: compiling the random draws of a whole
  VGG16 or EfficientNet-Lite takes XLA 10-25 s on a 2-core CPU, for numbers
  the weights would replace.
  """
  image_shape = tuple(image_shape)
  shapes = jax.eval_shape(model.init, key,
                          jax.ShapeDtypeStruct((1,) + image_shape, jnp.float32))
  weights = get(config.name).weights
  flat = traverse_util.flatten_dict(weights.load(config, shapes) if weights else shapes)
  undrawn = tuple(path for path, leaf in flat.items() if isinstance(leaf, jax.ShapeDtypeStruct))
  flat.update(_draw(model, key, image_shape, undrawn))
  return traverse_util.unflatten_dict(flat)


def uses_uncached_weights(config) -> bool:
  """Whether the model would fetch pretrained weights that are not in the cache."""
  weights = get(config.name).weights
  return (bool(config.get('weights')) and config.weights == 'imagenet' and weights is not None
          and not weights.in_cache(config))


def imagenet_model(name: str, cache_dir: str = '', weights: str = 'imagenet'
                   ) -> tuple[nn.Module, dict, tuple[int, int]]:
  """(module, variables, input size) of a backbone's 1000-class ImageNet
  classifier: the ImageNet weights, or those of `weights`, a file with the top
  (e.g. a Keras .h5 of the same architecture)."""
  classifier = get(name).imagenet
  if classifier is None:
    raise ValueError(f'{name} has no ImageNet classifier; models that do: '
                     f'{tuple(n for n in names() if get(n).imagenet)}')
  return (*classifier.load(weights, cache_dir), tuple(classifier.input_size))


__all__ = ['BATCH_NORM_MODES', 'Backbone', 'BackboneError', 'EfficientNetLite',
           'ImageNetClassifier', 'NAMES', 'SmallConvNet', 'VGG', 'VGG16', 'VGG19',
           'VGGClassifier', 'Weights', 'build', 'default_config',
           'default_input_size', 'get', 'gradcam_layer', 'has_head', 'head_of', 'imagenet_model',
           'init_variables', 'layer_groups', 'names', 'num_outputs', 'preprocessing',
           'random_variables', 'register']
