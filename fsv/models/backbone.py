"""The backbone contract: what a model must declare to be trained, used and explained.

One `Backbone` record per registered name (`fsv.models.register`). Each
field is read by one part of fsv, named below, so a backbone that leaves one
out is refused when it is registered, on one line naming the field, not
with an AttributeError in the middle of a run.

The Flax module that `build` returns must:
- take `(images, train: bool = False)`: float32 images (n, H, W, C) of
  0..255 pixels times `input_rescale` (the model does the rest of its own
  preprocessing, `preprocessing`), and return logits (n, num_outputs);
- hold, when `head_of` is given, the head's parameters under the top-level
  name `head` (the `@head` group), and take `features_only=True` to return
  the head's input (the bottleneck features, cached by fsv/features.py);
- have, when `has_batch_norm`, a field `batch_norm_training: tuple[str, ...]`
  naming the layers whose BatchNorm normalises with batch statistics in
  training steps (set by fsv/phases.py from `model.batch_norm` and
  `train.trainable`; every other BatchNorm runs on its running statistics,
  Keras's `trainable=False`), and a `batch_norm` key in `default_config()`;
- tag with `layers.Tap(name=gradcam_layer)` the activations Grad-CAM explains.
"""
from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable, Mapping, Optional, Tuple

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

# The groups `train.trainable` names as '@base', '@top_block', '@head', so that
# "unfreeze the top block" means the same for every backbone.
LAYER_GROUPS = ('base', 'top_block', 'head')
HEAD = 'head'


@dataclasses.dataclass(frozen=True)
class Weights:
  """Pretrained weights of a backbone (`model.weights`, fsv/pretrained/).

  load(model_config, variables) -> variables with the weights that
      `model_config.weights` names put in ('' keeps `variables`);
  in_cache(model_config) -> whether `weights='imagenet'` loads without a
      download (checked before a run decodes any image).
  """
  load: Callable[[ml_collections.ConfigDict, dict], dict]
  in_cache: Callable[[ml_collections.ConfigDict], bool]


@dataclasses.dataclass(frozen=True)
class ImageNetClassifier:
  """The backbone's 1000-class classifier (`fsv.imagenet_top5`).

  load(weights, cache_dir) -> (Flax module, variables): with the ImageNet
  weights for weights='imagenet', or those of a file with the top.
  """
  load: Callable[[str, str], Tuple[nn.Module, dict]]
  input_size: Tuple[int, int]


@dataclasses.dataclass(frozen=True)
class Backbone:
  """A model fsv can train, with what each part of fsv needs to know of it.

  name               `config.model.name`;
  default_config     () -> its `config.model` keys (with `name`);
  validate_config    (run config, error class) -> None; raises `error` on a
                     bad `config.model` key (fsv/config.py, before any work);
  build              (model config, num_outputs, dtype) -> the Flax module;
  input_rescale      the `augment.rescale` it expects of 0..255 pixels; 1.0
                     means the model preprocesses 0..255 pixels itself, and
                     then other values are refused;
  preprocessing      that preprocessing in words ('' for none);
  default_input_size `data.image_size` by default, (height, width);
  min_input_size     (model config) -> the smallest square side it accepts;
  layer_groups       (model config) -> {'base', 'top_block', 'head'} (and
                     any more) -> parameter path patterns (fsv/partition.py);
  gradcam_layer      the `layers.Tap` Grad-CAM explains (fsv/explain.py);
  has_batch_norm     whether the module has the `batch_norm_training` field;
  head_of            (module) -> the module of its `head` parameters, for
                     training a head on cached features; None if it has no
                     separable head;
  weights            its pretrained weights, or None;
  imagenet           its ImageNet classifier, or None.
  """
  name: str
  default_config: Callable[[], ml_collections.ConfigDict]
  validate_config: Callable[[ml_collections.ConfigDict, type], None]
  build: Callable[[ml_collections.ConfigDict, int, Any], nn.Module]
  input_rescale: float
  preprocessing: str
  default_input_size: Tuple[int, int]
  min_input_size: Callable[[ml_collections.ConfigDict], int]
  layer_groups: Callable[[ml_collections.ConfigDict], Mapping[str, Tuple[str, ...]]]
  gradcam_layer: str
  has_batch_norm: bool = False
  head_of: Optional[Callable[[nn.Module], nn.Module]] = None
  weights: Optional[Weights] = None
  imagenet: Optional[ImageNetClassifier] = None


class BackboneError(ValueError):
  """A backbone that does not meet the contract, found when it is registered."""


def check(backbone: Backbone) -> None:
  """Raises BackboneError naming the first field `backbone` gets wrong.

  Builds its default config and module (no parameters are initialised) to
  check what the rest of fsv will ask of them.
  """
  def fail(message: str):
    raise BackboneError(f'backbone {getattr(backbone, "name", backbone)!r}: {message}')

  if not isinstance(backbone, Backbone):
    fail(f'is a {type(backbone).__name__}, not an fsv.models.Backbone')
  if not backbone.name or not backbone.name.isidentifier():
    fail('name must be a non-empty identifier (it is config.model.name)')
  for field in ('default_config', 'validate_config', 'build', 'min_input_size',
                'layer_groups'):
    if not callable(getattr(backbone, field)):
      fail(f'{field} must be callable, got {getattr(backbone, field)!r}')
  if not backbone.input_rescale > 0:
    fail(f'input_rescale={backbone.input_rescale!r} must be > 0')
  if not backbone.gradcam_layer:
    fail('gradcam_layer must name the layers.Tap whose activations Grad-CAM explains')
  config = backbone.default_config()
  if config.get('name') != backbone.name:
    fail(f'default_config().name is {config.get("name")!r}, not {backbone.name!r}')
  groups = backbone.layer_groups(config)
  missing = [g for g in LAYER_GROUPS if g not in groups]
  if missing:
    fail(f'layer_groups(config) lacks {missing} (needs {LAYER_GROUPS}: the '
         "'@base', '@top_block', '@head' of train.trainable)")
  size = backbone.min_input_size(config)
  if min(backbone.default_input_size) < size:
    fail(f'default_input_size={backbone.default_input_size} is below '
         f'min_input_size(config)={size}')
  module = backbone.build(config, 2, jnp.float32)
  if not isinstance(module, nn.Module):
    fail(f'build() returned a {type(module).__name__}, not a flax.linen.Module')
  if backbone.has_batch_norm:
    if 'batch_norm_training' not in {f.name for f in dataclasses.fields(module)}:
      fail('has_batch_norm, but its module has no field batch_norm_training')
    if 'batch_norm' not in config:
      fail("has_batch_norm, but default_config() has no 'batch_norm' key "
           "('frozen' or 'train')")
  if backbone.head_of is not None:
    if 'features_only' not in inspect.signature(type(module).__call__).parameters:
      fail('has head_of, but its module does not take features_only=True '
           '(the bottleneck features the head is trained on)')
    if not isinstance(backbone.head_of(module), nn.Module):
      fail('head_of(module) must return the flax.linen.Module of its head parameters')
  for field, kind in (('weights', Weights), ('imagenet', ImageNetClassifier)):
    value = getattr(backbone, field)
    if value is not None and not isinstance(value, kind):
      fail(f'{field} must be None or an fsv.models.{kind.__name__}')
