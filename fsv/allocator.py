"""Keeps glibc malloc from returning XLA's large temporaries to the kernel.

XLA's CPU backend allocates and frees many multi-megabyte buffers every
step. With glibc's defaults each one is a fresh mmap (or trimmed heap) and
every page is faulted in again: on this project's 2-core VM that made a
training step of the small convnet twice as slow (17-21 vs 36-42 images/s,
4.4M vs 0.5M page faults per run). One arena, no trimming and no mmap at
all let freed buffers be reused instead: glibc caps the mmap threshold at
32 MB, and buffers above it (the first convolution's output at batch 32 is
90 MB) were still mapped and faulted in afresh each step until mmap was
turned off (22.4 to 26.7 images/s; peak memory grows, BENCHMARKS.md). It
must run before the XLA thread pool allocates, so `import fsv` does it;
FSV_MALLOC_TUNING=0 opts out. Elsewhere than glibc (macOS, musl) it does
nothing.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os

_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8

_SETTINGS = (
    (_M_ARENA_MAX, 1),                       # threads share one arena: freed memory is reused
    (_M_MMAP_THRESHOLD, 32 * 1024 * 1024),   # glibc's maximum
    (_M_MMAP_MAX, 0),                        # not even above it: the heap serves all
    (_M_TRIM_THRESHOLD, 2**31 - 1),          # keep freed heap instead of trimming it
    (_M_TOP_PAD, 512 * 1024 * 1024),         # grow the heap in large steps
)


def tune_glibc_malloc() -> bool:
  """Applies the settings; True when they took effect."""
  if os.environ.get('FSV_MALLOC_TUNING', '1') == '0':
    return False
  try:
    libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
    mallopt = libc.mallopt
  except (OSError, AttributeError):
    return False
  return all(mallopt(param, value) == 1 for param, value in _SETTINGS)
