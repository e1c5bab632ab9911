"""A run from config to trained `Run`: checks, data, the phases, the evaluation.

`fit` runs up to two phases, each an epoch loop (fsv/loop.py):
  1. `config.bottleneck`: only the head, on the frozen base's cached features;
  2. `config.train`: end to end on images with augmentation, training the
     parameters `config.train.trainable` selects (fsv/partition.py).
It then evaluates the phase's best (or last) variables on validation and
test (results.json), keeps their probabilities (predictions.npz) and, for
the test split, the full evaluation report (fsv/evaluate.py). The train
phase's epoch 0 is the model it starts from (the head's best epoch, or
`init_from`), so its best is the best of the whole run (fsv/loop.py). With a
workdir every epoch is checkpointed and a rerun resumes; without one the
same epoch is evaluated.
What can be checked without the data (the config, `trainable` against the
model's parameter names, `init_from`, the workdir) is checked before the
data is loaded, and the number of classes before any image is decoded.
"""
from __future__ import annotations

import functools
import math
import time
from typing import Optional, Sequence

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from fsv import augment as augment_lib
from fsv import checkpoint as checkpoint_lib
from fsv import config as config_lib
from fsv import data as data_lib
from fsv import evaluate as evaluate_lib
from fsv import features as features_lib
from fsv import history as history_lib
from fsv import inference
from fsv import loop
from fsv import losses
from fsv import models
from fsv import parallel
from fsv import partition
from fsv import progress
from fsv import workdir as workdir_lib
from fsv.data import holdout
from fsv.errors import ConfigError, DataError
from fsv.run import Run


def _check_data(config, class_names: tuple[str, ...], splits: tuple[str, ...]) -> None:
  """What the run needs of the data, checked before any image is decoded."""
  found = len(class_names)
  wanted = config.model.num_classes
  if wanted and wanted != found:
    raise ConfigError(
        f'config.model.num_classes={wanted} but the data has {found} classes '
        f'{list(class_names)}')
  if found < 2:
    raise ConfigError(f'the data has {found} class(es) {list(class_names)}; need at least 2')
  if 'train' not in splits:
    raise DataError('the dataset has no train split')
  trains = config.bottleneck.epochs or config.train.epochs
  if 'validation' in splits and config.data.validation_split:
    raise ConfigError(f'config.data.validation_split={config.data.validation_split}: the '
                      'data has a validation split already; set it to 0')
  if ('validation' not in splits and not config.data.validation_split and trains
      and not config.data.folds and config.train.evaluate_with == 'best'):
    raise ConfigError(
        'the data has no validation split (a validation/, valid/ or val/ folder), so the '
        "best epoch would be chosen by training accuracy: hold out part of train with "
        "--config.data.validation_split=0.2, or evaluate the last epoch with "
        "--config.train.evaluate_with=last")


def _check_trainable(config) -> None:
  """`train.trainable` patterns that match no parameter fail before any work.

  Parameter names do not depend on the number of classes, and `eval_shape`
  builds the tree of shapes without computing anything.
  """
  if not config.train.epochs:
    return
  model = models.build(config.model, config.model.num_classes or 2)
  images = jax.ShapeDtypeStruct((1, *config.data.image_size, 3), jnp.float32)
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), images)['params']
  partition.labels(shapes, config.train.trainable, config.train.group_learning_rates,
                   models.layer_groups(config.model))


def check_before_data(config) -> None:
  """What can be checked before the data is read: `trainable`, `init_from`."""
  _check_trainable(config)
  if config.init_from:
    workdir_lib.check_init_from(config.init_from)


def _steps_per_epoch(tc, num_train: int) -> int:
  return tc.get('steps_per_epoch', 0) or math.ceil(num_train / tc.batch_size)


def _objective(tc, dataset: data_lib.Dataset) -> losses.Objective:
  return losses.Objective(
      num_classes=dataset.num_classes, label_smoothing=tc.label_smoothing,
      class_weights=losses.class_weights(tc.class_weights, dataset.splits['train'].labels,
                                         dataset.num_classes))


