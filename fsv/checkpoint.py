"""Orbax checkpoints of a run: per phase, the latest epoch (for resume) and the best.

Layout under the workdir:
  checkpoints/<phase>/latest/<epoch>/  written after every epoch; resume starts here
  checkpoints/<phase>/best/<epoch>/    rewritten when validation accuracy improves
  checkpoints/<phase>/damaged/         checkpoints set aside as unreadable
Each holds the train state and, as JSON, the run's history so far, so a
resumed run has every epoch exactly once. Orbax writes to a temporary
directory and renames it when complete, so a killed process never leaves a
partial checkpoint behind that would be picked up, and removes such
temporary directories when it opens the folder again. A write that fails
(read-only, disk full) is a `WorkdirError` naming the directory.

A checkpoint damaged after it was written (truncated arrays, missing or
empty metadata) is never a reason to start over silently: a resume falls
back from `latest` to `best` with a warning naming what was damaged (the
damaged one is moved to `damaged/`), and stops with a WorkdirError when
checkpoints exist but none can be read.
"""
from __future__ import annotations

from typing import Any, Iterable, Optional
import uuid

from absl import logging
import jax
import numpy as np

from fsv import files
from fsv.errors import ConfigError
from fsv.errors import WorkdirError

_ITEMS = ('state', 'meta')
# Phases in the order they run; the last one with a checkpoint is the run's result.
PHASES = ('bottleneck', 'train')


def _orbax():
  """orbax.checkpoint, imported on first use: it takes a second to import, and
  `import fsv` (notebooks, predict) does not need it."""
  import orbax.checkpoint
  return orbax.checkpoint


class Checkpoints:
  """The latest and best checkpoints of one phase under `<workdir>/checkpoints`."""

  def __init__(self, workdir: str, phase: str = 'train'):
    ocp = _orbax()
    self._phase = phase
    self._root = files.as_path(workdir) / 'checkpoints' / phase
    self._resume_from = 'latest'

    def manager(name):
      return ocp.CheckpointManager(
          self._root / name, item_names=_ITEMS,
          options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True,
                                               cleanup_tmp_directories=True))

    with self._writing():
      self._latest = manager('latest')
      try:
        self._best = manager('best')
      except BaseException:
        self._latest.close()
        raise

  def _writing(self):
    # A failed write surfaces as tensorstore's ValueError ('... [os_error_code=28]'),
    # from this call or, for an asynchronous save, from the next one.
    return files.writing(self._root, (OSError, ValueError))

  def save(self, epoch: int, state: Any, meta: dict, is_best: bool) -> None:
    """Saves `epoch`; a best epoch is complete in `best` before `latest` starts.

    That order is what makes a kill at any moment safe: once `latest` holds an
    epoch (so a resumed run will not repeat it), `best` holds it too if it was
    the best. A resumed run that repeats an epoch `best` already holds finds
    orbax skipping the save, and the state is the same anyway.
    """
    ocp = _orbax()
    args = ocp.args.Composite(state=ocp.args.StandardSave(state),
                              meta=ocp.args.JsonSave(meta))
    with self._writing():
      if is_best:
        self._best.save(epoch, args=args)
        self._best.wait_until_finished()
      self._latest.save(epoch, args=args)

  def _managers(self) -> dict:
    return {'latest': self._latest, 'best': self._best}

  def _restore(self, manager, like: Optional[Any], epoch: Optional[int] = None):
    ocp = _orbax()
    epoch = manager.latest_step() if epoch is None else epoch
    if epoch is None:
      return None
    target = None if like is None else jax.tree_util.tree_map(
        ocp.utils.to_shape_dtype_struct, like)
    restored = manager.restore(epoch, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()))
    return restored.state, restored.meta

  def restore_best(self, like: Optional[Any]):
    """(state, meta) of the best epoch; with `like=None`, the state as saved."""
    return self._restore(self._best, like)

  def restore_latest(self, like: Optional[Any]):
    """(state, meta) of the last complete epoch; with `like=None`, as saved."""
    return self._restore(self._latest, like)

  def _read_meta(self, name: str) -> tuple[int, dict]:
    """(epoch, meta) of checkpoint `name`; raises _Unusable saying why not."""
    manager = self._managers()[name]
    epoch = manager.latest_step()
    if epoch is None:
      raise _Unusable('there is none')
    args = _orbax().args
    try:
      meta = manager.restore(epoch, args=args.Composite(meta=args.JsonRestore())).meta
    # Orbax, tensorstore and json report a damaged file with many exception
    # types; nothing else runs here, so any failure means the file is damaged.
    except Exception as e:  # pylint: disable=broad-except
      raise _Unusable(f'epoch {epoch}: its metadata cannot be read '
                      f'({type(e).__name__}: {e})') from e
    mine = [h for h in (meta or {}).get('history') or [] if h.get('phase') == self._phase]
    if not mine or mine[-1].get('epoch') != epoch:
      raise _Unusable(f'epoch {epoch}: its history does not end with that epoch')
    return epoch, meta

  def _has_checkpoints(self) -> bool:
    return any(folder.is_dir() and any(folder.iterdir())
               for folder in (self._root / 'latest', self._root / 'best'))

  def resume_meta(self) -> Optional[dict]:
    """The metadata (history) to resume from: latest's, or best's with a
    warning when latest is damaged or missing; None when the phase has no
    checkpoint at all. A WorkdirError when it has some and none is readable."""
    problems = []
    for name in ('latest', 'best'):
      try:
        _, meta = self._read_meta(name)
      except _Unusable as e:
        problems.append(f'{name}: {e}')
        continue
      if problems:
        logging.warning('%s: resuming from the best checkpoint, as the latest is unusable '
                        '(%s)', self._root, problems[0])
      self._resume_from = name
      return meta
    if self._has_checkpoints():
      raise WorkdirError(f'{self._root}: no checkpoint can be read ({"; ".join(problems)}); '
                         'move the folder away to start this phase over')
    return None

  def restore_for_resume(self, like: Any) -> tuple[Any, dict]:
    """(state, meta) to resume from, as `resume_meta` chose; if latest's arrays
    turn out damaged, best's (with a warning). A damaged latest is moved to
    `damaged/`, so that the epochs after best are saved again."""
    problems = []
    for name in ('latest', 'best')[('latest', 'best').index(self._resume_from):]:
      try:
        epoch, _ = self._read_meta(name)
        state, meta = self._restore(self._managers()[name], like, epoch)
      except _Unusable as e:
        problems.append(f'{name}: {e}')
        continue
      except Exception as e:  # pylint: disable=broad-except
        # As in _read_meta: damaged arrays surface with many exception types.
        problems.append(f'{name} epoch {epoch}: its arrays cannot be read '
                        f'({type(e).__name__}: {e})')
        continue
      if name == 'best' and self._latest.latest_step() is not None:
        logging.warning('%s: resuming from the best checkpoint (epoch %d), as the latest '
                        'is unusable (%s)', self._root, epoch, problems[0] if problems else
                        'it is older than the best')
        self._set_aside('latest')
      return state, meta
    raise WorkdirError(f'{self._root}: no checkpoint can be read ({"; ".join(problems)}); '
                       'move the folder away to start this phase over')

  def _set_aside(self, name: str) -> None:
    manager = self._managers()[name]
    damaged = self._root / 'damaged'
    with self._writing():
      damaged.mkdir(parents=True, exist_ok=True)
      for step in manager.all_steps():
        (self._root / name / str(step)).rename(damaged / f'{name}-{step}-{uuid.uuid4().hex[:8]}')
      manager.reload()

  def wait(self) -> None:
    with self._writing():
      self._latest.wait_until_finished()
      self._best.wait_until_finished()

  def close(self) -> None:
    with self._writing():
      self._latest.close()
      self._best.close()


