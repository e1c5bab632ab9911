"""Training: the state, the jitted steps and the epoch loop.

Read top to bottom: `TrainState`, `loss_and_correct`, `make_train_step`,
`make_eval_step`, `evaluate`, `fit`. Randomness is explicit: every step's
key is derived from (seed, epoch, step) and every epoch's shuffle from
(seed, epoch), so a resumed run is the same run as an uninterrupted one.
"""
from __future__ import annotations

import dataclasses
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
from fsv import models
from fsv import optim
from fsv import report


class TrainState(struct.PyTreeNode):
  step: jnp.ndarray
  params: Any
  opt_state: Any


def loss_and_correct(logits: jnp.ndarray, labels: jnp.ndarray):
  """Per-example loss and 0/1 correctness for sigmoid (1 logit) or softmax heads."""
  if logits.shape[-1] == 1:
    logits = logits[:, 0]
    loss = optax.sigmoid_binary_cross_entropy(logits, labels.astype(jnp.float32))
    correct = (logits > 0) == (labels == 1)
  else:
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    correct = jnp.argmax(logits, -1) == labels
  return loss, correct.astype(jnp.float32)


def make_train_step(model: nn.Module, tx: optax.GradientTransformation,
                    aug: augment_lib.AugmentConfig) -> Callable:
  """(state, uint8 images, labels, key) -> (state, metrics); jitted."""

  def train_step(state: TrainState, images, labels, key):
    aug_key, dropout_key = jax.random.split(key)
    inputs = augment_lib.random_transform(images, aug_key, aug)

    def loss_fn(params):
      logits = model.apply({'params': params}, inputs, train=True,
                           rngs={'dropout': dropout_key})
      loss, correct = loss_and_correct(logits, labels)
      return loss.mean(), correct.mean()

    (loss, accuracy), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    state = state.replace(step=state.step + 1,
                          params=optax.apply_updates(state.params, updates),
                          opt_state=opt_state)
    return state, {'loss': loss, 'accuracy': accuracy}

  return jax.jit(train_step, donate_argnums=0)


def make_eval_step(model: nn.Module, aug: augment_lib.AugmentConfig) -> Callable:
  """(params, uint8 images, labels, mask) -> summed loss and correct; jitted."""

  def eval_step(params, images, labels, mask):
    logits = model.apply({'params': params}, augment_lib.preprocess(images, aug))
    loss, correct = loss_and_correct(logits, labels)
    return {'loss': (loss * mask).sum(), 'correct': (correct * mask).sum()}

  return jax.jit(eval_step)


def evaluate(eval_step: Callable, params, split: data_lib.Split,
             batch_size: int) -> dict:
  """Mean loss and accuracy over every example of `split` (last batch padded)."""
  n = len(split.labels)
  totals = {'loss': 0.0, 'correct': 0.0}
  for start in range(0, n, batch_size):
    images = split.images[start:start + batch_size]
    labels = split.labels[start:start + batch_size]
    pad = batch_size - len(labels)
    mask = np.ones(batch_size, np.float32)
    if pad:  # keep one compiled shape for the whole split
      images = np.concatenate([images, np.zeros((pad,) + images.shape[1:], images.dtype)])
      labels = np.concatenate([labels, np.zeros(pad, labels.dtype)])
      mask[batch_size - pad:] = 0
    out = eval_step(params, images, labels, mask)
    for k in totals:
      totals[k] += float(out[k])
  return {'loss': totals['loss'] / n, 'accuracy': totals['correct'] / n}


def epoch_indices(seed: int, epoch: int, num_examples: int, count: int) -> np.ndarray:
  """`count` example indices: successive shuffles, each example once per shuffle."""
  rng = np.random.default_rng([seed, epoch])
  shuffles = [rng.permutation(num_examples) for _ in range(math.ceil(count / num_examples))]
  return np.concatenate(shuffles)[:count]


@dataclasses.dataclass
class Result:
  """What `fit` gives back: per-epoch history, test metrics and the parameters."""
  history: list
  results: dict
  params: Any
  model: nn.Module
  config: Any
  dataset: data_lib.Dataset


def _num_classes(config, dataset: data_lib.Dataset) -> int:
  found = dataset.num_classes
  wanted = config.model.num_classes
  if wanted and wanted != found:
    raise config_lib.ConfigError(
        f'config.model.num_classes={wanted} but the data has {found} classes '
        f'{list(dataset.class_names)}')
  if found < 2:
    raise config_lib.ConfigError(
        f'the data has {found} class(es) {list(dataset.class_names)}; need at least 2')
  return found


def init_state(config, model: nn.Module, tx: optax.GradientTransformation,
               image_shape) -> TrainState:
  key = jax.random.fold_in(jax.random.PRNGKey(config.seed), 0)
  params = model.init(key, jnp.zeros((1,) + tuple(image_shape), jnp.float32))['params']
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    opt_state=tx.init(params))