def make_bottleneck_phase(config, model, variables, dataset, mesh) -> loop.Phase:
  """The head alone, trained on the frozen base's cached features."""
  tc = config.bottleneck
  base = {'params': {k: v for k, v in variables['params'].items() if k != 'head'},
          'batch_stats': variables.get('batch_stats', {})}
  splits = {}
  for name, split in dataset.splits.items():
    feats = features_lib.cached(model, variables, base, split.images,
                                parallel.eval_batch_size(tc, mesh), mesh,
                                config.model.get('cache_dir', ''), f'{name} features')
    splits[name] = data_lib.Split(images=feats, labels=split.labels, files=split.files)
  steps = _steps_per_epoch(tc, len(splits['train'].labels))
  tx = partition.optimizer(config_lib.with_trainable(tc, ('.*',)),
                           variables['params']['head'], steps)
  return loop.Phase('bottleneck', models.head_of(config.model, model), tx,
                    augment_lib.AugmentConfig(), splits, tc, steps, dtype=config.dtype,
                    objective=_objective(tc, dataset))


def train_start(config, history: Sequence[dict]) -> str:
  """What the train phase starts from, if that is a trained model (its epoch 0)."""
  if config.bottleneck.epochs:
    entries = [h for h in history if h['phase'] == 'bottleneck']
    if entries:
      chosen = (history_lib.best_entry(history, 'bottleneck') if config.train.evaluate_with == 'best'
                else entries[-1])
      return f'bottleneck epoch {chosen["epoch"]}'
  if config.init_from:
    return f'init_from {config.init_from}'
  return ''


def make_train_phase(config, model, variables, dataset, start: str = '') -> loop.Phase:
  """The model end to end on images with augmentation; `trainable` picks what trains.
  `start` names the trained model it starts from, if any (`train_start`).

  With `model.batch_norm='train'`, the BatchNorm layers whose parameters
  all train use batch statistics in training steps and update their running
  ones; every other BatchNorm layer stays in inference mode.
  """
  tc = config.train
  params = variables['params']
  groups = models.layer_groups(config.model)
  steps = _steps_per_epoch(tc, len(dataset.splits['train'].labels))
  if config.model.get('batch_norm') == 'train':
    labels = partition.labels(params, tc.trainable, tc.group_learning_rates, groups)
    model = model.clone(batch_norm_training=partition.trained_layers(
        labels, variables.get('batch_stats', {})))
  return loop.Phase('train', model, partition.optimizer(tc, params, steps, groups),
                    augment_lib.pipeline(config.augment), dict(dataset.splits), tc, steps,
                    groups, config.dtype, _objective(tc, dataset), start)


def _evaluation_phase(config, model, dataset) -> loop.Phase:
  """A run of 0 epochs evaluates its starting model on images as the train phase would."""
  return loop.Phase('train', model, None, augment_lib.pipeline(config.augment),
                    dict(dataset.splits), config.train, 0)


def _log_partition(phase: loop.Phase, params) -> None:
  counts = partition.count(params, partition.labels(
      params, phase.config.get('trainable', ('.*',)),
      phase.config.get('group_learning_rates', ()), phase.layer_groups))
  logging.info('%s: %s parameters', phase.name, ', '.join(
      f'{count:,} {label}' for label, count in sorted(counts.items())))


