r"""The book's small convnet trained from scratch, no augmentation, no dropout.

  python -m experiments.run --config=configs/scratch.py \
      --config.data.dir=../shared/data/cats_vs_dogs_small --workdir=workdirs/scratch

Data: TFDS cats_vs_dogs (1000/500/500 per class; prepared on first use, which
needs the `tfds` extra) unless --config.data.dir=DIR names a folder of it.
`--config=configs/scratch.py:smoke` runs the whole pipeline on generated
images in well under a minute.

Deep Learning with Python (ch. 5, listing 5.5): overfits after ~5 epochs and
reaches about 71% test accuracy on the 2,000-image cats vs dogs subset.
"""
from fsv import config as config_lib


def get_config(arg: str = ''):
  _, smoke = config_lib.arguments(arg)
  config = config_lib.base('small_convnet')
  config_lib.cats_vs_dogs(config)
  config.model.flatten_dropout = 0.0
  config.train.epochs = 30
  config.train.batch_size = 20
  config.train.optimizer = 'rmsprop'
  config.train.learning_rate = 1e-4
  return config_lib.smoke(config) if smoke else config


def get_sweep(arg: str = ''):
  """The seeds `python -m experiments.sweep` runs of this config (README: Ablations)."""
  del arg  # the same seeds for every variant
  return {'seed': range(3)}
