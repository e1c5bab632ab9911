"""Ports of keras.applications backbones: their official files, and their
`Weights` and `ImageNetClassifier` records.

Every such backbone loads Keras's files the same way
(fsv/pretrained/keras_applications.py); what differs is a `Port`: its name,
the official files and, for models with auto-named layers, the renaming.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Mapping, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from fsv.models import backbone

IMAGENET_CLASSES = 1000
Layers = Mapping[str, Sequence[np.ndarray]]


def _same(layers: Layers) -> Layers:
  return layers


@dataclasses.dataclass(frozen=True)
class Port:
  """A backbone ported from keras.applications, as its weights loader sees it.

  name: fsv's name ('resnet50');
  files: include_top -> (URL, md5 or sha256, or None where Keras pins none)
    of the official ImageNet file, as keras.applications pins them;
  rename: a file's {layer: arrays} with the port's names for Keras's
    auto-named layers (the identity for models whose layers Keras names).
  """
  name: str
  files: Mapping[bool, Tuple[str, str]]
  rename: Callable[[Layers], Layers] = _same


def records(port: Port, build: Callable, default_config: Callable,
            input_size: Tuple[int, int]) -> Tuple[backbone.Weights, backbone.ImageNetClassifier]:
  """(weights, imagenet) records of the backbone `port` describes.

  build(model_config, num_outputs, dtype, include_top) -> the module.
  """
  def loader():
    # Imported when weights are asked for: fsv.pretrained imports the models.
    from fsv.pretrained import keras_applications
    return keras_applications

  def load(config, variables):
    if not config.weights:
      return variables
    return loader().load(port, config.weights, variables, False, config.cache_dir)

  def in_cache(config):
    return loader().in_cache(port, False, config.cache_dir)

  def classifier(weights, cache_dir):
    model = build(default_config(), IMAGENET_CLASSES, jnp.float32, include_top=True)
    shapes = jax.eval_shape(model.init, jax.random.key(0),
                            jnp.zeros((1, *input_size, 3), jnp.float32))
    return model, loader().load(port, weights, shapes, True, cache_dir, keep=())

  return (backbone.Weights(load=load, in_cache=in_cache),
          backbone.ImageNetClassifier(load=classifier, input_size=tuple(input_size)))
