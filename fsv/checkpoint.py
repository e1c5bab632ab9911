"""Orbax checkpoints of a run: per phase, the latest epoch (for resume) and the best.

Layout under the workdir:
  checkpoints/<phase>/latest/<epoch>/  written after every epoch; resume starts here
  checkpoints/<phase>/best/<epoch>/    rewritten when validation accuracy improves
Each holds the train state and, as JSON, the run's history so far, so a
resumed run has every epoch exactly once. Orbax writes to a temporary
directory and renames it when complete, so a killed process never leaves a
partial checkpoint behind that would be picked up. A write that fails
(read-only, disk full) is a `WorkdirError` naming the directory.
"""
from __future__ import annotations

from typing import Any, Iterable, Optional

from absl import logging
import jax
import numpy as np
import orbax.checkpoint as ocp

from fsv import files
from fsv.errors import ConfigError
from fsv.errors import WorkdirError

_ITEMS = ('state', 'meta')
# Phases in the order they run; the last one with a checkpoint is the run's result.
PHASES = ('bottleneck', 'train')


class Checkpoints:
  """The latest and best checkpoints of one phase under `<workdir>/checkpoints`."""

  def __init__(self, workdir: str, phase: str = 'train'):
    self._root = files.as_path(workdir) / 'checkpoints' / phase

    def manager(name):
      return ocp.CheckpointManager(
          self._root / name, item_names=_ITEMS,
          options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True,
                                               cleanup_tmp_directories=True))

    with self._writing():
      self._latest = manager('latest')
      self._best = manager('best')

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
    args = ocp.args.Composite(state=ocp.args.StandardSave(state),
                              meta=ocp.args.JsonSave(meta))
    with self._writing():
      if is_best:
        self._best.save(epoch, args=args)
        self._best.wait_until_finished()
      self._latest.save(epoch, args=args)

  def _restore(self, manager, like: Optional[Any]):
    epoch = manager.latest_step()
    if epoch is None:
      return None
    target = None if like is None else jax.tree_util.tree_map(
        ocp.utils.to_shape_dtype_struct, like)
    restored = manager.restore(epoch, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()))
    return restored.state, restored.meta

  def restore_latest(self, like: Any):
    """(state, meta) of the last complete epoch, or None for a fresh run."""
    return self._restore(self._latest, like)

  def restore_best(self, like: Optional[Any]):
    """(state, meta) of the best epoch; with `like=None`, the state as saved."""
    return self._restore(self._best, like)

  def latest_meta(self) -> Optional[dict]:
    epoch = self._latest.latest_step()
    if epoch is None:
      return None
    return self._latest.restore(epoch, args=ocp.args.Composite(
        meta=ocp.args.JsonRestore())).meta

  def wait(self) -> None:
    with self._writing():
      self._latest.wait_until_finished()
      self._best.wait_until_finished()

  def close(self) -> None:
    with self._writing():
      self._latest.close()
      self._best.close()


def saved_history(newest_first: Iterable[Checkpoints]) -> list:
  """The history in the newest phase's latest checkpoint (it includes earlier phases)."""
  for checkpoints in newest_first:
    meta = checkpoints.latest_meta()
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
      if phase == 'bottleneck':
        return phase, {'params': {'head': state['params']}}
      return phase, {'params': state['params'], 'batch_stats': state.get('batch_stats', {})}
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
