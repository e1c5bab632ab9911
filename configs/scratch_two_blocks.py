r"""Two conv blocks from scratch for a tiny two-class folder (a car-vs-bus
classifier from 100 images per class is the recipe this follows).

  python -m experiments.run --config=configs/scratch_two_blocks.py \
      --config.data.dir=DIR --workdir=workdirs/two_blocks

DIR holds train/<class>/, validation/<class>/ and test/<class>/; without
validation/, add --config.data.validation_split=0.2 to hold out 20% of train
to choose the epoch on. On cats vs dogs:
--config.data.dir=../shared/data/cats_vs_dogs_small.
`--config=configs/scratch_two_blocks.py:smoke` runs the pipeline on generated images.

The recipe: two blocks of a 3x3 convolution with ReLU and 2x2 max-pooling
(32 and 64 filters), a Dense ReLU layer (64 units), one sigmoid unit; Adam;
augmentation with rotation, shift, shear, flip and zoom; 50 epochs at batch
32, 150x150 inputs rescaled by 1/255. The source does not publish a figure
for cats vs dogs. Measured on ../shared/data/cats_vs_dogs_small (2026-12-03,
2-core Intel Xeon VM, family 6 model 167): 79.7% validation (best epoch 42
of 50), 76.3% test, 117 minutes beside other jobs (about 70 alone).
"""
from fsv import config as config_lib


def get_config(arg: str = ''):
  _, smoke = config_lib.arguments(arg)
  config = config_lib.base('small_convnet')
  config.data.source = 'folder'
  config.model.update(dict(conv_features=(32, 64), dense_units=64, flatten_dropout=0.0,
                           dense_dropout=0.0))
  config.augment.update(dict(rotation_range=20.0, width_shift_range=0.1,
                             height_shift_range=0.1, shear_range=0.2, zoom_range=0.2,
                             horizontal_flip=True))
  config.train.epochs = 50
  config.train.batch_size = 32
  config.train.optimizer = 'adam'
  config.train.learning_rate = 1e-3
  return config_lib.smoke(config) if smoke else config


def get_sweep(arg: str = ''):
  """The seeds `python -m experiments.sweep` runs of this config (README: Ablations)."""
  del arg  # the same seeds for every variant
  return {'seed': range(3)}
