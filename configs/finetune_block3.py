r"""VGG16 fine-tuned from block3_conv1 upward, as the R edition of the book does.

  python -m experiments.run --config=configs/finetune_block3.py \
      --config.data.dir=../shared/data/cats_vs_dogs_small --workdir=workdirs/finetune_block3

`--config=configs/finetune_block3.py:smoke` runs the pipeline on generated images.

Deep Learning with R (ch. 5): the head is trained first on the frozen conv
base, then `unfreeze_weights(conv_base, from = "block3_conv1")` and RMSprop
1e-5 with the book's augmentation, batch 20, 100 epochs: 96.5% test. Here
the head is trained on cached bottleneck features (as configs/finetune.py),
then blocks 3-5 and the head train end to end. On the project's 2-core AMD
EPYC VM (2026-12-04) its training step runs at 2.9 images/s (batch 20,
150x150; 1.2 with XLA's convolutions, before the Winograd ones), so an
epoch of 2,000 images and the validation pass take 13-20 minutes and the
100 epochs about a day: a run for a GPU. Measured so far, the first 3
epochs (fsv 9cd9196-e4ef609, stopped, then closed with
`--config.train.epochs=3 --allow_changes=train.epochs`): validation
97.6%, 96.9%, 97.5% (losses 0.099, 0.140, 0.078), none above the head's
97.6%, so the evaluated model is still the head on the frozen base: 96.5%
test. The same command with `--config.train.epochs=100
--allow_changes=train.epochs` trains on from epoch 3.
"""
import fsv
from fsv import config as config_lib


def get_config(arg: str = ''):
  _, smoke = config_lib.arguments(arg)
  config = fsv.load_config('finetune')
  config.train.trainable = ('block3_.*', 'block4_.*', 'block5_.*', 'head/.*')
  config.train.epochs = 100
  config.train.optimizer = 'rmsprop'
  config.train.learning_rate = 1e-5
  config.train.momentum = 0.0
  return config_lib.smoke(config) if smoke else config


def get_sweep(arg: str = ''):
  """The seeds `python -m experiments.sweep` runs of this config (README: Ablations)."""
  del arg  # the same seeds for every variant
  return {'seed': range(3)}
