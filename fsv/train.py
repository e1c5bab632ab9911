"""Training: the state, the jitted steps, the epoch loop and the phases of a run.

Read top to bottom: `TrainState`, `loss_and_correct`, `make_train_step`,
`make_eval_step`, `evaluate`, `train_phase` (the epoch loop with
checkpoints and resume) and `fit`, which runs up to two phases:
  1. `config.bottleneck`: only the head, on the frozen base's cached features;
  2. `config.train`: end to end on images with augmentation, training the
     parameters `config.train.trainable` selects (fsv/partition.py).
Models with BatchNorm carry its running statistics as `batch_stats` next to
the parameters (in the state, the checkpoints, evaluation and features).
They change only in layers that `model.batch_norm='train'` lets train (see
`fsv.models.BATCH_NORM_MODES`); otherwise training steps pass them through
untouched.
Randomness is explicit: every step's key is derived from (seed, phase,
epoch, step) and every epoch's shuffle from (seed, phase, epoch), so a
resumed run is the same run as an uninterrupted one.
Steps run data parallel on a mesh of devices (fsv/parallel.py): batches are
global and split over the devices, parameters replicated; the random draws
of a step do not depend on how many devices share it.
What can be checked without the data (the config, `trainable` against the
model's parameter names, the workdir) is checked before the data is loaded,
and the number of classes before any image is decoded.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import os
import time
from typing import Any, Callable, Optional

from absl import logging
import flax.linen as nn
from flax import struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm

from fsv import augment as augment_lib
from fsv import checkpoint as checkpoint_lib
from fsv import config as config_lib
from fsv import data as data_lib
from fsv import features as features_lib
from fsv import models
from fsv import parallel
from fsv import partition
from fsv import precision
from fsv import report

PHASES = checkpoint_lib.PHASES


class NonFiniteLossError(Exception):
  """A NaN or inf training loss; the message names the phase, epoch and step."""


class TrainState(struct.PyTreeNode):
  step: jnp.ndarray
  params: Any
  opt_state: Any
  # BatchNorm running statistics: not parameters (no gradient, no optimizer
  # state), but part of what a checkpoint must restore. {} without BatchNorm.
  batch_stats: Any = struct.field(default_factory=dict)
  loss_scale: Optional[precision.DynamicLossScale] = None  # float16 runs only

  def variables(self) -> dict:
    return {'params': self.params, 'batch_stats': self.batch_stats}


def loss_and_correct(logits: jnp.ndarray, labels: jnp.ndarray):
  """Per-example loss and 0/1 correctness for sigmoid (1 logit) or softmax heads."""
  logits = logits.astype(jnp.float32)  # bfloat16 logits would round the loss
  if logits.shape[-1] == 1:
    logits = logits[:, 0]
    loss = optax.sigmoid_binary_cross_entropy(logits, labels.astype(jnp.float32))
    correct = (logits > 0) == (labels == 1)
  else:
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    correct = jnp.argmax(logits, -1) == labels
  return loss, correct.astype(jnp.float32)


def make_train_step(model: nn.Module, tx: optax.GradientTransformation,
                    aug: augment_lib.AugmentConfig,
                    mesh: Optional[jax.sharding.Mesh] = None,
                    accumulation_steps: int = 1) -> Callable:
  """(state, images, labels, key) -> (state, metrics); jitted.

  `images` and `labels` are the global batch, split over `mesh` (default:
  all devices) by `parallel.shard_rows`; the state is laid out as
  `parallel.state_shardings` says, and stays so. With `accumulation_steps`
  > 1 the batch is augmented whole, then its gradients are computed
  `accumulation_steps` micro-batches at a time and averaged before one
  update: the same augmentation and, without dropout, the same step as the
  whole batch at once. Dropout masks are drawn per micro-batch from the
  step's key (flax draws one mask per call), so with dropout the
  accumulated step is another draw of the same random step.

  Gradients of frozen parameters are never used (their updates are
  `set_to_zero`), so XLA drops their computation from the compiled step.
  BatchNorm statistics are updated only in the layers the model names in
  `batch_norm_training` (micro-batch after micro-batch when accumulating);
  otherwise they leave the step as they came in.

  A state with a `loss_scale` (float16) differentiates the scaled loss and
  skips the update of a step whose gradients overflowed (fsv/precision.py);
  metrics then include `skipped`. The loss reported is never scaled.
  """
  mesh = parallel.make_mesh() if mesh is None else mesh
  updates_batch_norm = bool(getattr(model, 'batch_norm_training', ()))

  def loss_fn(params, batch_stats, inputs, labels, dropout_key, scale):
    variables = {'params': params, 'batch_stats': batch_stats}
    rngs = {'dropout': dropout_key}
    if updates_batch_norm:
      logits, updated = model.apply(variables, inputs, train=True, rngs=rngs,
                                    mutable=['batch_stats'])
      batch_stats = updated['batch_stats']
    else:
      logits = model.apply(variables, inputs, train=True, rngs=rngs)
    loss, correct = loss_and_correct(logits, labels)
    return loss.mean() * scale, (loss.mean(), correct.mean(), batch_stats)

  def grad_fn(params, batch_stats, inputs, labels, dropout_key, scale):
    """((loss, accuracy, batch_stats), gradients of the scaled loss)."""
    (_, outputs), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        params, batch_stats, inputs, labels, dropout_key, scale)
    return outputs, grads

  def accumulated_grad_fn(params, batch_stats, inputs, labels, dropout_key, scale):
    def micro_batches(x):
      # Micro-batch m is rows m, m + k, m + 2k, ...: every device keeps the
      # rows it holds, and the split is the same on any number of devices.
      x = x.reshape(-1, accumulation_steps, *x.shape[1:]).swapaxes(0, 1)
      return jax.lax.with_sharding_constraint(
          x, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(
              None, parallel.DATA)))

    def add_micro_batch(carry, micro_batch):
      grads, batch_stats = carry
      inputs, labels, index = micro_batch
      (loss, accuracy, batch_stats), micro_grads = grad_fn(
          params, batch_stats, inputs, labels, jax.random.fold_in(dropout_key, index), scale)
      return (jax.tree_util.tree_map(jnp.add, grads, micro_grads), batch_stats), (loss, accuracy)

    (grads, batch_stats), (losses, accuracies) = jax.lax.scan(
        add_micro_batch, (jax.tree_util.tree_map(jnp.zeros_like, params), batch_stats),
        (micro_batches(inputs), micro_batches(labels), jnp.arange(accumulation_steps)))
    # Micro-batches of equal size: the mean of their means is the batch's mean.
    grads = jax.tree_util.tree_map(lambda g: g / accumulation_steps, grads)
    return (losses.mean(), accuracies.mean(), batch_stats), grads

  def train_step(state: TrainState, images, labels, key):
    aug_key, dropout_key = jax.random.split(key)
    inputs = augment_lib.random_transform(images, aug_key, aug)
    loss_scale = state.loss_scale
    (loss, accuracy, batch_stats), grads = (
        grad_fn if accumulation_steps == 1 else accumulated_grad_fn)(
            state.params, state.batch_stats, inputs, labels, dropout_key,
            1.0 if loss_scale is None else loss_scale.scale)
    if loss_scale is not None:
      grads = loss_scale.unscale(grads)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {'loss': loss, 'accuracy': accuracy}
    if loss_scale is not None:
      # The updates, not the gradients, are checked: reading the frozen
      # parameters' gradients would make XLA compute them. A non-finite
      # gradient of a trained parameter makes its update non-finite.
      finite = precision.all_finite(updates)
      params, opt_state, batch_stats = precision.select(
          finite, (params, opt_state, batch_stats),
          (state.params, state.opt_state, state.batch_stats))
      loss_scale = loss_scale.adjust(finite)
      metrics['skipped'] = ~finite
    state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                          batch_stats=batch_stats, loss_scale=loss_scale)
    state = jax.lax.with_sharding_constraint(state, parallel.state_shardings(mesh, state))
    return state, metrics

  return jax.jit(train_step, donate_argnums=0)


def make_eval_step(model: nn.Module, aug: augment_lib.AugmentConfig) -> Callable:
  """(variables, images, labels, mask) -> summed loss and correct; jitted."""

  def eval_step(variables, images, labels, mask):
    logits = model.apply(variables, augment_lib.preprocess(images, aug))
    loss, correct = loss_and_correct(logits, labels)
    return {'loss': (loss * mask).sum(), 'correct': (correct * mask).sum()}

  return jax.jit(eval_step)


def evaluate(eval_step: Callable, variables, split: data_lib.Split, batch_size: int,
             mesh: jax.sharding.Mesh) -> dict:
  """Mean loss and accuracy over every example of `split`, in global batches on
  `mesh` (the last batch padded, the padding masked out)."""
  n = len(split.labels)
  totals = {'loss': 0.0, 'correct': 0.0}
  for start in range(0, n, batch_size):
    rows, real = parallel.padded_rows(start, batch_size, n)
    mask = (np.arange(batch_size) < real).astype(np.float32)
    out = eval_step(variables, parallel.shard_rows(mesh, split.images, rows),
                    parallel.shard_rows(mesh, split.labels, rows),
                    parallel.shard_rows(mesh, mask, np.arange(batch_size)))
    for k in totals:
      totals[k] += float(out[k])
  return {'loss': totals['loss'] / n, 'accuracy': totals['correct'] / n}


def epoch_indices(seed: int, epoch: int, num_examples: int, count: int,
                  phase: int = 0) -> np.ndarray:
  """`count` example indices: successive shuffles, each example once per shuffle."""
  rng = np.random.default_rng([seed, phase, epoch])
  shuffles = [rng.permutation(num_examples) for _ in range(math.ceil(count / num_examples))]
  return np.concatenate(shuffles)[:count]


@dataclasses.dataclass
class Phase:
  """One phase's setting: what trains on what, and how."""
  name: str
  model: nn.Module
  tx: optax.GradientTransformation
  aug: augment_lib.AugmentConfig
  splits: dict                      # name -> Split (images, or features)
  config: Any                       # the phase's optimization group
  steps_per_epoch: int
  layer_groups: dict = dataclasses.field(default_factory=dict)  # '@name' in trainable
  dtype: str = 'float32'            # the run's config.dtype


