"""The schema of a run: every key a config may set, with its default.

A config file starts from `base()` and changes what differs. `base()` is
locked, so a misspelt key (in a file or a `--config.x.y=` override) fails at
once with the name of the key and a suggestion, instead of being ignored.
`validate()` checks the values before any work starts.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from absl import logging
import ml_collections

from fsv import augment
from fsv import losses
from fsv import models
from fsv import precision
from fsv.errors import ConfigError


FILL_MODES = ('nearest', 'reflect', 'wrap', 'constant')
OPTIMIZERS = ('rmsprop', 'adam', 'adamw', 'sgd')
SCHEDULES = ('constant', 'cosine', 'warmup_cosine', 'one_cycle', 'step')
SAMPLINGS = ('shuffle', 'balanced')
SOURCES = ('auto', 'folder', 'tfds', 'synthetic')
BAD_IMAGE_POLICIES = ('skip', 'error')
NONFINITE_LOSS_POLICIES = ('stop', 'ignore')
INTERPOLATIONS = ('nearest', 'bilinear', 'bicubic', 'lanczos')
# Larger images are refused before anything is allocated: 4096x4096 RGB is
# 48 MiB an image, far past what small-data classifiers are trained at.
MAX_IMAGE_SIDE = 4096


def base(model: str = 'small_convnet') -> ml_collections.ConfigDict:
  """All keys of a run with their defaults; `model` picks the model's keys."""
  config = ml_collections.ConfigDict()
  config.seed = 0
  # Activations' dtype; parameters, optimizer state, logits and losses stay
  # float32 (fsv/precision.py). 'bfloat16' for TPUs and recent GPUs and CPUs,
  # 'float16' (with dynamic loss scaling) for GPUs.
  config.dtype = 'float32'

  config.data = dict(
      # 'folder' (Keras flow_from_directory layout), 'tfds', 'synthetic'
      # (generated images, for smoke runs) or 'auto': the folder `dir` if it
      # is set, else the TFDS dataset `name`.
      source='auto',
      dir='',                 # folder source: DIR/{train,validation|valid|val,test}/<class>/*
      name='',                # tfds source: dataset name, e.g. 'cats_vs_dogs'
      tfds_data_dir='',       # '' = TFDS's default
      tfds_split='train',     # the TFDS split the balanced subsets are carved from
      per_class=dict(train=1000, validation=500, test=500),  # tfds carving, synthetic
      # Without a validation split: hold out this stratified fraction of train
      # (drawn from `seed`) to choose the best epoch on.
      validation_split=0.0,
      # k-fold cross-validation: `folds`=k > 1 pools train and validation,
      # splits them into k stratified folds (drawn from `seed`) and validates
      # on fold `fold`; 0 is off. Test stays as it is.
      folds=0,
      fold=0,
      download=False,         # let TFDS download and prepare when missing
      image_size=models.default_input_size(model),  # (height, width) images are resized to
      interpolation='bilinear',
      cache_dir='',           # '' = $FSV_CACHE_DIR or ~/.cache/fsv
      on_bad_image='skip',    # 'skip' (counted, logged) or 'error'
  )

  # Augmentation of training batches, on device (fsv/augment/): `ops` lists
  # the ops, '|'-separated, e.g. 'keras|colour_jitter(brightness=0.4)|mixup(alpha=0.2)'
  # ('' is none). The other keys set the `keras` op, Keras ImageDataGenerator
  # semantics; all ranges 0 is the identity.
  config.augment = dict(
      ops='keras',
      rotation_range=0.0,      # degrees
      width_shift_range=0.0,   # fraction of width
      height_shift_range=0.0,  # fraction of height
      shear_range=0.0,         # degrees
      zoom_range=0.0,          # zoom drawn from [1 - z, 1 + z]
      horizontal_flip=False,
      vertical_flip=False,
      brightness_range=(),     # () off, or (low, high): pixels times a factor in it
      channel_shift_range=0.0,  # one intensity in [-r, r] added to all channels
      fill_mode='nearest',
      cval=0.0,
      rescale=models.input_rescale(model),  # applied to train and eval batches alike
  )

  config.model = models.default_config(model)

  # Phase 1 (optional): train only the head on bottleneck features of the
  # frozen base, extracted once and cached (the blog's "bottleneck features").
  config.bottleneck = _optimization(epochs=0)
  # Phase 2: end to end on images, with augmentation; `trainable` patterns
  # (full matches of 'layer/param' paths) pick what trains, see fsv/partition.py.
  config.train = _optimization(
      epochs=30,
      steps_per_epoch=0,       # 0 = one pass over the training split
      trainable=('.*',),
      group_learning_rates=(),  # ((pattern, learning_rate), ...) within trainable
      evaluate_with='best',    # test split on the 'best' (by validation) or 'last' epoch
  )
  # A previous workdir whose best parameters start this run (where names and
  # shapes match), e.g. a trained head to fine-tune from.
  config.init_from = ''
  config.lock()
  return config