def _evaluate(phase: loop.Phase, variables, history: list, evaluated: str, dataset,
              mesh) -> tuple[dict, dict, Optional[evaluate_lib.Evaluation]]:
  """results.json's metrics, predictions.npz's arrays and the test split's
  evaluation, all from one pass of the model over each split."""
  results = {'phase': phase.name, 'epochs': history_lib.epochs_trained(history, phase.name),
             'evaluated': evaluated,
             'num_classes': dataset.num_classes, 'class_names': list(dataset.class_names)}
  if history and history[-1].get('stopped_early'):
    results['stopped_early'] = True
  best = history_lib.best_entry(history, phase.name)
  if evaluated == 'best' and best:
    results['best_epoch'] = best['epoch']
    if best['epoch'] == 0:  # no epoch of the phase beat what it started from
      results['best_is_start'] = best['start']
  arrays, test_evaluation = {}, None
  for name, prefix in (('validation', 'val'), ('test', 'test')):
    if name not in phase.splits:
      continue
    split = phase.splits[name]
    logits = phase.logits(variables, name, mesh)
    metrics = inference.loss_and_accuracy(logits, split.labels)
    results[f'{prefix}_accuracy'] = metrics['accuracy']
    results[f'{prefix}_loss'] = metrics['loss']
    probabilities = inference.probabilities(logits)
    arrays[f'{name}/labels'] = split.labels
    arrays[f'{name}/files'] = np.asarray(split.files, dtype=str)
    arrays[f'{name}/probabilities'] = probabilities
    if split.images.ndim == 4:  # images, not cached features: mirrored ones too
      arrays[f'{name}/flipped_probabilities'] = inference.probabilities(
          phase.logits(variables, name, mesh, flip=True))
    if name == 'test':
      test_evaluation = evaluate_lib.evaluation(
          probabilities, split.labels, inference.losses(logits, split.labels)[0],
          dataset.class_names, split.files, dataset.splits['test'].images)
  return results, arrays, test_evaluation


def fit(config, dataset: Optional[data_lib.Dataset] = None,
        workdir: Optional[str] = None,
        mesh: Optional[jax.sharding.Mesh] = None,
        allow_changes: Sequence[str] = ()) -> Run:
  """Trains as `config` describes; with a workdir, checkpoints and resumes.

  `config` may be a full ConfigDict or a partial dict (missing keys take
  their defaults). Without `dataset`, it is loaded from `config.data`.
  `mesh` (`parallel.make_mesh`) is the devices to run on, by default all.
  A workdir that holds a run is resumed only with the same config, except
  for the keys in `allow_changes` (see `workdir.RESUMABLE_KEYS`), and the
  same data. Returns the trained `Run` (its `results`, `history`,
  `predict`, ...). Errors whose message says what to fix derive from
  `fsv.Error`.
  """
  started = time.time()
  config = config_lib.validate(config)
  mesh = parallel.make_mesh() if mesh is None else mesh
  parallel.check_batch_sizes(config, mesh)
  logging.info('devices: %d %s on %d host(s); batches are split over them',
               mesh.size, mesh.devices.flat[0].platform, jax.process_count())
  check_before_data(config)
  if not workdir:
    return _fit(config, dataset, None, mesh, {}, started)
  wd = workdir_lib.Workdir(workdir)
  wd.check_writable()
  with wd.locked():
    changes = wd.config_changes(config, allow_changes)
    try:
      return _fit(config, dataset, wd, mesh, changes, started)
    finally:
      wd.close()


def _fit(config, dataset: Optional[data_lib.Dataset], wd: Optional[workdir_lib.Workdir],
         mesh: jax.sharding.Mesh, changes: dict, started: float) -> Run:
  """`fit` once the config and the workdir are known to be usable."""
  dataset = load_data(config, dataset)
  model = models.build(config.model, dataset.num_classes, config.dtype)
  variables = start(config, model, dataset, wd)
  # Recorded with the first epoch trained under the changed config.
  note = {'config_changes': changes} if changes else {}
  evaluated = config.train.evaluate_with
  pick = lambda last, best: best if evaluated == 'best' else last
  phase, checkpoints = None, {}
  try:
    checkpoints, history = open_checkpoints(wd)
    on_epoch_end = wd.write_history if wd else lambda history: None
    # Once the train phase has checkpoints, they hold the head trained before it.
    if config.bottleneck.epochs and not any(h['phase'] == 'train' for h in history):
      phase = make_bottleneck_phase(config, model, variables, dataset, mesh)
      _log_partition(phase, variables['params']['head'])
      head = pick(*loop.train_phase(phase, {'params': variables['params']['head']},
                                    config.seed, history, checkpoints.get('bottleneck'),
                                    on_epoch_end, mesh, note))
      variables = with_head(variables, head)
    if config.train.epochs:
      phase = make_train_phase(config, model, variables, dataset,
                               train_start(config, history))
      _log_partition(phase, variables['params'])
      variables = pick(*loop.train_phase(phase, variables, config.seed, history,
                                         checkpoints.get('train'), on_epoch_end, mesh, note))
  finally:
    close_checkpoints(checkpoints)
  return finish(config, model, variables, dataset, wd, mesh, phase, history, note, started)