def train_phase(phase: Phase, variables: dict, seed: int, history: list,
                checkpoints: Optional[checkpoint_lib.Checkpoints],
                workdir: Optional[str], mesh: jax.sharding.Mesh) -> tuple[dict, dict]:
  """Runs (or resumes) the phase's epochs on `mesh`; appends to `history` in place.

  `variables` holds 'params' and, with BatchNorm, 'batch_stats'. Returns
  (last variables, best variables by validation accuracy).
  """
  tc = phase.config
  phase_index = PHASES.index(phase.name)
  params = variables['params']
  # Restoring into this state's layout puts the checkpoint's arrays on `mesh` too.
  state = parallel.put_state(mesh, TrainState(
      step=jnp.zeros((), jnp.int32), params=params, opt_state=phase.tx.init(params),
      batch_stats=variables.get('batch_stats', {}),
      loss_scale=precision.loss_scale(phase.dtype)))
  done = [h for h in history if h['phase'] == phase.name]
  best_accuracy = max((_selection_metric(h) for h in done), default=-1.0)
  if checkpoints and done:
    state, _ = checkpoints.restore_latest(state)
    logging.info('%s: resuming after epoch %d of %d.', phase.name, len(done), tc.epochs)
  train_step = make_train_step(phase.model, phase.tx, phase.aug, mesh,
                               tc.accumulation_steps)
  eval_step = make_eval_step(phase.model, phase.aug)
  eval_batch_size = parallel.eval_batch_size(tc, mesh)
  train_split = phase.splits['train']
  validation = phase.splits.get('validation')
  num_train = len(train_split.labels)
  root_key = jax.random.fold_in(jax.random.PRNGKey(seed), phase_index)

  for epoch in range(len(done) + 1, tc.epochs + 1):
    epoch_started = time.time()
    order = epoch_indices(seed, epoch, num_train, phase.steps_per_epoch * tc.batch_size,
                          phase_index)
    epoch_key = jax.random.fold_in(root_key, epoch)
    sums = {'loss': 0.0, 'accuracy': 0.0, 'skipped': 0}
    bar = tqdm.tqdm(range(phase.steps_per_epoch), unit='step', leave=False,
                    desc=f'{phase.name} epoch {epoch}/{tc.epochs}', dynamic_ncols=True)
    for step in bar:
      batch = order[step * tc.batch_size:(step + 1) * tc.batch_size]
      state, metrics = train_step(state, parallel.shard_rows(mesh, train_split.images, batch),
                                  parallel.shard_rows(mesh, train_split.labels, batch),
                                  jax.random.fold_in(epoch_key, step))
      loss = float(metrics['loss'])
      # Raised before the epoch's checkpoint: resuming starts from finite weights.
      # A float16 step skipped for overflowing gradients has a finite loss.
      if not math.isfinite(loss) and tc.on_nonfinite_loss == 'stop':
        raise NonFiniteLossError(
            f'{phase.name} epoch {epoch} step {step + 1}: the training loss is {loss}; '
            f'stopped before checkpointing this epoch (try a lower learning rate'
            + (", dtype='bfloat16' (float16 overflows above 65504)"
               if phase.dtype == 'float16' else '')
            + f", or set {phase.name}.on_nonfinite_loss='ignore' to train on)")
      sums['skipped'] += int(metrics.get('skipped', 0))
      sums['loss'] += loss
      sums['accuracy'] += float(metrics['accuracy'])
      bar.set_postfix(loss=f'{sums["loss"] / (step + 1):.4f}',
                      acc=f'{sums["accuracy"] / (step + 1):.4f}', refresh=False)
    bar.close()
    entry = {'phase': phase.name, 'epoch': epoch,
             'train_loss': sums['loss'] / phase.steps_per_epoch,
             'train_accuracy': sums['accuracy'] / phase.steps_per_epoch}
    if state.loss_scale is not None:
      entry.update(skipped_steps=sums['skipped'], loss_scale=float(state.loss_scale.scale))
    if validation is not None:
      val = evaluate(eval_step, state.variables(), validation, eval_batch_size, mesh)
      entry.update(val_loss=val['loss'], val_accuracy=val['accuracy'])
    entry['seconds'] = time.time() - epoch_started
    history.append(entry)
    logging.info('%s epoch %d/%d  %s', phase.name, epoch, tc.epochs, '  '.join(
        f'{k}={v:.4f}' for k, v in entry.items() if k not in ('phase', 'epoch')))

    is_best = _selection_metric(entry) > best_accuracy
    best_accuracy = max(best_accuracy, _selection_metric(entry))
    if checkpoints:
      checkpoints.save(epoch, state, {'history': history}, is_best)
      report.write_json(os.path.join(workdir, 'history.json'), history)
      report.plot_history(history, os.path.join(workdir, 'curves.png'))

  best = state.variables()
  if checkpoints:
    checkpoints.wait()
    restored = checkpoints.restore_best(state)
    if restored is not None:
      best = restored[0].variables()
  return state.variables(), best


