r"""Writes a PNG grid of augmented versions of one image, as the blog saves previews.

  python -m experiments.preview_augment --image=PATH/cat.1.jpg \
      --config=configs/scratch_aug.py --out=preview.png --count=15
"""
from absl import app
from absl import flags
import jax
import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
from ml_collections import config_flags  # noqa: E402
import numpy as np  # noqa: E402

import fsv  # noqa: E402
from fsv import augment  # noqa: E402
from fsv.data import decode  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/scratch_aug.py',
                                          'Config whose `augment` settings to preview.')
_IMAGE = flags.DEFINE_string('image', None, 'Image file to augment.', required=True)
_OUT = flags.DEFINE_string('out', 'augment_preview.png', 'PNG file to write.')
_COUNT = flags.DEFINE_integer('count', 15, 'Number of augmented versions.')
_SEED = flags.DEFINE_integer('seed', 0, 'PRNG seed.')


def main(argv):
  del argv
  config = fsv.validate_config(_CONFIG.value)
  try:
    image, _ = decode.decode_file(_IMAGE.value, tuple(config.data.image_size),
                                  config.data.interpolation)
  except fsv.DataError as e:
    raise SystemExit(f'error: {e}')
  # Shown in 0-255 whatever the config's rescale, so the preview looks like a photo.
  aug = augment.AugmentConfig.from_config(dict(config.augment, rescale=1.0))
  batch = np.repeat(image[None], _COUNT.value, axis=0)
  out = np.asarray(augment.random_transform(batch, jax.random.PRNGKey(_SEED.value), aug))
  columns = min(5, _COUNT.value)
  rows = -(-_COUNT.value // columns)
  fig, axes = plt.subplots(rows, columns, figsize=(2.2 * columns, 2.2 * rows), squeeze=False)
  for ax in axes.ravel():
    ax.axis('off')
  for ax, picture in zip(axes.ravel(), out):
    ax.imshow(np.clip(picture, 0, 255).astype(np.uint8))
  fig.tight_layout()
  fig.savefig(_OUT.value, dpi=80)
  print(f'wrote {_OUT.value}')


if __name__ == '__main__':
  app.run(main)