def _optimization(**more) -> dict:
  return dict(
      batch_size=32,           # global: split over all devices (fsv/parallel.py)
      # Micro-batches per step: gradients of batch_size / accumulation_steps
      # examples at a time are summed before one update, so a large batch fits.
      accumulation_steps=1,
      eval_batch_size=0,       # 0 = batch_size
      optimizer='rmsprop',
      learning_rate=1e-4,
      momentum=0.9,            # sgd only
      weight_decay=0.0,        # adamw only
      schedule='constant',     # see fsv/optim.py
      warmup_epochs=0,         # warmup_cosine
      decay_epochs=0,          # step: the rate times decay_factor every decay_epochs
      decay_factor=0.1,
      # Validation accuracy not above its best for this many epochs multiplies
      # the learning rate by reduce_lr_factor (Keras's ReduceLROnPlateau); 0 is off.
      reduce_lr_patience=0,
      reduce_lr_factor=0.1,
      # ... ends the phase (Keras's EarlyStopping, restore_best_weights=True:
      # the best epoch is what is evaluated); 0 is off.
      early_stopping_patience=0,
      label_smoothing=0.0,     # targets y (1 - e) + e / classes, as Keras
      # '' (none), 'balanced' (from the training split) or a weight per class
      # in class order, '1,9'; multiplies each example's loss (fsv/losses.py).
      class_weights='',
      # 'shuffle': every example once per epoch; 'balanced': examples drawn
      # with replacement so that every class is equally likely.
      sampling='shuffle',
      # > 0: validate, keep as best and evaluate an exponential moving
      # average of the weights, updated every step with this decay and
      # debiased (fsv/steps.py).
      ema_decay=0.0,
      # 'stop': a NaN or inf training loss ends the run, naming the epoch and
      # step, before that epoch is checkpointed; 'ignore' trains on.
      on_nonfinite_loss='stop',
      **more)


SMOKE = 'smoke'


def arguments(arg: str, variants: Sequence[str] = (), default: str = ''
              ) -> tuple[str, bool]:
  """(variant, smoke) of a config file's argument: comma-separated words, at
  most one of `variants` and optionally 'smoke' ('efficientnet_lite2,smoke')."""
  words = [word for word in (arg or '').split(',') if word]
  chosen = [word for word in words if word in variants]
  unknown = [word for word in words if word != SMOKE and word not in variants]
  if unknown or len(chosen) > 1:
    raise ConfigError(f'config argument {arg!r}: expected {SMOKE!r}'
                      + (f' and at most one of {list(variants)}' if variants else ''))
  return (chosen[0] if chosen else default), SMOKE in words


def cats_vs_dogs(config) -> None:
  """The book's data: the 1000/500/500 per class split of cats vs dogs, from
  TFDS (downloaded and prepared on first use) unless --config.data.dir names
  a folder of it."""
  config.data.update(source='auto', dir='', name='cats_vs_dogs', download=True)


def smoke(config) -> ml_collections.ConfigDict:
  """`config`'s whole pipeline in well under a minute: generated images
  (fsv/data/synthetic.py) at 48x48 or the model's smallest size if larger,
  32 per class to train on, one epoch of each phase; ImageNet weights only
  if they are in the cache (otherwise random, said in the log), so it runs
  offline."""
  # Not below 48: at 32, VGG16's block5 maps are 2x2, where XLA's CPU
  # convolution is about 20x slower than at 3x3 (512 channels: 0.46 s against
  # 0.026 s a batch), which made VGG16's smoke runs 4x slower than at 48.
  size = max(models.min_input_size(config.model), 48)
  config.data.update(source='synthetic', image_size=(size, size),
                     per_class=dict(train=32, validation=8, test=8))
  for group in ('bottleneck', 'train'):
    config[group].epochs = min(config[group].epochs, 1)
  config.train.steps_per_epoch = 0
  if models.uses_uncached_weights(config.model):
    logging.warning('smoke run: the %s ImageNet weights are not in the cache, so its '
                    'weights are random (python -m fsv.pretrained fetch %s puts them there; '
                    'its --help lists the sources)', config.model.name, config.model.name)
    config.model.weights = ''
  return config


