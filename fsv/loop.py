"""The epoch loop of one phase: shuffles, steps, validation, checkpoints, resume.

Randomness is explicit: every step's key is derived from (seed, phase,
epoch, step) and every epoch's shuffle from (seed, phase, epoch), so a
resumed run is the same run as an uninterrupted one. What happens between
epochs (reducing the learning rate on a plateau, stopping early) is a
function of the history and the state, both checkpointed, so it resumes
exactly too. The loop knows no file formats: it saves through
`checkpoint.Checkpoints` and hands the history to an `on_epoch_end`
callback (fsv/phases.py writes it into the workdir).

A phase that continues a model (`Phase.start`: the train phase after the
head's, or from `init_from`) validates its starting point as its epoch 0
and keeps it as the best until an epoch beats it: a phase that only hurts
leaves the run with the model it started from.
"""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Callable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from fsv import augment as augment_lib
from fsv import checkpoint as checkpoint_lib
from fsv import history as history_lib
from fsv import inference
from fsv import losses
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
  aug: augment_lib.Pipeline | augment_lib.AugmentConfig  # the bottleneck's: no augmentation
  splits: dict                      # name -> Split (images, or features)
  config: Any                       # the phase's optimization group
  steps_per_epoch: int
  layer_groups: dict = dataclasses.field(default_factory=dict)  # '@name' in trainable
  dtype: str = 'float32'            # the run's config.dtype
  objective: losses.Objective = losses.Objective()
  # What the phase starts from, when that is a model worth keeping (e.g.
  # 'bottleneck epoch 7'): validated as epoch 0. '' for a fresh start.
  start: str = ''

  def logits(self, variables, split: str, mesh: jax.sharding.Mesh,
             flip: bool = False) -> np.ndarray:
    """The logits of a split's inputs, as evaluation computes them."""
    return inference.logits(self.model, variables, self.splits[split].images,
                            parallel.eval_batch_size(self.config, mesh), mesh,
                            self.aug.rescale, flip)


def epoch_indices(seed: int, epoch: int, num_examples: int, count: int,
                  phase: int = 0, balance: Optional[np.ndarray] = None) -> np.ndarray:
  """`count` example indices: successive shuffles, each example once per
  shuffle; with `balance` (the examples' labels), drawn with replacement so
  that each class is equally likely."""
  rng = np.random.default_rng([seed, phase, epoch])
  if balance is not None:
    counts = np.bincount(balance)
    weights = 1.0 / counts[balance]
    return rng.choice(num_examples, count, p=weights / weights.sum())
  shuffles = [rng.permutation(num_examples) for _ in range(math.ceil(count / num_examples))]
  return np.concatenate(shuffles)[:count]


class UnevenMembers(ValueError):
  """Members that cannot train together: they resume after different epochs."""


@dataclasses.dataclass
class Member:
  """One run's own part of a phase: what differs between runs trained
  together (fsv/members.py), and all there is of a single run."""
  seed: int                     # its example order and its steps' keys
  history: list                 # appended to in place
  checkpoints: Optional[checkpoint_lib.Checkpoints] = None
  on_epoch_end: Callable[[list], None] = lambda history: None
  # Added to the first new epoch's entry, then emptied (a config change).
  note: dict = dataclasses.field(default_factory=dict)
  update_scale: float = 1.0     # its learning rate over the first member's
  label: str = ''               # before its report lines, when there are several
  best_score: float = -1.0
  best: Any = None              # its best epoch's variables, without checkpoints


def _resumed_state(phase: Phase, variables: dict, member: Member, mesh) -> steps.TrainState:
  params = variables['params']
  # Restoring into this state's layout puts the checkpoint's arrays on `mesh` too.
  tc = phase.config
  state = parallel.put_state(mesh, steps.TrainState(
      step=jnp.zeros((), jnp.int32), params=params, opt_state=phase.tx.init(params),
      batch_stats=variables.get('batch_stats', {}),
      loss_scale=precision.loss_scale(phase.dtype),
      ema=jax.tree_util.tree_map(jnp.copy, params) if tc.get('ema_decay') else None,
      lr_scale=jnp.ones((), jnp.float32) if tc.get('reduce_lr_patience') else None))
  if member.checkpoints and any(h['phase'] == phase.name for h in member.history):
    state, meta = member.checkpoints.restore_for_resume(state)
    member.history[:] = meta['history']  # shorter if it fell back to the best checkpoint
  member.best_score = max((history_lib.selection_metric(h) for h in member.history
                           if h['phase'] == phase.name), default=-1.0)
  return state