def fit(config, dataset: Optional[data_lib.Dataset] = None,
        workdir: Optional[str] = None) -> Result:
  """Trains as `config` describes; with a workdir, checkpoints and resumes.

  `config` may be a full ConfigDict or a partial dict (missing keys take
  their defaults). Without `dataset`, it is loaded from `config.data`.
  """
  started = time.time()
  config = config_lib.validate(config)
  if dataset is None:
    dataset = data_lib.load(config.data)
  if 'train' not in dataset.splits:
    raise data_lib.DataError('the dataset has no train split')
  train_split = dataset.splits['train']
  num_classes = _num_classes(config, dataset)
  model = models.build(config.model, num_classes)
  aug = augment_lib.AugmentConfig.from_config(config.augment)

  tc = config.train
  num_train = len(train_split.labels)
  steps_per_epoch = tc.steps_per_epoch or math.ceil(num_train / tc.batch_size)
  eval_batch_size = tc.eval_batch_size or tc.batch_size
  tx = optim.make(tc, steps_per_epoch)
  state = init_state(config, model, tx, train_split.images.shape[1:])
  train_step = make_train_step(model, tx, aug)
  eval_step = make_eval_step(model, aug)

  history: list = []
  best_accuracy = -1.0
  checkpoints = None
  if workdir:
    os.makedirs(workdir, exist_ok=True)
    report.write_json(os.path.join(workdir, 'config.json'), config.to_dict())
    report.write_json(os.path.join(workdir, 'data_report.json'),
                      report.data_report(dataset))
    checkpoints = checkpoint_lib.Checkpoints(workdir)
    restored = checkpoints.restore_latest(state)
    if restored is not None:
      state, meta = restored
      history, best_accuracy = meta['history'], meta['best_val_accuracy']
      logging.info('Resuming from %s after epoch %d of %d.', workdir,
                   len(history), tc.epochs)

  validation = dataset.splits.get('validation')
  root_key = jax.random.PRNGKey(config.seed)
  for epoch in range(len(history) + 1, tc.epochs + 1):
    epoch_started = time.time()
    order = epoch_indices(config.seed, epoch, num_train, steps_per_epoch * tc.batch_size)
    epoch_key = jax.random.fold_in(root_key, epoch)
    sums = {'loss': 0.0, 'accuracy': 0.0}
    bar = tqdm.tqdm(range(steps_per_epoch), desc=f'epoch {epoch}/{tc.epochs}',
                    unit='step', leave=False, dynamic_ncols=True)
    for step in bar:
      batch = order[step * tc.batch_size:(step + 1) * tc.batch_size]
      state, metrics = train_step(state, train_split.images[batch],
                                  train_split.labels[batch],
                                  jax.random.fold_in(epoch_key, step))
      for k in sums:
        sums[k] += float(metrics[k])
      bar.set_postfix(loss=f'{sums["loss"] / (step + 1):.4f}',
                      acc=f'{sums["accuracy"] / (step + 1):.4f}', refresh=False)
    bar.close()
    entry = {'epoch': epoch,
             'train_loss': sums['loss'] / steps_per_epoch,
             'train_accuracy': sums['accuracy'] / steps_per_epoch}
    if validation is not None:
      val = evaluate(eval_step, state.params, validation, eval_batch_size)
      entry.update(val_loss=val['loss'], val_accuracy=val['accuracy'])
    entry['seconds'] = time.time() - epoch_started
    history.append(entry)
    logging.info('epoch %d/%d  %s', epoch, tc.epochs, '  '.join(
        f'{k}={v:.4f}' for k, v in entry.items() if k != 'epoch'))

    is_best = entry.get('val_accuracy', entry['train_accuracy']) > best_accuracy
    if is_best:
      best_accuracy = entry.get('val_accuracy', entry['train_accuracy'])
    if checkpoints:
      checkpoints.save(epoch, state, {'history': history,
                                      'best_val_accuracy': best_accuracy}, is_best)
      report.write_json(os.path.join(workdir, 'history.json'), history)
      report.plot_history(history, os.path.join(workdir, 'curves.png'))

  params = state.params
  evaluated = 'last'
  if checkpoints:
    checkpoints.wait()
    if tc.evaluate_with == 'best' and history:
      best = checkpoints.restore_best(state)
      if best is not None:
        params, evaluated = best[0].params, 'best'
    checkpoints.close()

  results = {'epochs': len(history), 'evaluated': evaluated,
             'num_classes': num_classes, 'class_names': list(dataset.class_names)}
  if evaluated == 'best':
    results['best_epoch'] = max(
        history, key=lambda h: h.get('val_accuracy', h['train_accuracy']))['epoch']
  for name in ('validation', 'test'):
    if name in dataset.splits:
      metrics = evaluate(eval_step, params, dataset.splits[name], eval_batch_size)
      prefix = 'val' if name == 'validation' else name
      results[f'{prefix}_accuracy'] = metrics['accuracy']
      results[f'{prefix}_loss'] = metrics['loss']
  results['wall_seconds'] = time.time() - started
  if workdir:
    report.write_json(os.path.join(workdir, 'results.json'), results)
  logging.info('results: %s', results)
  return Result(history=history, results=results, params=params, model=model,
                config=config, dataset=dataset)