def load_data(config, dataset: Optional[data_lib.Dataset]) -> data_lib.Dataset:
  """The run's data, checked, with its validation images arranged."""
  check_data = functools.partial(_check_data, config)
  if dataset is None:
    dataset = data_lib.load(config.data, check_data)
  else:
    check_data(dataset.class_names, tuple(dataset.splits))
  return holdout.for_run(dataset, config.data, config.seed)


def start(config, model, dataset: data_lib.Dataset,
          wd: Optional[workdir_lib.Workdir]) -> dict:
  """The run's starting variables; with a workdir, checks that the data is
  the run's and writes config.json and data_report.json."""
  if wd:
    wd.check_same_data(dataset)
  variables = workdir_lib.init_variables(config, model, dataset.splits['train'].images.shape[1:3])
  if wd:
    wd.write_config(config)
    wd.write_data_report(dataset)
  return variables


def open_checkpoints(wd: Optional[workdir_lib.Workdir]) -> tuple[dict, list]:
  """Each phase's checkpoints and the history to resume from ({}, [] without a
  workdir); close them with `close_checkpoints`, also on an error."""
  checkpoints = {}
  if not wd:
    return checkpoints, []
  try:
    for name in loop.PHASES:
      checkpoints[name] = wd.checkpoints(name)
    history = checkpoint_lib.saved_history(checkpoints[name] for name in reversed(loop.PHASES))
  except BaseException:
    close_checkpoints(checkpoints)
    raise
  return checkpoints, history


def close_checkpoints(checkpoints: dict) -> None:
  # Also on an error: the last epoch's asynchronous save completes, and no
  # checkpointer thread outlives the run (orbax's raise at interpreter exit).
  for manager in checkpoints.values():
    manager.close()


def with_head(variables: dict, head: dict) -> dict:
  return {**variables, 'params': {**variables['params'], 'head': head['params']}}


def finish(config, model, variables: dict, dataset: data_lib.Dataset,
           wd: Optional[workdir_lib.Workdir], mesh: jax.sharding.Mesh,
           phase: Optional[loop.Phase], history: list, note: dict, started: float) -> Run:
  """Evaluates the run's trained variables, writes what a finished workdir
  holds (results.json last) and returns the Run."""
  evaluated = config.train.evaluate_with
  if phase is None:
    phase, evaluated = _evaluation_phase(config, model, dataset), 'initial'
  evaluated_variables = (variables if phase.name == 'train'
                         else {'params': variables['params']['head']})
  results, arrays, test_evaluation = _evaluate(phase, evaluated_variables, history, evaluated,
                                               dataset, mesh)
  results.update(note)  # changes no epoch took up, such as `evaluate_with`
  if wd:
    wd.write_curves()
    wd.write_predictions(arrays)
    if test_evaluation is not None:
      wd.write_evaluation('test', test_evaluation)
  results['wall_seconds'] = time.time() - started
  if wd:
    results['workdir_format'] = workdir_lib.FORMAT
    wd.write_results(results)
  progress.report('results: ' + ', '.join(
      f'{k}={v:.4f}' if isinstance(v, float) else f'{k}={v}' for k, v in results.items()))
  return Run(config=config, class_names=dataset.class_names, model=model, variables=variables,
             history=history, results=results, workdir=wd.path if wd else None,
             checkpoint=evaluated, dataset=dataset, mesh=mesh)
