"""Devices: the mesh, where each array lives on it, and each host's part of a batch.

fsv is data parallel. The mesh has one axis, `data`, over all devices (of all
hosts); every batch is split along it and parameters and optimizer state are
replicated. `state_shardings` is the one place that decides a leaf's layout,
so sharding large parameters over the mesh later changes that function only.
Batch sizes in the config are global: a step's batch is split evenly over
the devices (and over `accumulation_steps` micro-batches).

Every host holds the whole dataset and computes the same example order, so
the global batch is known everywhere; each host reads only the rows its own
devices hold (`shard_rows`). Multi-host runs call `jax.distributed.initialize`
before anything else (experiments/run.py --distributed).
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import jax
from jax.experimental import mesh_utils
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import numpy as np

from fsv.config import ConfigError

DATA = 'data'


def make_mesh(devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
  """A one-axis (`data`) mesh over `devices`, by default all devices of all hosts."""
  devices = jax.devices() if devices is None else list(devices)
  # Ordered for the interconnect's topology (TPU), as in JAX's recommendation.
  return Mesh(mesh_utils.create_device_mesh((len(devices),), devices), (DATA,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Examples split over the devices."""
  return NamedSharding(mesh, P(DATA))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def state_shardings(mesh: Mesh, tree: Any) -> Any:
  """The sharding of each leaf of parameters, optimizer state or a train state."""
  return jax.tree_util.tree_map(lambda _: replicated(mesh), tree)


def put_state(mesh: Mesh, tree: Any) -> Any:
  """`tree` (parameters, a train state) laid out on the mesh per `state_shardings`."""
  return jax.device_put(tree, state_shardings(mesh, tree))


def shard_rows(mesh: Mesh, array: np.ndarray, rows: np.ndarray) -> jax.Array:
  """`array[rows]` as one global batch split over `data`.

  Every host passes its full `array` and the same `rows`; each reads only the
  rows of its own devices, so no host gathers the whole batch.
  """
  return jax.make_array_from_callback(
      (len(rows),) + array.shape[1:], batch_sharding(mesh),
      lambda index: array[rows[index[0]]])


def padded_rows(start: int, batch_size: int, num_examples: int) -> tuple[np.ndarray, int]:
  """(rows, how many are real) of the batch at `start`; past the end the last
  example repeats (masked or dropped by the caller), so every batch has one
  shape, compiled once, that splits evenly over the devices."""
  rows = np.arange(start, start + batch_size)
  return np.minimum(rows, num_examples - 1), min(batch_size, num_examples - start)


def eval_batch_size(values, mesh: Mesh) -> int:
  """A phase's evaluation (and feature extraction) batch: `eval_batch_size`
  (0: `batch_size`) rounded up to split over the devices. Evaluation pads
  and masks the rows past the end, so a larger batch changes no result."""
  size = values.eval_batch_size or values.batch_size
  return -(-size // mesh.size) * mesh.size


def to_host(array: jax.Array) -> np.ndarray:
  """A global array as numpy on every host (gathered from other hosts if needed)."""
  return multihost_utils.process_allgather(array, tiled=True)


def check_batch_sizes(config, mesh: Mesh) -> None:
  """Each phase's global training batches split evenly over the mesh's
  devices; before any work.

  A training batch is split into `accumulation_steps` micro-batches first,
  and each of those over the devices. Evaluation batches need no check:
  `eval_batch_size` rounds them up.
  """
  devices = mesh.size
  hosts = f' on {jax.process_count()} hosts' if jax.process_count() > 1 else ''
  for group in ('bottleneck', 'train'):
    values = config[group]
    if not values.epochs:
      continue
    micro = values.batch_size // values.accumulation_steps
    if micro % devices:
      raise ConfigError(
          f'config.{group}.batch_size={values.batch_size}: the global batch must '
          f'split evenly over {devices} devices{hosts}'
          + (f' in each of {group}.accumulation_steps={values.accumulation_steps} '
             'micro-batches' if values.accumulation_steps > 1 else '')
          + f'; make it a multiple of {devices * values.accumulation_steps}')