class _Unusable(Exception):
  """A checkpoint that cannot be resumed from; the message says why."""


def saved_history(newest_first: Iterable[Checkpoints]) -> list:
  """The history to resume from, of the newest phase with a checkpoint (it
  includes the earlier phases); [] for a fresh run."""
  for checkpoints in newest_first:
    meta = checkpoints.resume_meta()
    if meta is not None:
      return meta['history']
  return []


def restore_variables(workdir: str, which: str = 'best') -> tuple[str, dict]:
  """(phase, variables) of the `which` ('best' or 'latest') checkpoint of the
  last phase that has one: 'params', and 'batch_stats' if any.

  A bottleneck phase's parameters are the head's, returned as {'head': ...}.
  """
  root = files.as_path(workdir) / 'checkpoints'
  for phase in reversed(PHASES):
    if not (root / phase / which).is_dir():
      continue
    checkpoints = Checkpoints(workdir, phase)
    try:
      restored = (checkpoints.restore_best if which == 'best'
                  else checkpoints.restore_latest)(None)
    finally:
      checkpoints.close()
    if restored is not None:
      state = restored[0]
      # The moving average, where the run kept one, is what it validated and evaluated.
      params = state.get('ema') or state['params']
      if phase == 'bottleneck':
        return phase, {'params': {'head': params}}
      return phase, {'params': params, 'batch_stats': state.get('batch_stats', {})}
  raise WorkdirError(f'{workdir}: no {which} checkpoint in {root}')


def merge_params(params: dict, loaded: dict) -> dict:
  """`params` (any tree: parameters, variables) with every leaf that `loaded`
  has at the same path and shape."""
  flat_loaded = {jax.tree_util.keystr(p): v
                 for p, v in jax.tree_util.tree_leaves_with_path(loaded)}
  taken = []

  def take(path, value):
    name = jax.tree_util.keystr(path)
    other = flat_loaded.get(name)
    if other is not None and np.shape(other) == value.shape:
      taken.append(name)
      return np.asarray(other, value.dtype)
    return value

  merged = jax.tree_util.tree_map_with_path(take, params)
  logging.info('init_from: took %d of %d parameter arrays', len(taken),
               len(jax.tree_util.tree_leaves(params)))
  if not taken:
    raise ConfigError('config.init_from: no parameter of that run matches this model '
                      '(names and shapes differ)')
  return merged
