r"""The book's small convnet from scratch with data augmentation and dropout.

  python -m experiments.run --config=configs/scratch_aug.py \
      --config.data.dir=../shared/data/cats_vs_dogs_small --workdir=workdirs/scratch_aug

Data: TFDS cats_vs_dogs (1000/500/500 per class; prepared on first use, which
needs the `tfds` extra) unless --config.data.dir=DIR names a folder of it.
`--config=configs/scratch_aug.py:smoke` runs the whole pipeline on generated
images in well under a minute.

Deep Learning with Python (ch. 5, listing 5.11-5.12): ImageDataGenerator with
rotation 40, shifts 0.2, shear 0.2, zoom 0.2, horizontal flip; Dropout(0.5)
before the Dense(512); 82% test accuracy after 100 epochs of RMSprop(1e-4)
at 3,200 images an epoch (320,000 images seen).

Same model, augmentation and dropout here; the optimizer differs: Adam with
a short warmup and cosine decay, 90 one-pass epochs (180,000 images seen),
about 75 minutes on an idle 2-core Intel Xeon, about 105 on an AMD EPYC
(AVX2). The book's optimizer is
  --config.train.optimizer=rmsprop --config.train.learning_rate=1e-4
  --config.train.schedule=constant --config.train.epochs=100
  --config.train.steps_per_epoch=100
Measured here: 84.7% test (85.1% validation, epoch 83 of 90; README's
results table); again on the AMD EPYC with the Winograd convolutions
(2026-12-04), 83.0% test (85.0% validation, epoch 81). An earlier 60
epochs at learning rate 1e-3 gave 80.6% (81.7% validation): it idled near
chance for 10 epochs and ended with train and validation accuracy equal,
i.e. undertrained, hence the lower rate and the longer run.
"""
from fsv import config as config_lib


def get_config(arg: str = ''):
  _, smoke = config_lib.arguments(arg)
  config = config_lib.base('small_convnet')
  config_lib.cats_vs_dogs(config)
  config.augment.rotation_range = 40.0
  config.augment.width_shift_range = 0.2
  config.augment.height_shift_range = 0.2
  config.augment.shear_range = 0.2
  config.augment.zoom_range = 0.2
  config.augment.horizontal_flip = True
  config.model.flatten_dropout = 0.5
  config.train.epochs = 90
  config.train.batch_size = 32
  config.train.optimizer = 'adam'
  config.train.learning_rate = 5e-4
  config.train.schedule = 'warmup_cosine'
  config.train.warmup_epochs = 3
  return config_lib.smoke(config) if smoke else config


def get_sweep(arg: str = ''):
  """The seeds `python -m experiments.sweep` runs of this config (README: Ablations)."""
  del arg  # the same seeds for every variant
  return {'seed': range(3)}
