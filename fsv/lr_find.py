"""The learning-rate finder (fastai's `lr_find`; Smith's "LR range test").

A short mock training from the run's starting point whose learning rate grows
exponentially, step after step, from `start_lr` to `end_lr`. The loss first
barely moves (the rate is too small to matter), then falls, then blows up
(the rate is too large). A good rate lies on the falling part, below the
blow-up: `LRFinding.suggestions` picks one in fastai's three ways.

Nothing here trains in a way of its own, so the curve is about the run it
was asked of: the phase is the one `fsv.phases` would build (its model, the
parameters `trainable` selects, its optimizer, augmentation, objective and
dtype), its batches and step keys are the ones the epoch loop would draw
(fsv/loop.py), and every step is the one jitted training step
(`steps.make_train_step`). Only the learning rate differs: the phase's
optimizer is built with a constant schedule at `learning_rate`, and the
state's `lr_scale`, which multiplies every update (every fsv optimizer
applies the learning rate last), is set to `lr / learning_rate` before each
step. The scale is an argument of the compiled step, so the sweep compiles
it once. Group learning rates (`train.group_learning_rates`) keep their
ratio to `learning_rate`; the rates reported are `learning_rate`'s.

The sweep never opens a workdir: it reads the data (and the features cache,
for the bottleneck phase) and, with `out_dir`, writes lr_find.json and
lr_find.png there, nothing else.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
import os
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from fsv import config as config_lib
from fsv import data as data_lib
from fsv import files
from fsv import loop
from fsv import models
from fsv import parallel
from fsv import phases
from fsv import plots
from fsv import precision
from fsv import progress
from fsv import steps as steps_lib
from fsv.errors import ConfigError

# fastai's: the smoothed loss is a debiased exponential moving average with
# this factor, and the sweep stops once it exceeds DIVERGENCE times its minimum.
BETA = 0.98
DIVERGENCE = 4.0
MIN_STEPS = 10
# The order in which suggestions are printed and plotted.
SUGGESTIONS = ('valley', 'steepest', 'minimum')
JSON_NAME = 'lr_find.json'
PNG_NAME = 'lr_find.png'


@dataclasses.dataclass(frozen=True)
class LRFinding:
  """The curve of one sweep and the learning rates it suggests.

  `learning_rates`, `losses` and `smoothed` have one entry per step taken
  (fewer than `steps` when the loss diverged). `suggestions` maps
  'valley', 'steepest' and 'minimum' (a tenth of the rate at the lowest
  smoothed loss) to a learning rate, or to None when the sweep diverged
  too early to tell; `suggestion_steps` gives the step each was read at.
  """
  phase: str
  learning_rates: np.ndarray
  losses: np.ndarray
  smoothed: np.ndarray
  suggestions: dict
  suggestion_steps: dict
  steps: int                # asked for
  start_lr: float
  end_lr: float
  learning_rate: float      # the config's, which `lr_scale` multiplies
  diverged: bool            # stopped because the loss blew up
  config_name: str = ''
  config: Optional[dict] = None  # the run's resolved config, as config.json holds it
  written: tuple[str, ...] = ()  # the files `lr_find(out_dir=...)` wrote

  def to_json(self) -> dict:
    """What lr_find.json holds; non-finite losses are null (JSON has no NaN)."""
    finite = lambda values: [float(v) if math.isfinite(v) else None for v in values]
    return {'config': self.config_name, 'phase': self.phase, 'steps': self.steps,
            'steps_taken': len(self.learning_rates), 'diverged': self.diverged,
            'start_lr': self.start_lr, 'end_lr': self.end_lr,
            'config_learning_rate': self.learning_rate,
            'learning_rates': [float(v) for v in self.learning_rates],
            'losses': finite(self.losses), 'smoothed_losses': finite(self.smoothed),
            'suggestions': dict(self.suggestions),
            'suggestion_steps': dict(self.suggestion_steps),
            'resolved_config': self.config}

  def write(self, out_dir) -> tuple[str, str]:
    """Writes lr_find.json and lr_find.png into `out_dir`; returns their paths."""
    json_path, png_path = (os.path.join(os.fspath(out_dir), name)
                           for name in (JSON_NAME, PNG_NAME))
    with files.writing(json_path):
      files.write_json(json_path, self.to_json())
    with files.writing(png_path):
      plots.save(plots.lr_find(self, DIVERGENCE), png_path)
    return json_path, png_path


def learning_rates(start_lr: float, end_lr: float, steps: int) -> np.ndarray:
  """The sweep's rates: exponential from `start_lr` to `end_lr`, both included."""
  return np.geomspace(start_lr, end_lr, steps)


def smooth(losses, beta: float = BETA) -> np.ndarray:
  """fastai's smoothed loss: an exponential moving average started at 0 and
  divided by 1 - beta**n, so that its first values are not biased to 0."""
  average, smoothed = 0.0, []
  for n, loss in enumerate(losses, 1):
    average = beta * average + (1 - beta) * float(loss)
    smoothed.append(average / (1 - beta**n))
  return np.asarray(smoothed, np.float64)


