"""Runs that train together: one vmapped step for members of a sweep.

Members whose configs differ only in `VARYING` (the seed, the learning
rates) and train one phase share its model, optimizer and data; stacked on a
leading axis, they take one jitted, vmapped step together
(`loop.train_members`), each with its own parameters, optimizer state,
example order, dropout and augmentation keys, exactly as if it ran alone
(up to float rounding: a member's learning rate becomes a scale of its
updates). The data is read and, for the head phase, the bottleneck
features computed once. Each member keeps its own workdir: checkpoints,
history, results, resume.

That is what makes many seeds cheap where the trained model is small: the
head on cached bottleneck features, or the small convnet. Members share
the base's features, so a head phase needs a base that does not depend on
the seed (pretrained weights); they run on one device.
"""
from __future__ import annotations

import contextlib
import time
from typing import Optional, Sequence

import jax

from fsv import config as config_lib
from fsv import data as data_lib
from fsv import loop
from fsv import models
from fsv import parallel
from fsv import phases
from fsv import workdir as workdir_lib
from fsv.errors import ConfigError
from fsv.run import Run

VARYING = ('seed', 'bottleneck.learning_rate', 'train.learning_rate')


def cannot_train_together(configs: Sequence) -> str:
  """Why these (validated) configs cannot train together, or ''."""
  first = config_lib.flat(configs[0].to_dict())
  for config in configs[1:]:
    other = config_lib.flat(config.to_dict())
    differ = sorted(k for k in first if first[k] != other[k] and k not in VARYING)
    if differ:
      return f'they differ in {differ}, not only in {list(VARYING)}'
  config = configs[0]
  if bool(config.bottleneck.epochs) == bool(config.train.epochs):
    return 'they must train exactly one phase (bottleneck or train)'
  if config.bottleneck.epochs and not config.model.get('weights'):
    return ("their bases are random and differ by seed; the head phase trains together "
            'on one base (pretrained weights)')
  if (config.data.validation_split or config.data.folds) and len({c.seed for c in configs}) > 1:
    return 'their seeds hold out different validation images'
  group = config.bottleneck if config.bottleneck.epochs else config.train
  if group.accumulation_steps != 1:
    return 'gradient accumulation is not vectorised'
  if group.early_stopping_patience:
    return 'early stopping would end them after different epochs'
  return ''


def fit_members(configs: Sequence, workdirs: Sequence[str],
                dataset: Optional[data_lib.Dataset] = None,
                mesh: Optional[jax.sharding.Mesh] = None) -> list[Run]:
  """`fit` for each config into its workdir, the members training together
  (on `dataset`, or the data the configs describe, read once)."""
  started = time.time()
  configs = [config_lib.validate(c) for c in configs]
  why = cannot_train_together(configs)
  if why:
    raise ConfigError(f'these {len(configs)} runs cannot train together: {why}')
  mesh = parallel.make_mesh(jax.devices()[:1]) if mesh is None else mesh
  if mesh.size != 1:
    raise ConfigError('runs that train together use one device; give a one-device mesh')
  first = configs[0]
  parallel.check_batch_sizes(first, mesh)
  phases.check_before_data(first)
  wds = [workdir_lib.Workdir(w) for w in workdirs]
  for wd in wds:
    wd.check_writable()
  with contextlib.ExitStack() as locks:
    for wd in wds:
      locks.enter_context(wd.locked())
    notes = [{'config_changes': changes} if changes else {}
             for changes in (wd.config_changes(c) for c, wd in zip(configs, wds))]
    dataset = phases.load_data(first, dataset)
    model = models.build(first.model, dataset.num_classes, first.dtype)
    variables = [phases.start(c, model, dataset, wd) for c, wd in zip(configs, wds)]
    opened = []
    try:
      for wd in wds:
        opened.append(phases.open_checkpoints(wd))
      name = 'bottleneck' if first.bottleneck.epochs else 'train'
      if name == 'bottleneck':
        phase = phases.make_bottleneck_phase(first, model, variables[0], dataset, mesh)
        starts = [{'params': v['params']['head']} for v in variables]
      else:
        phase = phases.make_train_phase(first, model, variables[0], dataset,
                                        phases.train_start(first, []))
        starts = variables
      rate = lambda c: c[name].learning_rate
      members = [loop.Member(c.seed, history, checkpoints.get(name), wd.write_history, note,
                             rate(c) / rate(first), label=f'{wd.path}: ')
                 for c, wd, (checkpoints, history), note in zip(configs, wds, opened, notes)]
      trained = loop.train_members(phase, starts, members, mesh)
    finally:
      for checkpoints, _ in opened:
        phases.close_checkpoints(checkpoints)
      for wd in wds:
        wd.close()
    pick = lambda last, best: best if first.train.evaluate_with == 'best' else last
    runs = []
    for c, wd, v, (last, best), member in zip(configs, wds, variables, trained, members):
      v = phases.with_head(v, pick(last, best)) if name == 'bottleneck' else pick(last, best)
      runs.append(phases.finish(c, model, v, dataset, wd, mesh, phase, member.history,
                                member.note, started))
    return runs