def _check_finite(loss: float, phase: Phase, epoch: int, step: int) -> None:
  # Raised before the epoch's checkpoint: resuming starts from finite weights.
  # A float16 step skipped for overflowing gradients has a finite loss.
  if not math.isfinite(loss) and phase.config.on_nonfinite_loss == 'stop':
    raise NonFiniteLossError(
        f'{phase.name} epoch {epoch} step {step + 1}: the training loss is {loss}; '
        f'stopped before checkpointing this epoch (try a lower learning rate'
        + (", dtype='bfloat16' (float16 overflows above 65504)"
           if phase.dtype == 'float16' else '')
        + f", or set {phase.name}.on_nonfinite_loss='ignore' to train on)")


def _validate(phase: Phase, state: steps.TrainState, mesh) -> dict:
  if 'validation' not in phase.splits:
    return {}
  val = inference.loss_and_accuracy(phase.logits(state.variables(), 'validation', mesh),
                                    phase.splits['validation'].labels)
  return {'val_loss': val['loss'], 'val_accuracy': val['accuracy']}


def _validate_start(phase: Phase, member: Member, state: steps.TrainState, mesh) -> None:
  """Epoch 0: the phase's starting point, validated and kept as its best so far."""
  started = time.time()
  entry = {'phase': phase.name, 'epoch': 0, 'start': phase.start,
           **_validate(phase, state, mesh), 'seconds': time.time() - started}
  _record(phase, member, entry, state)


def _record(phase: Phase, member: Member, entry: dict, state: steps.TrainState) -> None:
  """Appends the member's history entry; reports, checkpoints and keeps the best."""
  if member.note:
    entry.update(member.note)
    member.note.clear()
  member.history.append(entry)
  progress.report(f'{member.label}{phase.name} epoch {entry["epoch"]}/{phase.config.epochs}  '
                  + '  '.join(f'{k}={v:.4f}' for k, v in entry.items()
                              if k not in ('phase', 'epoch') and isinstance(v, (int, float))))
  epoch = entry['epoch']
  is_best = history_lib.selection_metric(entry) > member.best_score
  member.best_score = max(member.best_score, history_lib.selection_metric(entry))
  if member.checkpoints:
    member.checkpoints.save(epoch, state, {'history': member.history}, is_best)
  elif is_best:
    # The next step donates the state's buffers: keep copies of its own.
    member.best = jax.tree_util.tree_map(jnp.copy, state.variables())
  member.on_epoch_end(member.history)


def _end_epoch(phase: Phase, epoch: int, member: Member, state: steps.TrainState,
               sums: dict, started: float, mesh) -> steps.TrainState:
  """The member's epoch entry, with what the epoch decided: a lower learning
  rate on a plateau, an early stop. Returns the state to go on with."""
  entry = {'phase': phase.name, 'epoch': epoch,
           'train_loss': sums['loss'] / phase.steps_per_epoch,
           'train_accuracy': sums['accuracy'] / phase.steps_per_epoch}
  if state.loss_scale is not None:
    entry.update(skipped_steps=sums['skipped'], loss_scale=float(state.loss_scale.scale))
  entry.update(_validate(phase, state, mesh))
  entry['seconds'] = time.time() - started
  tc = phase.config
  history = member.history + [entry]
  if tc.get('reduce_lr_patience') and tc.reduce_lr_patience <= history_lib.stale_epochs(
      history, phase.name, since_key='learning_rate_scale'):
    state = state.replace(lr_scale=state.lr_scale * tc.reduce_lr_factor)
    entry['learning_rate_scale'] = float(state.lr_scale)
  if history_lib.stops_early(history, phase.name, tc.get('early_stopping_patience', 0)):
    entry['stopped_early'] = True
  _record(phase, member, entry, state)
  return state


def _last_and_best(member: Member, state: steps.TrainState) -> tuple[dict, dict]:
  last = state.variables()
  if member.checkpoints:
    member.checkpoints.wait()
    restored = member.checkpoints.restore_best(state)
    if restored is not None:
      member.best = restored[0].variables()
  return last, last if member.best is None else member.best


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
  member = Member(seed, history, checkpoints, on_epoch_end, {} if note is None else note)
  return train_members(phase, [variables], [member], mesh)[0]