def valley(lrs: np.ndarray, losses: np.ndarray) -> int:
  """fastai's `valley`: the index of its suggestion on the curve.

  The longest valley is the longest strictly decreasing subsequence of the
  losses; the suggestion lies part of the way down it, where the loss still
  falls fast but the rate is safely below its bottom. This is fastai's
  algorithm step for step (its bookkeeping of where the valley starts
  included), so the two suggest the same rate for the same curve: its index
  is start + int(length / 3) + int(length / 6).
  """
  del lrs  # as fastai's, which takes the rates for a uniform signature
  n = len(losses)
  max_start, max_end = 0, 0
  lds = [1] * n
  for i in range(1, n):
    for j in range(0, i):
      if losses[i] < losses[j] and lds[i] < lds[j] + 1:
        lds[i] = lds[j] + 1
      if lds[max_end] < lds[i]:
        max_end = i
        max_start = max_end - lds[max_end]
  sections = (max_end - max_start) / 3
  return max_start + int(sections) + int(sections / 2)


def steepest(lrs: np.ndarray, losses: np.ndarray) -> int:
  """fastai's `steep`: the index where the loss falls fastest per log rate."""
  gradients = np.diff(losses) / np.diff(np.log(lrs))
  return int(np.argmin(gradients))


def minimum(lrs: np.ndarray, losses: np.ndarray) -> int:
  """fastai's `minimum`: the index of the lowest loss (the rate suggested is a tenth of its)."""
  del lrs
  return int(np.argmin(losses))


def suggest(lrs: np.ndarray, smoothed: np.ndarray, steps: int) -> tuple[dict, dict]:
  """({name: learning rate or None}, {name: step index or None}), as fastai
  reads them off the smoothed curve: without the first tenth of the sweep
  (the rate is too small to tell anything) and the last 5 steps (the
  blow-up), and only up to the first non-finite loss."""
  offset = steps // 10
  lrs, losses = np.asarray(lrs)[offset:-5], np.asarray(smoothed)[offset:-5]
  bad = np.flatnonzero(~np.isfinite(losses))
  if bad.size:
    lrs, losses = lrs[:bad[0]], losses[:bad[0]]
  if len(losses) < 2:  # diverged too early: no curve to read
    return {name: None for name in SUGGESTIONS}, {name: None for name in SUGGESTIONS}
  indices = {'valley': valley(lrs, losses), 'steepest': steepest(lrs, losses),
             'minimum': minimum(lrs, losses)}
  rates = {name: float(lrs[i]) / (10 if name == 'minimum' else 1)
           for name, i in indices.items()}
  return rates, {name: int(i) + offset for name, i in indices.items()}


def check_sweep(steps: int, start_lr: float, end_lr: float) -> None:
  """The sweep's own settings, before any work."""
  if not isinstance(steps, numbers.Integral) or steps < MIN_STEPS:
    raise ConfigError(f'steps={steps!r}: must be an integer >= {MIN_STEPS} (the suggestions '
                      'skip the first tenth of the sweep and its last 5 steps)')
  for name, value in (('start_lr', start_lr), ('end_lr', end_lr)):
    if not (isinstance(value, numbers.Real) and math.isfinite(value) and value > 0):
      raise ConfigError(f'{name}={value!r}: must be a finite number > 0')
  if start_lr >= end_lr:
    raise ConfigError(f'start_lr={start_lr!r} must be below end_lr={end_lr!r}')


def _sweep_config(config, phase: str):
  """The config of a run of `phase` alone at a constant learning rate: what
  builds the phase (and is checked) as the run would build it."""
  values = config.to_dict()
  other = 'train' if phase == 'bottleneck' else 'bottleneck'
  values[phase].update(schedule='constant', epochs=max(values[phase]['epochs'], 1))
  values[other]['epochs'] = 0
  return config_lib.validate(values)


def _phase_name(config, phase: Optional[str]) -> str:
  name = phase or ('train' if config.train.epochs else 'bottleneck')
  if name not in loop.PHASES:
    raise ConfigError(f'phase={name!r}: must be one of {loop.PHASES}')
  if name == 'bottleneck' and not models.has_head(config.model):
    raise ConfigError(
        f'phase=bottleneck: the model {config.model.name!r} has no separate head to train on '
        'features' + ('' if phase else ' (config.train.epochs=0 picked that phase; '
                      'ask for phase=train)'))
  return name


def _initial_state(phase: loop.Phase, variables: dict, mesh) -> steps_lib.TrainState:
  """The phase's fresh train state, laid out on `mesh`, with an `lr_scale`."""
  params = variables['params']
  return parallel.put_state(mesh, steps_lib.TrainState(
      step=jnp.zeros((), jnp.int32), params=params, opt_state=phase.tx.init(params),
      batch_stats=variables.get('batch_stats', {}),
      loss_scale=precision.loss_scale(phase.dtype),
      lr_scale=jnp.ones((), jnp.float32)))