def _selection_metric(entry: dict) -> float:
  return entry.get('val_accuracy', entry['train_accuracy'])


@dataclasses.dataclass
class Result:
  """What `fit` gives back: per-epoch history, test metrics and the parameters."""
  history: list
  results: dict
  params: Any
  model: nn.Module
  config: Any
  dataset: data_lib.Dataset
  batch_stats: Any = dataclasses.field(default_factory=dict)  # BatchNorm statistics

  def variables(self) -> dict:
    """What `model.apply` takes."""
    return {'params': self.params, 'batch_stats': self.batch_stats}


def _check_classes(config, class_names: tuple[str, ...]) -> None:
  found = len(class_names)
  wanted = config.model.num_classes
  if wanted and wanted != found:
    raise config_lib.ConfigError(
        f'config.model.num_classes={wanted} but the data has {found} classes '
        f'{list(class_names)}')
  if found < 2:
    raise config_lib.ConfigError(
        f'the data has {found} class(es) {list(class_names)}; need at least 2')


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


def _steps_per_epoch(tc, num_train: int) -> int:
  return tc.get('steps_per_epoch', 0) or math.ceil(num_train / tc.batch_size)


def _bottleneck_phase(config, model, variables, dataset, mesh) -> Phase:
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
  return Phase('bottleneck', models.head_of(config.model, model), tx,
               augment_lib.AugmentConfig(), splits, tc, steps, dtype=config.dtype)


