"""Keeps XLA's compiled programs on disk, so that a run skips compiling what
an earlier run (or an earlier `fsv.fit` in the same process) compiled.

Every `fsv.fit` traces its train step anew, and without this cache XLA
compiles it anew: on the project's 2-core CPU 9 of the 12 s of a tiny
small-convnet fit, and seconds to a minute per step function for the
pretrained backbones, paid again by every seed of a sweep and every rerun
in a notebook. JAX's persistent compilation cache keys a program by its
computation, jaxlib, XLA flags and device kind, but not by the CPU's
instruction set, which XLA compiles for: so the cache lives in one folder
per CPU (model and feature flags) and jaxlib version, under the cache root
(fsv/cache_dir.py), at most `MAX_BYTES` (least recently used programs go
first). `import fsv` turns it on unless the user chose a cache of their
own (JAX_COMPILATION_CACHE_DIR or `jax_compilation_cache_dir`);
FSV_COMPILATION_CACHE=0 opts out. It changes no result: a program read
back is the program XLA compiled.
"""
from __future__ import annotations

import hashlib
import os
import pathlib
import platform
from typing import Mapping, Optional

from absl import logging
import jax

from fsv import cache_dir

MAX_BYTES = 2 * 1024**3


def _cpu_description() -> str:
  """The model name and feature flags of the first CPU, as the kernel lists them."""
  try:
    with open('/proc/cpuinfo', encoding='utf-8', errors='replace') as f:
      first = f.read().split('\n\n', 1)[0]
  except OSError:
    return f'{platform.machine()} {platform.processor()}'
  return '\n'.join(line for line in first.splitlines()
                   if line.startswith(('model name', 'flags', 'Features', 'CPU part')))


def folder(environ: Mapping[str, str], configured: Optional[str]) -> Optional[pathlib.Path]:
  """Where fsv keeps the cache for this machine, or None where the user chose
  (a cache of their own in `configured`, or FSV_COMPILATION_CACHE=0)."""
  if environ.get('FSV_COMPILATION_CACHE', '1') == '0' or configured:
    return None
  machine = f'{_cpu_description()}\njaxlib {jax.lib.__version__}'
  name = 'cpu-' + hashlib.sha256(machine.encode()).hexdigest()[:16]
  return cache_dir.cache_root(environ.get('FSV_CACHE_DIR', '')) / 'xla' / name


def turn_on() -> Optional[pathlib.Path]:
  """Points JAX's persistent compilation cache at `folder(...)`; the folder,
  or None when the user's choice stands."""
  path = folder(os.environ, jax.config.jax_compilation_cache_dir)
  if path is None:
    return None
  try:
    path.mkdir(parents=True, exist_ok=True)
  except OSError as e:  # else JAX would warn at every compile
    logging.warning('XLA compilation cache off: cannot create %s (%s)', path,
                    e.strerror or e)
    return None
  jax.config.update('jax_compilation_cache_dir', str(path))
  jax.config.update('jax_compilation_cache_max_size', MAX_BYTES)
  return path