def sweep(phase: loop.Phase, variables: dict, seed: int, rates: np.ndarray,
          mesh: jax.sharding.Mesh) -> tuple[np.ndarray, bool]:
  """(the training loss of each step taken at `rates`, whether it diverged).

  The sweep stops when the smoothed loss diverges (above DIVERGENCE times
  its minimum so far, or not finite), as fastai's does.

  Batches are successive shuffles of the training split and keys are the
  steps' keys, both derived from `seed` exactly as the epoch loop derives
  them, so the sweep's step k sees what the run's step k would.
  """
  tc = phase.config
  state = _initial_state(phase, variables, mesh)
  train_step = steps_lib.make_train_step(phase.model, phase.tx, phase.aug, mesh,
                                         tc.accumulation_steps, objective=phase.objective)
  phase_index = loop.PHASES.index(phase.name)
  root_key = jax.random.fold_in(jax.random.PRNGKey(seed), phase_index)
  split = phase.splits['train']
  num_train, batch_size = len(split.labels), tc.batch_size
  balance = split.labels if tc.get('sampling') == 'balanced' else None
  losses, average, best, diverged = [], 0.0, math.inf, False
  bar = progress.bar(range(len(rates)), f'{phase.name} learning-rate finder', 'step')
  for i in bar:
    epoch, step = divmod(i, phase.steps_per_epoch)
    epoch += 1  # the loop counts epochs from 1
    if step == 0:
      order = loop.epoch_indices(seed, epoch, num_train, phase.steps_per_epoch * batch_size,
                                 phase_index, balance)
      epoch_key = jax.random.fold_in(root_key, epoch)
    rows = order[step * batch_size:(step + 1) * batch_size]
    scale = jax.device_put(np.float32(rates[i] / tc.learning_rate), state.lr_scale.sharding)
    state, metrics = train_step(state.replace(lr_scale=scale),
                                parallel.shard_rows(mesh, split.images, rows),
                                parallel.shard_rows(mesh, split.labels, rows),
                                jax.random.fold_in(epoch_key, step))
    loss = float(metrics['loss'])
    losses.append(loss)
    average = BETA * average + (1 - BETA) * loss
    smoothed = average / (1 - BETA**len(losses))
    bar.set_postfix(lr=f'{rates[i]:.2e}', loss=f'{smoothed:.4f}', refresh=False)
    best = min(best, smoothed)
    if not math.isfinite(smoothed) or smoothed > DIVERGENCE * best:
      diverged = True
      break
  bar.close()
  return np.asarray(losses, np.float64), diverged


def lr_find(config, dataset: Optional[data_lib.Dataset] = None, *,
            phase: Optional[str] = None, steps: int = 100, start_lr: float = 1e-7,
            end_lr: float = 10.0, out_dir: Optional[str] = None, config_name: str = '',
            mesh: Optional[jax.sharding.Mesh] = None) -> LRFinding:
  """Sweeps the learning rate of `config`'s phase from its starting point.

  `phase` is 'train' or 'bottleneck' (default: 'train' if the config trains
  end to end, else 'bottleneck'); it starts where the run would start: the
  pretrained weights and `init_from` (the train phase of a run with a
  bottleneck phase would start from the head that phase trains: point
  `init_from` at such a run to sweep from there). `steps` steps go from
  `start_lr` to `end_lr`; the sweep stops early once the loss diverges.
  Without `dataset`, it is loaded from `config.data`. With `out_dir`,
  lr_find.json and lr_find.png are written there (`config_name` is recorded
  in them; `LRFinding.written` names them); no workdir is opened. Returns
  the `LRFinding`.
  """
  check_sweep(steps, start_lr, end_lr)
  config = config_lib.validate(config)
  name = _phase_name(config, phase)
  resolved = config.to_dict()
  config = _sweep_config(config, name)
  mesh = parallel.make_mesh() if mesh is None else mesh
  parallel.check_batch_sizes(config, mesh)
  phases.check_before_data(config)
  dataset = phases.load_data(config, dataset)
  model = models.build(config.model, dataset.num_classes, config.dtype)
  variables = phases.start(config, model, dataset, None)
  if name == 'bottleneck':
    built = phases.make_bottleneck_phase(config, model, variables, dataset, mesh)
    variables = {'params': variables['params']['head']}
  else:
    built = phases.make_train_phase(config, model, variables, dataset)
  rates = learning_rates(start_lr, end_lr, steps)
  losses, diverged = sweep(built, variables, config.seed, rates, mesh)
  smoothed = smooth(losses)
  taken = rates[:len(losses)]
  suggestions, suggestion_steps = suggest(taken, smoothed, steps)
  finding = LRFinding(
      phase=name, learning_rates=taken, losses=losses, smoothed=smoothed,
      suggestions=suggestions, suggestion_steps=suggestion_steps, steps=steps,
      start_lr=float(start_lr), end_lr=float(end_lr),
      learning_rate=float(config[name].learning_rate), diverged=diverged,
      config_name=config_name, config=resolved)
  if out_dir:
    finding = dataclasses.replace(finding, written=finding.write(out_dir))
  return finding