def train_members(phase: Phase, variables: Sequence[dict], members: Sequence[Member],
                  mesh: jax.sharding.Mesh) -> list[tuple[dict, dict]]:
  """`train_phase` for several runs that share the phase's model, optimizer
  and data and differ as `Member`s do; with more than one they train
  together, in one vmapped step (`steps.make_train_step(members=True)`).
  They must have trained the same number of epochs so far."""
  tc = phase.config
  phase_index = PHASES.index(phase.name)
  states = [_resumed_state(phase, v, m, mesh) for v, m in zip(variables, members)]
  done = {history_lib.epochs_trained(m.history, phase.name) for m in members}
  if len(done) != 1:
    raise UnevenMembers(f'members resume after different epochs: {sorted(done)}')
  done = done.pop()
  if done:
    progress.report(f'{phase.name}: resuming after epoch {done} of {tc.epochs}.')
  together = len(members) > 1
  train_step = steps.make_train_step(phase.model, phase.tx, phase.aug, mesh,
                                     tc.accumulation_steps, members=together,
                                     objective=phase.objective,
                                     ema_decay=tc.get('ema_decay', 0.0))
  state = (jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves), *states) if together
           else states[0])
  member_state = lambda m: jax.tree_util.tree_map(lambda x: x[m], state) if together else state
  update_scales = jnp.asarray([m.update_scale for m in members], jnp.float32)
  train_split = phase.splits['train']
  num_train = len(train_split.labels)
  root_keys = [jax.random.fold_in(jax.random.PRNGKey(m.seed), phase_index) for m in members]
  balance = train_split.labels if tc.get('sampling') == 'balanced' else None
  if phase.start and 'validation' in phase.splits and not any(
      h['phase'] == phase.name for h in members[0].history):
    for m, member in enumerate(members):
      _validate_start(phase, member, member_state(m), mesh)

  for epoch in range(done + 1, tc.epochs + 1):
    if any(history_lib.stops_early(m.history, phase.name, tc.get('early_stopping_patience', 0))
           for m in members):
      progress.report(f'{phase.name}: stopped early after epoch {epoch - 1}, '
                      f'{tc.early_stopping_patience} epochs without a better validation '
                      'accuracy.')
      break
    epoch_started = time.time()
    orders = [epoch_indices(m.seed, epoch, num_train, phase.steps_per_epoch * tc.batch_size,
                            phase_index, balance) for m in members]
    epoch_keys = [jax.random.fold_in(key, epoch) for key in root_keys]
    sums = [{'loss': 0.0, 'accuracy': 0.0, 'skipped': 0} for _ in members]
    bar = progress.bar(range(phase.steps_per_epoch), f'{phase.name} epoch {epoch}/{tc.epochs}',
                       'step')
    for step in bar:
      rows = [order[step * tc.batch_size:(step + 1) * tc.batch_size] for order in orders]
      keys = [jax.random.fold_in(key, step) for key in epoch_keys]
      if together:  # every member's batch, read from the one copy of the data
        state, metrics = train_step(state, train_split.images[np.stack(rows)],
                                    train_split.labels[np.stack(rows)], jnp.stack(keys),
                                    update_scales)
      else:
        state, metrics = train_step(state, parallel.shard_rows(mesh, train_split.images, rows[0]),
                                    parallel.shard_rows(mesh, train_split.labels, rows[0]),
                                    keys[0])
      metrics = {k: np.atleast_1d(np.asarray(v)) for k, v in metrics.items()}
      for m, totals in enumerate(sums):
        loss = float(metrics['loss'][m])
        _check_finite(loss, phase, epoch, step)
        totals['skipped'] += int(metrics['skipped'][m]) if 'skipped' in metrics else 0
        totals['loss'] += loss
        totals['accuracy'] += float(metrics['accuracy'][m])
      bar.set_postfix(loss=f'{sums[0]["loss"] / (step + 1):.4f}',
                      acc=f'{sums[0]["accuracy"] / (step + 1):.4f}', refresh=False)
    bar.close()
    ended = [_end_epoch(phase, epoch, member, member_state(m), sums[m], epoch_started, mesh)
             for m, member in enumerate(members)]
    if not together:
      state = ended[0]
    elif state.lr_scale is not None:
      state = state.replace(lr_scale=jnp.stack([s.lr_scale for s in ended]))

  return [_last_and_best(member, member_state(m)) for m, member in enumerate(members)]
