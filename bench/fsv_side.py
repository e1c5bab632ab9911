"""fsv's side: the config files, `steps.make_train_step`, `partition.optimizer`
and `fsv.fit` that a user runs, so that every change to fsv shows up here.

Models and optimizers come from configs/*.py; the augmentation and the
book's optimizer (RMSprop 1e-4) are set to what the Keras side runs.
"""
from __future__ import annotations

import os
import shutil
import tempfile

import jax
import jax.numpy as jnp
import numpy as np

import fsv
from fsv import augment
from fsv import inference
from fsv import models
from fsv import parallel
from fsv import partition
from fsv import precision
from fsv import steps
from bench import rows

# The book's optimizer, which the Keras side compiles.
BOOK_OPTIMIZER = dict(optimizer='rmsprop', learning_rate=1e-4, schedule='constant')


def config_for(spec: str, settings: dict, **changes):
  """The config of `spec` (a shipped config's name or a path, as
  `fsv.load_config` takes it) at the row's batch and image size, with
  `changes` (group name -> keys), validated."""
  config = fsv.load_config(spec)
  config.data.image_size = (settings['image_size'],) * 2
  config.train.batch_size = settings['batch_size']
  config.dtype = settings['dtype']
  for group, values in changes.items():
    config[group].update(values)
  if config.model.name.startswith('vgg'):
    config.model.weights = ''  # random: the weights do not change the speed
  return fsv.validate_config(config)


def _info() -> dict:
  device = jax.devices()[0]
  return {'backend': 'jax', 'platform': device.platform, 'device': device.device_kind}


def _batches(settings: dict) -> tuple[np.ndarray, np.ndarray, list[slice]]:
  batch, steps = settings['batch_size'], settings['steps']
  images, labels = rows.random_images(batch * steps, settings['image_size'],
                                      settings['seed'])
  return images, labels, [slice(i * batch, (i + 1) * batch) for i in range(steps)]


def train_setup(config, settings: dict):
  """fsv.fit's jitted train step and its first state, laid out as fit lays
  them out, and the row's in-memory batches: (train_step, state, images,
  labels, batches)."""
  images, labels, batches = _batches(settings)
  model = models.build(config.model, 2, config.dtype)
  params = models.init_variables(config.model, model, jax.random.PRNGKey(config.seed),
                                 images.shape[1:])['params']
  tx = partition.optimizer(config.train, params, len(batches))
  mesh = parallel.make_mesh()
  train_step = steps.make_train_step(model, tx,
                                     augment.AugmentConfig.from_config(config.augment), mesh)
  # Laid out on the mesh as fit lays it out: a state left where it was made
  # compiled the step again on its second call (the first call's output is laid out).
  state = parallel.put_state(mesh, steps.TrainState(
      step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
      loss_scale=precision.loss_scale(config.dtype)))
  return train_step, state, images, labels, batches


def _train_steps(config, settings: dict) -> rows.Task:
  """fsv.fit's inner loop: its jitted step and optimizer over in-memory batches."""
  train_step, state, images, labels, batches = train_setup(config, settings)
  key = jax.random.PRNGKey(settings['seed'])

  def run() -> int:
    nonlocal state
    for i, batch in enumerate(batches):
      state, metrics = train_step(state, images[batch], labels[batch],
                                  jax.random.fold_in(key, i))
      float(metrics['loss'])  # as fsv.fit, which checks every step's loss
    return len(images)

  return rows.Task(run, _info())


def convnet_train_step(settings: dict) -> rows.Task:
  return _train_steps(config_for('scratch', settings), settings)


def convnet_train_step_augmented(settings: dict) -> rows.Task:
  config = config_for('scratch_aug', settings, augment=rows.AUGMENTATION,
                      train=BOOK_OPTIMIZER)
  return _train_steps(config, settings)


def vgg16_finetune_step(settings: dict) -> rows.Task:
  """configs/finetune.py's second phase (block5 + head, SGD) without augmentation."""
  no_augmentation = fsv.base_config('vgg16').augment.to_dict()
  return _train_steps(config_for('finetune', settings, augment=no_augmentation), settings)


def vgg16_forward(settings: dict) -> rows.Task:
  """The bottleneck features of `fsv.inference.features`, batch by batch,
  gathered on the host."""
  config = config_for('bottleneck', settings)
  images, _, _ = _batches(settings)
  model = models.build(config.model, 2, config.dtype)
  variables = models.init_variables(config.model, model, jax.random.PRNGKey(config.seed),
                                    images.shape[1:])

  def run() -> int:
    return len(inference.features(model, variables, images, settings['batch_size']))

  return rows.Task(run, _info())


def epoch_from_jpeg(settings: dict) -> rows.Task:
  """`fsv.fit` for one epoch on the JPEG folder's train split, decoding every time.

  The data folder seen by fit holds only `train/` (a link), so no validation
  or test evaluation is timed; each repetition gets an empty decode cache.
  """
  config = config_for('scratch_aug', settings, augment=rows.AUGMENTATION,
                      train=dict(BOOK_OPTIMIZER, epochs=1, evaluate_with='last'))
  folder = tempfile.TemporaryDirectory(prefix='fsv-bench-')
  os.symlink(os.path.join(settings['data_dir'], 'train'), os.path.join(folder.name, 'train'))
  config.data.dir = folder.name

  def prepare() -> None:
    if config.data.cache_dir:
      shutil.rmtree(config.data.cache_dir)
    config.data.cache_dir = tempfile.mkdtemp(prefix='cache-', dir=folder.name)

  def run() -> int:
    return len(fsv.fit(config).dataset.splits['train'].labels)

  return rows.Task(run, _info(), prepare)  # `folder` lives (and is removed) with it


TASKS = {
    'convnet_train_step': convnet_train_step,
    'convnet_train_step_augmented_imagedatagenerator': convnet_train_step_augmented,
    'convnet_train_step_augmented_layers': convnet_train_step_augmented,
    'epoch_from_jpeg': epoch_from_jpeg,
    'vgg16_forward': vgg16_forward,
    'vgg16_finetune_step': vgg16_finetune_step,
}
