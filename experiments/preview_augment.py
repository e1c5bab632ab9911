r"""Writes a PNG grid of augmented versions of images, as the blog saves previews.

  python -m experiments.preview_augment --image=PATH/cat.1.jpg \
      --config=configs/scratch_aug.py --out=preview.png --count=15

Any op list previews with `--config.augment.ops=...`, e.g.
`--config=scratch --config.augment.ops='flip_lr|randaugment|cutmix'` (a
config whose Keras keys are set, such as scratch_aug, needs 'keras' in the
list). Mixing ops need partners: `--image=a.jpg,b.jpg,...` fills the batch
with the images in turn, each its own label, and each tile's title gives
the mixed label weights. With a single image, mixup and cutmix mix the
image with itself (the tiles then show only the image ops' effect).
"""
import os

from absl import flags
import jax
from ml_collections import config_flags
import numpy as np

import fsv
from fsv import augment
from fsv import cli
from fsv import plots
from fsv.data import decode

# No default file: config_flags would parse a default, and the --config.*
# overrides with it, while this module is imported, before errors are caught.
_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Config (a path or a shipped name) whose `augment` settings to '
    'preview; by default configs/scratch_aug.py.')
_IMAGE = flags.DEFINE_list('image', None, 'Image file(s) to augment, comma-separated; '
                           'with several, mixing ops mix them.', required=True)
_OUT = flags.DEFINE_string('out', 'augment_preview.png', 'PNG file to write.')
_COUNT = flags.DEFINE_integer('count', 15, 'Number of augmented versions.')
_SEED = flags.DEFINE_integer('seed', 0, 'PRNG seed.')


def titles(targets: np.ndarray, names: list) -> list:
  """Each tile's mixed label weights, largest first ('' when nothing mixes)."""
  out = []
  for target in targets:
    order = [i for i in np.argsort(-target, kind='stable') if target[i] > 0]
    out.append(' + '.join(f'{target[i]:.2f} {names[i]}' for i in order)
               if len(order) > 1 else '')
  return out


def main(argv):
  del argv
  config = fsv.validate_config(_CONFIG.value or fsv.load_config('scratch_aug'))
  images = [decode.decode_file(path, tuple(config.data.image_size),
                               config.data.interpolation)[0] for path in _IMAGE.value]
  # Shown in 0-255 whatever the config's rescale, so the preview looks like a photo.
  pipeline = augment.pipeline(dict(config.augment, rescale=1.0))
  labels = np.arange(_COUNT.value) % len(images)
  batch = np.stack([images[label] for label in labels])
  out, targets = jax.jit(augment.apply, static_argnums=(0, 4))(
      pipeline, batch, labels, jax.random.PRNGKey(_SEED.value), len(images))
  pictures = np.clip(np.asarray(out), 0, 255).astype(np.uint8)
  names = [os.path.basename(path) for path in _IMAGE.value]
  shown = titles(np.asarray(targets), names) if pipeline.mixes_labels else [''] * len(pictures)
  plots.save(plots.image_grid(pictures, shown, columns=5), _OUT.value, dpi=80)
  print(f'wrote {_OUT.value}')


if __name__ == '__main__':
  cli.run(main)
