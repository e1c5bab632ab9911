r"""Writes a PNG grid of augmented versions of one image, as the blog saves previews.

  python -m experiments.preview_augment --image=PATH/cat.1.jpg \
      --config=configs/scratch_aug.py --out=preview.png --count=15
"""
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
_IMAGE = flags.DEFINE_string('image', None, 'Image file to augment.', required=True)
_OUT = flags.DEFINE_string('out', 'augment_preview.png', 'PNG file to write.')
_COUNT = flags.DEFINE_integer('count', 15, 'Number of augmented versions.')
_SEED = flags.DEFINE_integer('seed', 0, 'PRNG seed.')


def main(argv):
  del argv
  config = fsv.validate_config(_CONFIG.value or fsv.load_config('scratch_aug'))
  image, _ = decode.decode_file(_IMAGE.value, tuple(config.data.image_size),
                                config.data.interpolation)
  # Shown in 0-255 whatever the config's rescale, so the preview looks like a photo.
  aug = augment.AugmentConfig.from_config(dict(config.augment, rescale=1.0))
  batch = np.repeat(image[None], _COUNT.value, axis=0)
  out = np.asarray(augment.random_transform(batch, jax.random.PRNGKey(_SEED.value), aug))
  pictures = np.clip(out, 0, 255).astype(np.uint8)
  plots.save(plots.image_grid(pictures, [''] * len(pictures), columns=5), _OUT.value, dpi=80)
  print(f'wrote {_OUT.value}')


if __name__ == '__main__':
  cli.run(main)
