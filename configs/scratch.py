r"""The book's small convnet trained from scratch, no augmentation, no dropout.

  python -m experiments.run --config=configs/scratch.py \
      --config.data.dir=../shared/data/cats_vs_dogs_small --workdir=workdirs/scratch

Deep Learning with Python (ch. 5, listing 5.5): overfits after ~5 epochs and
reaches about 71% test accuracy on the 2,000-image cats vs dogs subset.
"""
from fsv import config as config_lib


def get_config():
  config = config_lib.base('small_convnet')
  config.data.dir = '../shared/data/cats_vs_dogs_small'
  config.model.flatten_dropout = 0.0
  config.train.epochs = 30
  config.train.batch_size = 20
  config.train.optimizer = 'rmsprop'
  config.train.learning_rate = 1e-4
  return config
