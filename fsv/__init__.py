"""fsv: few-sample vision. Image classification from little data, in JAX/Flax.

The notebook API, without absl flags:

  import fsv
  config = fsv.base_config()                      # every key, with defaults
  config.data.dir = '../shared/data/cats_vs_dogs_small'
  config.train.epochs = 5
  data = fsv.load_dataset(config.data)           # decoded once, cached on disk
  result = fsv.fit(config, dataset=data, workdir='workdirs/nb')  # workdir optional
  result.history[-1], result.results['test_accuracy']
  model = fsv.build_model(config.model, data.num_classes)
  probabilities = fsv.predict(result, images)     # uint8 (n, H, W, 3)
  fsv.imagenet_top5('efficientnet_lite0', 'cat.jpg')  # [(class name, probability)] * 5

Configs from files: `fsv.load_config('configs/scratch_aug.py')`.
"""
from fsv import allocator

allocator.tune_glibc_malloc()  # before jax allocates anything; see allocator.py

from fsv.config import ConfigError  # noqa: E402
from fsv.config import base as base_config
from fsv.config import validate as validate_config
from fsv.data import DataError
from fsv.data import load as load_dataset
from fsv.models import build as build_model
from fsv.report import WorkdirError
from fsv.train import NonFiniteLossError
from fsv.train import Result
from fsv.train import fit
from fsv.api import load_config
from fsv.api import predict
from fsv.imagenet import imagenet_top5

__all__ = [
    'ConfigError', 'DataError', 'NonFiniteLossError', 'Result', 'WorkdirError',
    'base_config', 'build_model', 'fit', 'imagenet_top5', 'load_config', 'load_dataset',
    'predict', 'validate_config',
]