def with_trainable(group, trainable) -> ml_collections.ConfigDict:
  """An optimization group (e.g. `bottleneck`) with train-style partition keys."""
  values = group.to_dict() if isinstance(group, ml_collections.ConfigDict) else dict(group)
  return ml_collections.ConfigDict(dict(values, trainable=tuple(trainable),
                                        group_learning_rates=()))


def flat(tree: Mapping[str, Any], prefix: str = '') -> dict:
  """{'train.learning_rate': value, ...}: a (nested dict) config's leaves by dotted key."""
  leaves = {}
  for key, value in tree.items():
    if isinstance(value, Mapping):
      leaves.update(flat(value, f'{prefix}{key}.'))
    else:
      leaves[f'{prefix}{key}'] = value
  return leaves


def _check_keys(config: Mapping[str, Any], schema: Mapping[str, Any], prefix=''):
  for key, value in config.items():
    name = f'{prefix}{key}'
    if key not in schema:
      raise ConfigError(
          f'unknown config key {name!r}; known keys here: {sorted(schema)}')
    if isinstance(schema[key], Mapping) and schema[key]:
      if not isinstance(value, Mapping):
        raise ConfigError(f'config key {name!r} must be a group of keys, got {value!r}')
      _check_keys(value, schema[key], prefix=f'{name}.')


def _require(ok: bool, key: str, message: str, value: Any):
  if not ok:
    raise ConfigError(f'config.{key}={value!r}: {message}')


def _require_finite(config, prefix: str = '') -> None:
  """Every float of the config is a number: an infinite range or rate would
  pass the other checks and surface as a NaN loss blamed on the learning rate."""
  for key, value in config.items():
    if isinstance(value, Mapping):
      _require_finite(value, f'{prefix}{key}.')
    elif isinstance(value, float):
      _require(math.isfinite(value), f'{prefix}{key}', 'must be a finite number', value)


def _one_of(config, key: str, choices):
  value = config
  for part in key.split('.'):
    value = value[part]
  _require(value in choices, key, f'must be one of {choices}', value)