def _train_phase(config, model, variables, dataset) -> Phase:
  """The model end to end on images with augmentation; `trainable` picks what trains.

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
  return Phase('train', model, partition.optimizer(tc, params, steps, groups),
               augment_lib.AugmentConfig.from_config(config.augment),
               dict(dataset.splits), tc, steps, groups, config.dtype)


def _log_partition(phase: Phase, params) -> None:
  counts = partition.count(params, partition.labels(
      params, phase.config.get('trainable', ('.*',)),
      phase.config.get('group_learning_rates', ()), phase.layer_groups))
  logging.info('%s: %s parameters', phase.name, ', '.join(
      f'{count:,} {label}' for label, count in sorted(counts.items())))


def probabilities(model: nn.Module, variables, aug: augment_lib.AugmentConfig,
                  inputs: np.ndarray, batch_size: int = 64, flip: bool = False) -> np.ndarray:
  """Class probabilities (n, num_classes) of `inputs` preprocessed as
  evaluation batches are; `flip`: of their mirror images (test-time
  augmentation). Two classes share one sigmoid unit: p(class 1) = sigmoid."""
  apply = jax.jit(lambda variables, x: model.apply(
      variables, augment_lib.preprocess(x[:, :, ::-1] if flip else x, aug)))
  outputs = []
  for start in range(0, len(inputs), batch_size):
    logits = apply(variables, jnp.asarray(inputs[start:start + batch_size])).astype(jnp.float32)
    if logits.shape[-1] == 1:
      p = jax.nn.sigmoid(logits[:, 0])
      outputs.append(np.asarray(jnp.stack([1 - p, p], -1)))
    else:
      outputs.append(np.asarray(jax.nn.softmax(logits, -1)))
  return np.concatenate(outputs)


def _predictions(phase: Phase, variables, batch_size: int) -> dict:
  """What `fsv.ensemble` combines: validation and test probabilities of the
  evaluated model, with labels and files, and of the mirrored images too
  when the phase sees images (not cached features)."""
  arrays = {}
  for name in ('validation', 'test'):
    if name not in phase.splits:
      continue
    split = phase.splits[name]
    arrays[f'{name}/labels'] = split.labels
    arrays[f'{name}/files'] = np.asarray(split.files, dtype=str)
    arrays[f'{name}/probabilities'] = probabilities(
        phase.model, variables, phase.aug, split.images, batch_size)
    if split.images.ndim == 4:
      arrays[f'{name}/flipped_probabilities'] = probabilities(
          phase.model, variables, phase.aug, split.images, batch_size, flip=True)
  return arrays


def _results(phase: Phase, variables, history: list, evaluated: str, dataset,
             mesh) -> dict:
  entries = [h for h in history if h['phase'] == phase.name]
  results = {'phase': phase.name, 'epochs': len(entries), 'evaluated': evaluated,
             'num_classes': dataset.num_classes,
             'class_names': list(dataset.class_names)}
  if evaluated == 'best' and entries:
    results['best_epoch'] = max(entries, key=_selection_metric)['epoch']
  eval_step = make_eval_step(phase.model, phase.aug)
  batch_size = parallel.eval_batch_size(phase.config, mesh)
  for name, prefix in (('validation', 'val'), ('test', 'test')):
    if name in phase.splits:
      metrics = evaluate(eval_step, variables, phase.splits[name], batch_size, mesh)
      results[f'{prefix}_accuracy'] = metrics['accuracy']
      results[f'{prefix}_loss'] = metrics['loss']
  return results


def fit(config, dataset: Optional[data_lib.Dataset] = None,
        workdir: Optional[str] = None,
        mesh: Optional[jax.sharding.Mesh] = None) -> Result:
  """Trains as `config` describes; with a workdir, checkpoints and resumes.

  `config` may be a full ConfigDict or a partial dict (missing keys take
  their defaults). Without `dataset`, it is loaded from `config.data`.
  `mesh` (`parallel.make_mesh`) is the devices to run on, by default all.
  Errors whose message says what to fix: ConfigError, DataError,
  WeightsError, WorkdirError and NonFiniteLossError.
  """
  started = time.time()
  config = config_lib.validate(config)
  mesh = parallel.make_mesh() if mesh is None else mesh
  parallel.check_batch_sizes(config, mesh)
  logging.info('devices: %d %s on %d host(s); batches are split over them',
               mesh.size, mesh.devices.flat[0].platform, jax.process_count())
  _check_trainable(config)
  if workdir:
    report.check_writable(workdir)
  check_classes = functools.partial(_check_classes, config)
  if dataset is None:
    dataset = data_lib.load(config.data, check_classes)
  else:
    check_classes(dataset.class_names)
  if 'train' not in dataset.splits:
    raise data_lib.DataError('the dataset has no train split')
  model = models.build(config.model, dataset.num_classes, config.dtype)
  variables = models.init_variables(config.model, model, jax.random.PRNGKey(config.seed),
                                    dataset.splits['train'].images.shape[1:])
  if config.init_from:
    variables = checkpoint_lib.merge_params(
        variables, checkpoint_lib.best_variables(config.init_from))

  checkpoints, history = {}, []
  if workdir:
    report.write_json(os.path.join(workdir, 'config.json'), config.to_dict())
    report.write_json(os.path.join(workdir, 'data_report.json'),
                      report.data_report(dataset))
    checkpoints = {name: checkpoint_lib.Checkpoints(workdir, name) for name in PHASES}
    history = checkpoint_lib.saved_history(checkpoints[name] for name in reversed(PHASES))

  evaluated = config.train.evaluate_with if workdir else 'last'
  pick = lambda last, best: best if evaluated == 'best' else last
  phase = None
  try:
    # Once the train phase has checkpoints, they hold the head trained before it.
    if config.bottleneck.epochs and not any(h['phase'] == 'train' for h in history):
      phase = _bottleneck_phase(config, model, variables, dataset, mesh)
      _log_partition(phase, variables['params']['head'])
      head = pick(*train_phase(phase, {'params': variables['params']['head']}, config.seed,
                               history, checkpoints.get('bottleneck'), workdir, mesh))
      variables = {**variables, 'params': {**variables['params'], 'head': head['params']}}
    if config.train.epochs:
      phase = _train_phase(config, model, variables, dataset)
      _log_partition(phase, variables['params'])
      variables = pick(*train_phase(phase, variables, config.seed, history,
                                    checkpoints.get('train'), workdir, mesh))
  finally:
    # Also on an error: the last epoch's asynchronous save completes.
    for manager in checkpoints.values():
      manager.close()

  results = {}
  if phase is not None:
    evaluated_variables = (variables if phase.name == 'train'
                           else {'params': variables['params']['head']})
    results = _results(phase, evaluated_variables, history, evaluated, dataset, mesh)
    if workdir:
      report.write_npz(os.path.join(workdir, 'predictions.npz'), _predictions(
          phase, evaluated_variables,
          phase.config.eval_batch_size or phase.config.batch_size))
  results['wall_seconds'] = time.time() - started
  if workdir:
    report.write_json(os.path.join(workdir, 'results.json'), results)
  logging.info('results: %s', results)
  return Result(history=history, results=results, params=variables['params'], model=model,
                config=config, dataset=dataset,
                batch_stats=variables.get('batch_stats', {}))
