"""Generated images as an image folder: data for smoke runs, with no download.

`data.source='synthetic'` writes JPEG files once under
`<cache>/synthetic/<key>/{train,validation,test}/{discs,squares}/` (a bright
disc or square of random size, place and colour on noise, so the classes
are learnable) and then reads them through the folder source, so a smoke
run exercises listing, decoding, the cache and everything after it.
`data.per_class` gives the counts, as for TFDS.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from typing import Callable

import ml_collections
import numpy as np
from PIL import Image, ImageDraw

from fsv.cache_dir import cache_root
from fsv.data import folder
from fsv.data.decode import Split, SplitReport

CLASSES = ('discs', 'squares')
_FILE_SIZE = (96, 72)  # (width, height): not the input size, so decoding resizes
_VERSION = 1           # part of the folder's key: bump when the drawing changes


def _draw(rng: np.random.Generator, label: int) -> Image.Image:
  width, height = _FILE_SIZE
  noise = rng.integers(0, 90, (height, width, 3), dtype=np.uint8)
  image = Image.fromarray(noise)
  radius = int(rng.integers(10, 22))
  x, y = int(rng.integers(radius, width - radius)), int(rng.integers(radius, height - radius))
  colour = tuple(int(c) for c in rng.integers(150, 256, 3))
  box = (x - radius, y - radius, x + radius, y + radius)
  (ImageDraw.Draw(image).ellipse if label == 0 else ImageDraw.Draw(image).rectangle)(
      box, fill=colour)
  return image


def _write(root: str, per_class: dict[str, int]) -> None:
  """The folder, written in a temporary folder and renamed: complete or absent."""
  parent = os.path.dirname(root)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix='.synthetic.', dir=parent)
  try:
    rng = np.random.default_rng(_VERSION)
    for split in (s for s in folder.SPLITS if per_class[s]):
      for label, name in enumerate(CLASSES):
        os.makedirs(os.path.join(tmp, split, name))
        for i in range(per_class[split]):
          _draw(rng, label).save(os.path.join(tmp, split, name, f'{name}.{i}.jpg'),
                                 quality=90)
    os.rename(tmp, root)
  except OSError:
    if not os.path.isdir(root):  # another process finished the same folder first
      raise
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


def load(config: ml_collections.ConfigDict,
         check: Callable[[tuple[str, ...], tuple[str, ...]], None]
         ) -> tuple[tuple[str, ...], dict[str, tuple[Split, SplitReport]]]:
  """The generated folder for `config.per_class`, read as the folder source reads."""
  per_class = {split: int(config.per_class[split]) for split in folder.SPLITS}
  key = hashlib.sha256(json.dumps(dict(version=_VERSION, per_class=per_class),
                                  sort_keys=True).encode()).hexdigest()[:16]
  root = str(cache_root(config.cache_dir) / 'synthetic' / key)
  if not os.path.isdir(root):
    _write(root, per_class)
  return folder.load(ml_collections.ConfigDict(dict(config.to_dict(), dir=root)), check)