def validate(config: Mapping[str, Any]) -> ml_collections.ConfigDict:
  """Checks keys and values; returns the config as a full, locked ConfigDict.

  Accepts a partial dict too (notebooks): missing keys take their defaults.
  """
  if isinstance(config, ml_collections.ConfigDict):
    config = config.to_dict()
  if not isinstance(config, Mapping):
    raise ConfigError(f'a config must be a mapping, got {type(config).__name__}')
  model_name = config.get('model', {}).get('name', 'small_convnet')
  if model_name not in models.names():
    raise ConfigError(
        f'config.model.name={model_name!r}: unknown model; known: {models.names()}')
  full = base(model_name)
  _check_keys(config, full.to_dict())
  try:
    full.update(config)
  except (TypeError, ValueError) as e:
    raise ConfigError(f'config value of the wrong type: {e}') from None

  data, aug, train = full.data, full.augment, full.train
  _one_of(full, 'dtype', precision.DTYPES)
  _one_of(full, 'data.source', SOURCES)
  _one_of(full, 'data.on_bad_image', BAD_IMAGE_POLICIES)
  _one_of(full, 'data.interpolation', INTERPOLATIONS)
  _one_of(full, 'augment.fill_mode', FILL_MODES)
  _one_of(full, 'train.evaluate_with', ('best', 'last'))
  _require(isinstance(full.seed, int) and 0 <= full.seed < 2**32, 'seed',
           'must be an integer in [0, 2**32)', full.seed)
  if data.source == 'folder':
    _require(bool(data.dir), 'data.dir', 'the folder source needs a directory '
             '(set --config.data.dir=PATH)', data.dir)
  elif data.source == 'tfds':
    _require(bool(data.name), 'data.name', 'the tfds source needs a dataset name',
             data.name)
  elif data.source == 'auto':
    _require(bool(data.dir or data.name), 'data.dir',
             'no data: set --config.data.dir=DIR (an image folder, '
             'DIR/train/<class>/<images>) or --config.data.name=NAME (a TFDS dataset)',
             data.dir)
  for split, count in data.per_class.items():
    _require(count >= 0, f'data.per_class.{split}', 'must be >= 0', count)
  _require(0 <= data.validation_split < 1, 'data.validation_split', 'must be in [0, 1)',
           data.validation_split)
  _require(data.folds == 0 or data.folds >= 2, 'data.folds', 'must be 0 (off) or at least 2',
           data.folds)
  _require(0 <= data.fold < max(data.folds, 1), 'data.fold',
           f'must be in [0, data.folds={data.folds})', data.fold)
  _require(not (data.folds and data.validation_split), 'data.validation_split',
           'cannot be combined with data.folds (the folds choose the validation images)',
           data.validation_split)
  size = tuple(data.image_size)
  _require(len(size) == 2 and all(isinstance(s, int) and 0 < s <= MAX_IMAGE_SIDE
                                  for s in size),
           'data.image_size', f'must be (height, width) in pixels, each at most '
           f'{MAX_IMAGE_SIDE}', size)
  min_size = models.min_input_size(full.model)
  _require(min(size) >= min_size, 'data.image_size',
           f'the model {model_name!r} needs inputs of at least {min_size}x{min_size}',
           size)

  _require_finite(full.to_dict())
  for key in ('rotation_range', 'width_shift_range', 'height_shift_range',
              'shear_range', 'zoom_range', 'channel_shift_range'):
    _require(aug[key] >= 0, f'augment.{key}', 'must be >= 0', aug[key])
  _require(aug.zoom_range < 1, 'augment.zoom_range',
           'must be < 1 (zoom is drawn from [1 - z, 1 + z])', aug.zoom_range)
  _require(aug.rescale > 0, 'augment.rescale', 'must be > 0', aug.rescale)
  brightness = tuple(aug.brightness_range)
  _require(brightness == () or (
      len(brightness) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                   and math.isfinite(v) for v in brightness)
      and 0 <= brightness[0] <= brightness[1]), 'augment.brightness_range',
           'must be () (off) or (low, high) with 0 <= low <= high', brightness)
  augment.pipeline(aug)  # parses augment.ops: a bad op list fails here, before any work

  for group in ('bottleneck', 'train'):
    _validate_optimization(full, group)
  _require(train.steps_per_epoch >= 0, 'train.steps_per_epoch', 'must be >= 0',
           train.steps_per_epoch)
  _require(len(train.trainable) > 0, 'train.trainable',
           "must name at least one pattern ('.*' trains everything)", train.trainable)
  for i, group in enumerate(train.group_learning_rates):
    _require(len(group) == 2 and isinstance(group[0], str) and group[1] > 0,
             f'train.group_learning_rates[{i}]', 'must be (pattern, learning_rate > 0)',
             group)
  if full.bottleneck.epochs:
    _require(models.has_head(full.model), 'bottleneck.epochs',
             f'the model {model_name!r} has no separate head to train on features',
             full.bottleneck.epochs)
  models.validate_config(full, ConfigError)
  return full


def _validate_optimization(config, group: str):
  values = config[group]
  _one_of(config, f'{group}.optimizer', OPTIMIZERS)
  _one_of(config, f'{group}.schedule', SCHEDULES)
  _one_of(config, f'{group}.on_nonfinite_loss', NONFINITE_LOSS_POLICIES)
  _one_of(config, f'{group}.sampling', SAMPLINGS)
  for key, low in (('epochs', 0), ('batch_size', 1), ('accumulation_steps', 1),
                   ('eval_batch_size', 0), ('warmup_epochs', 0), ('decay_epochs', 0),
                   ('reduce_lr_patience', 0), ('early_stopping_patience', 0)):
    _require(values[key] >= low, f'{group}.{key}', f'must be >= {low}', values[key])
  _require(values.batch_size % values.accumulation_steps == 0, f'{group}.batch_size',
           f'must divide into {group}.accumulation_steps={values.accumulation_steps} '
           'equal micro-batches', values.batch_size)
  _require(values.learning_rate > 0, f'{group}.learning_rate', 'must be > 0',
           values.learning_rate)
  if values.schedule == 'step':
    _require(values.decay_epochs > 0, f'{group}.decay_epochs',
             "must be > 0 with schedule='step'", values.decay_epochs)
  for key in ('decay_factor', 'reduce_lr_factor'):
    _require(0 < values[key] <= 1, f'{group}.{key}', 'must be in (0, 1]', values[key])
  for key in ('label_smoothing', 'ema_decay'):
    _require(0 <= values[key] < 1, f'{group}.{key}', 'must be in [0, 1)', values[key])
  if values.class_weights not in ('', 'balanced'):
    try:
      losses.parse_weights(values.class_weights)
    except ConfigError as e:
      raise ConfigError(f'config.{group}.{e}') from None
