"""The epoch loop of one phase: shuffles, steps, validation, checkpoints, resume.

Randomness is explicit: every step's key is derived from (seed, phase,
epoch, step) and every epoch's shuffle from (seed, phase, epoch), so a
resumed run is the same run as an uninterrupted one. The loop knows no file
formats: it saves through `checkpoint.Checkpoints` and hands the history to
an `on_epoch_end` callback (fsv/phases.py writes it into the workdir).
"""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from fsv import augment as augment_lib
from fsv import checkpoint as checkpoint_lib
from fsv import inference
from fsv import parallel
from fsv import precision
from fsv import progress
from fsv import steps
from fsv.errors import NonFiniteLossError

PHASES = checkpoint_lib.PHASES


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

  def logits(self, variables, split: str, mesh: jax.sharding.Mesh,
             flip: bool = False) -> np.ndarray:
    """The logits of a split's inputs, as evaluation computes them."""
    return inference.logits(self.model, variables, self.splits[split].images,
                            parallel.eval_batch_size(self.config, mesh), mesh,
                            self.aug.rescale, flip)


def epoch_indices(seed: int, epoch: int, num_examples: int, count: int,
                  phase: int = 0) -> np.ndarray:
  """`count` example indices: successive shuffles, each example once per shuffle."""
  rng = np.random.default_rng([seed, phase, epoch])
  shuffles = [rng.permutation(num_examples) for _ in range(math.ceil(count / num_examples))]
  return np.concatenate(shuffles)[:count]


def selection_metric(entry: dict) -> float:
  """What makes an epoch the best: validation accuracy, else train accuracy."""
  return entry.get('val_accuracy', entry['train_accuracy'])


def train_phase(phase: Phase, variables: dict, seed: int, history: list,
                checkpoints: Optional[checkpoint_lib.Checkpoints],
                on_epoch_end: Callable[[list], None],
                mesh: jax.sharding.Mesh, note: Optional[dict] = None) -> tuple[dict, dict]:
  """Runs (or resumes) the phase's epochs on `mesh`; appends to `history` in place.

  `note` (emptied when used) is added to the first new epoch's entry.

  `variables` holds 'params' and, with BatchNorm, 'batch_stats'. Returns
  (last variables, best variables by `selection_metric`). With checkpoints
  the best come back from the `best` checkpoint; without, from a copy kept
  on the devices, so a run evaluates the same epoch either way.
  """
  tc = phase.config
  phase_index = PHASES.index(phase.name)
  params = variables['params']
  # Restoring into this state's layout puts the checkpoint's arrays on `mesh` too.
  state = parallel.put_state(mesh, steps.TrainState(
      step=jnp.zeros((), jnp.int32), params=params, opt_state=phase.tx.init(params),
      batch_stats=variables.get('batch_stats', {}),
      loss_scale=precision.loss_scale(phase.dtype)))
  if checkpoints and any(h['phase'] == phase.name for h in history):
    state, meta = checkpoints.restore_for_resume(state)
    history[:] = meta['history']  # shorter if it fell back to the best checkpoint
  done = [h for h in history if h['phase'] == phase.name]
  best_score = max((selection_metric(h) for h in done), default=-1.0)
  if done:
    progress.report(f'{phase.name}: resuming after epoch {len(done)} of {tc.epochs}.')
  train_step = steps.make_train_step(phase.model, phase.tx, phase.aug, mesh,
                                     tc.accumulation_steps)
  train_split = phase.splits['train']
  num_train = len(train_split.labels)
  root_key = jax.random.fold_in(jax.random.PRNGKey(seed), phase_index)
  best = None

  for epoch in range(len(done) + 1, tc.epochs + 1):
    epoch_started = time.time()
    order = epoch_indices(seed, epoch, num_train, phase.steps_per_epoch * tc.batch_size,
                          phase_index)
    epoch_key = jax.random.fold_in(root_key, epoch)
    sums = {'loss': 0.0, 'accuracy': 0.0, 'skipped': 0}
    bar = progress.bar(range(phase.steps_per_epoch), f'{phase.name} epoch {epoch}/{tc.epochs}',
                       'step')
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
    if 'validation' in phase.splits:
      val = inference.loss_and_accuracy(phase.logits(state.variables(), 'validation', mesh),
                                        phase.splits['validation'].labels)
      entry.update(val_loss=val['loss'], val_accuracy=val['accuracy'])
    entry['seconds'] = time.time() - epoch_started
    if note:
      entry.update(note)
      note.clear()
    history.append(entry)
    progress.report(f'{phase.name} epoch {epoch}/{tc.epochs}  ' + '  '.join(
        f'{k}={v:.4f}' for k, v in entry.items()
        if k not in ('phase', 'epoch') and isinstance(v, (int, float))))

    is_best = selection_metric(entry) > best_score
    best_score = max(best_score, selection_metric(entry))
    if checkpoints:
      checkpoints.save(epoch, state, {'history': history}, is_best)
    elif is_best:
      # The next step donates the state's buffers: keep copies of its own.
      best = jax.tree_util.tree_map(jnp.copy, state.variables())
    on_epoch_end(history)

  last = state.variables()
  if checkpoints:
    checkpoints.wait()
    restored = checkpoints.restore_best(state)
    if restored is not None:
      best = restored[0].variables()
  return last, last if best is None else best
