r"""Dog breeds (133 classes) with a small convnet from scratch: the baseline
the dog-breed project starts from, before transfer learning
(configs/dog_breeds_xception.py).

  python -m experiments.run --config=configs/dog_breeds_scratch.py \
      --config.data.dir=dogImages --workdir=workdirs/dog_breeds_scratch

dogImages: see configs/dog_breeds_xception.py. Not available on the machine
this was written on, so not measured; `--config=configs/dog_breeds_scratch.py:smoke`
runs the pipeline on generated images.

The project's CNN: three convolutions (16, 32, 64 filters) with max-pooling,
global average pooling, Dense(133, softmax), RMSprop, 224x224 inputs
rescaled by 1/255, a few epochs: about 9% test (1% is chance). fsv's small
convnet has 3x3 convolutions and a Dense layer before the logits (here 133
units, ReLU, after global average pooling), trained 20 epochs with the
book's augmentation.
"""
from fsv import config as config_lib


def get_config(arg: str = ''):
  _, smoke = config_lib.arguments(arg)
  config = config_lib.base('small_convnet')
  config.data.update(source='folder', image_size=(224, 224))
  config.model.update(dict(conv_features=(16, 32, 64), dense_units=133, pooling='avg',
                           flatten_dropout=0.0, dense_dropout=0.0))
  config.augment.update(dict(rotation_range=20.0, width_shift_range=0.1,
                             height_shift_range=0.1, zoom_range=0.1, horizontal_flip=True))
  config.train.epochs = 20
  config.train.batch_size = 20
  config.train.optimizer = 'rmsprop'
  config.train.learning_rate = 1e-3
  return config_lib.smoke(config) if smoke else config


def get_sweep(arg: str = ''):
  """The seeds `python -m experiments.sweep` runs of this config (README: Ablations)."""
  del arg  # the same seeds for every variant
  return {'seed': range(3)}
