"""Where fsv caches what it computes once: decoded data, weights, features."""
from __future__ import annotations

import os
import pathlib


def cache_root(override: str = '') -> pathlib.Path:
  """`override` if given, else $FSV_CACHE_DIR, else ~/.cache/fsv."""
  base = override or os.environ.get('FSV_CACHE_DIR') or '~/.cache/fsv'
  return pathlib.Path(base).expanduser()
