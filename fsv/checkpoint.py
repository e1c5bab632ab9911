"""Orbax checkpoints of a run: the latest epoch (for resume) and the best epoch.

Layout under the workdir:
  checkpoints/latest/<epoch>/  written after every epoch; resume starts here
  checkpoints/best/<epoch>/    rewritten when validation accuracy improves
Each holds the train state and, as JSON, the history so far, so a resumed
run has every epoch exactly once. Orbax writes to a temporary directory and
renames it when complete, so a killed process never leaves a partial
checkpoint behind that would be picked up.
"""
from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp

_ITEMS = ('state', 'meta')


class Checkpoints:
  """The latest and best checkpoints under `<workdir>/checkpoints`."""

  def __init__(self, workdir: str):
    root = os.path.join(os.path.abspath(workdir), 'checkpoints')

    def manager(name):
      return ocp.CheckpointManager(
          os.path.join(root, name), item_names=_ITEMS,
          options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True,
                                               cleanup_tmp_directories=True))

    self._latest = manager('latest')
    self._best = manager('best')

  def save(self, epoch: int, state: Any, meta: dict, is_best: bool) -> None:
    args = ocp.args.Composite(state=ocp.args.StandardSave(state),
                              meta=ocp.args.JsonSave(meta))
    self._latest.save(epoch, args=args)
    if is_best:
      self._best.save(epoch, args=args)

  def _restore(self, manager, like: Any):
    epoch = manager.latest_step()
    if epoch is None:
      return None
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, like)
    restored = manager.restore(epoch, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
    return restored.state, restored.meta

  def restore_latest(self, like: Any):
    """(state, meta) of the last complete epoch, or None for a fresh run."""
    return self._restore(self._latest, like)

  def restore_best(self, like: Any):
    return self._restore(self._best, like)

  def wait(self) -> None:
    self._latest.wait_until_finished()
    self._best.wait_until_finished()

  def close(self) -> None:
    self._latest.close()
    self._best.close()
