"""fsv: few-sample vision. Image classification from little data, in JAX/Flax.

The notebook API, without absl flags:

  import fsv
  config = fsv.load_config('scratch_aug')        # a shipped config, or a path[:arg]
  config.data.dir = '../shared/data/cats_vs_dogs_small'
  config.train.epochs = 5
  data = fsv.load_dataset(config.data)           # decoded once, cached on disk
  run = fsv.fit(config, dataset=data, workdir='workdirs/nb')  # workdir optional
  run.history[-1], run.results['test_accuracy']

  run = fsv.load_run('workdirs/nb')              # later, in another process
  run.predict(['cat.jpg', 'photos/'], tta=True)  # (n, num_classes) probabilities
  run.evaluate('../shared/data/cats_vs_dogs_small').metrics
  run.explain(['cat.jpg']).write('gradcam/')     # Grad-CAM heatmaps
  fsv.imagenet_top5('efficientnet_lite0', 'cat.jpg')  # [(class name, probability)] * 5
  fsv.sweep(config, {'seed': range(5), 'train.learning_rate': [1e-4, 3e-4]},
            workdir='workdirs/sweep')                # mean and 95% interval per setting
  fsv.lr_find(config, data).suggestions          # fastai's learning-rate finder

Every error fsv raises on purpose derives from `fsv.Error` and says what to fix.
"""
from fsv import allocator

allocator.tune_glibc_malloc()  # before jax allocates anything; see allocator.py

from fsv import compile_cache  # noqa: E402  after the allocator: it imports jax

compile_cache.turn_on()  # XLA's programs kept on disk; see compile_cache.py

__version__ = '0.1.0'

from fsv.errors import ConfigError  # noqa: E402
from fsv.errors import DataError
from fsv.errors import Error
from fsv.errors import ExportError
from fsv.errors import NonFiniteLossError
from fsv.errors import WeightsError
from fsv.errors import WorkdirError
from fsv.config import base as base_config
from fsv.config import validate as validate_config
from fsv.data import load as load_dataset
from fsv.models import build as build_model
from fsv.run import Run
from fsv.phases import fit
from fsv.workdir import load_run
from fsv.config_files import load as load_config
from fsv.api import predict
from fsv.imagenet import imagenet_top5
from fsv.sweeps import run as sweep
# After this, `fsv.lr_find` is the function; the module is `from fsv.lr_find import ...`.
from fsv.lr_find import lr_find

__all__ = [
    'ConfigError', 'DataError', 'Error', 'ExportError', 'NonFiniteLossError', 'Run',
    'WeightsError', 'WorkdirError', '__version__', 'base_config', 'build_model', 'fit',
    'imagenet_top5', 'load_config', 'load_dataset', 'load_run', 'lr_find', 'predict', 'sweep',
    'validate_config',
]
