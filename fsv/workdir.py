"""A run's workdir: every file in it, written and read back here; `load_run`.

  config.json            the resolved config (validated again when loaded)
  data_report.json       images loaded, converted, skipped and why, per split
  history.json           one entry per epoch, every phase
  curves.png             training against validation loss and accuracy (redrawn
                         at most every CURVES_EVERY_S seconds, and at the end)
  tensorboard/           the same per-epoch metrics as TensorBoard events
                         (local workdirs), tags '<phase>/<metric>' 
  checkpoints/<phase>/{latest,best}/<epoch>/   orbax (fsv/checkpoint.py)
  results.json           what was evaluated and how well; written last, so a
                         workdir without it is unfinished
  predictions.npz        validation and test probabilities (also of mirrored
                         images) with labels and files, for ensembles
  evaluation/<name>/     metrics.json, confusion_matrix.png, top_losses.png,
                         mistakes.csv (fsv/evaluate.py); `test` after a run
  export/<format>/       exported models and their model.json (fsv/export.py)

A workdir may be a local path or a URL such as gs://bucket/run (Cloud TPU).
Every write goes through the one atomic writer (fsv/files.py) and fails as
a WorkdirError naming the path; in a multi-host run only process 0 writes
these files (every host computes the same), orbax coordinates the
checkpoints itself.

The workdir is the run's contract. A local one is locked (`.lock`, an
fcntl lock the kernel releases on any exit, SIGKILL included) for as long
as a run uses it, so a second run on it is refused. A rerun must describe
the same run: its config may differ only in keys that cannot change
results (`FREE_KEYS`), or in `RESUMABLE_KEYS` the user allows by name; and
its data must be the same images with the same labels. Both are checked
before anything is written.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import time
from typing import Any, Sequence
import uuid

import jax
import numpy as np

from fsv import checkpoint as checkpoint_lib
from fsv import config as config_lib
from fsv import files
from fsv import history as history_lib
from fsv import models
from fsv import plots
from fsv.errors import ConfigError, WorkdirError
from fsv.run import Run

# The layout above; a workdir whose results.json says more is from a newer fsv.
FORMAT = 1
CHECKPOINTS = ('best', 'last')
# Drawing curves.png takes 0.6-1.3 s: each epoch of a head on cached
# features, a fraction of a second, took three times as long with it.
CURVES_EVERY_S = 30.0
# Config keys a rerun may change freely: where caches live, whether TFDS may
# download, evaluation batch sizes (padding is masked; float sums may round
# differently in the last bit), what to do after a NaN loss.
FREE_KEYS = frozenset((
    'data.cache_dir', 'model.cache_dir', 'data.download', 'data.tfds_data_dir',
    'bottleneck.eval_batch_size', 'train.eval_batch_size',
    'bottleneck.on_nonfinite_loss', 'train.on_nonfinite_loss'))
# Keys a rerun may change when the user names them (`allow_changes`): the run
# continues from its checkpoints under the new value, and the history
# records the change at the first epoch it applies to.
RESUMABLE_KEYS = frozenset((
    'bottleneck.epochs', 'train.epochs', 'bottleneck.learning_rate',
    'train.learning_rate', 'train.evaluate_with'))


def _writes_files() -> bool:
  return jax.process_index() == 0


class Workdir:
  """The files of the workdir at `path`."""

  def __init__(self, path: str):
    self.path = str(path)
    self.root = files.as_path(path)
    self._events = None  # the TensorBoard writer, once an epoch is written
    # time.monotonic() of the last curves.png, or of opening: a run shorter
    # than CURVES_EVERY_S draws it once, at its end.
    self._curves_drawn_at = time.monotonic()
    self._undrawn_history = None  # the history curves.png does not show yet

  def _write(self, name: str, write) -> None:
    if _writes_files():
      with files.writing(self.root / name):
        write(self.root / name)

  @contextlib.contextmanager
  def locked(self):
    """Holds the workdir's lock; a WorkdirError if another process holds it.

    Local workdirs only (gs:// has no such lock), on process 0 of a
    multi-host run."""
    if '://' in self.path or not _writes_files():
      yield
      return
    fd = os.open(self.root / '.lock', os.O_RDWR | os.O_CREAT, 0o644)
    try:
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except BlockingIOError:
        holder = os.read(fd, 64).decode(errors='replace').strip() or 'another process'
        raise WorkdirError(f'workdir {self.path} is in use by process {holder}') from None
      os.ftruncate(fd, 0)
      os.write(fd, str(os.getpid()).encode())
      yield
    finally:
      os.close(fd)  # releases the lock

  def _holds_a_run(self) -> bool:
    checkpoints = self.root / 'checkpoints'
    return (self.root / 'results.json').exists() or (
        checkpoints.is_dir() and any(checkpoints.iterdir()))

  def config_changes(self, config, allowed: Sequence[str] = ()) -> dict:
    """{key: [stored value, new value]} for the allowed changes of `config`
    against the run the workdir holds; a WorkdirError naming every other one.
    """
    if not self._holds_a_run() or not (self.root / 'config.json').exists():
      return {}
    as_json = lambda c: config_lib.flat(json.loads(json.dumps(c.to_dict())))  # tuples as lists
    new = as_json(config)
    # Keys added to fsv after the run was written have their defaults there.
    stored = {**as_json(config_lib.base(config.model.name)),
              **config_lib.flat(self.read_json('config.json'))}
    changed = {key: [stored.get(key), new.get(key)] for key in sorted(set(stored) | set(new))
               if stored.get(key) != new.get(key) and key not in FREE_KEYS}
    refused = [key for key in changed if key not in allowed]
    if refused:
      listed = ', '.join(f'{key} {changed[key][0]!r} -> {changed[key][1]!r}' for key in refused)
      resumable = [key for key in refused if key in RESUMABLE_KEYS]
      raise WorkdirError(
          f'workdir {self.path} holds a run of another config: {listed}. Use another '
          'workdir for a new run'
          + (f'; to continue this one under the change, allow it: --allow_changes='
             f'{",".join(resumable)}' if resumable == refused else ''))
    unresumable = [key for key in changed if key not in RESUMABLE_KEYS]
    if unresumable:
      raise WorkdirError(f'workdir {self.path}: {unresumable} cannot change while a run '
                         f'continues (only {sorted(RESUMABLE_KEYS)} can); use another '
                         'workdir')
    return changed

  def check_same_data(self, dataset) -> None:
    """The data is the run's: same classes, files, labels and pixels per split."""
    if not self._holds_a_run() or not (self.root / 'data_report.json').exists():
      return
    stored = self.read_json('data_report.json')
    if stored.get('class_names') != list(dataset.class_names):
      raise WorkdirError(f'workdir {self.path} holds a run on the classes '
                         f'{stored.get("class_names")}, not {list(dataset.class_names)}; '
                         'use another workdir')
    digests = stored.get('digests')
    if digests is None:  # written by an fsv that did not record them
      return
    differ = sorted(split for split in set(digests) | set(dataset.splits)
                    if digests.get(split) != (dataset.splits[split].digest
                                              if split in dataset.splits else None))
    if differ:
      raise WorkdirError(f'workdir {self.path} holds a run on other data: its {differ} '
                         'split(s) differ (files, labels or pixels); use another workdir')

  def check_writable(self) -> None:
    """Creates the workdir and a file in it, so that a run fails before any
    work; on every host, as each writes its part of the checkpoints."""
    with files.writing(self.path):
      self.root.mkdir(parents=True, exist_ok=True)
      probe = self.root / f'.fsv-writable-{uuid.uuid4().hex}'
      probe.write_text('')
      probe.unlink()

  def write_config(self, config) -> None:
    self._write('config.json', lambda path: files.write_json(path, config.to_dict()))

  def write_data_report(self, dataset) -> None:
    report = {'class_names': list(dataset.class_names),
              'splits': {name: dataclasses.asdict(r) for name, r in dataset.report.items()},
              'digests': {name: split.digest for name, split in dataset.splits.items()}}
    self._write('data_report.json', lambda path: files.write_json(path, report))

  def write_history(self, history: Sequence[dict]) -> None:
    """history.json and the newest epoch as TensorBoard events; curves.png
    at most every `CURVES_EVERY_S` seconds (`write_curves` draws the last)."""
    self._write('history.json', lambda path: files.write_json(path, list(history)))
    self._undrawn_history = list(history)
    if time.monotonic() - self._curves_drawn_at >= CURVES_EVERY_S:
      self.write_curves()
    if history and '://' not in self.path and _writes_files():
      with files.writing(self.root / 'tensorboard'):
        self._tensorboard_epoch(len(history), history[-1])

  def write_curves(self) -> None:
    """curves.png of the history last written, unless it shows it already."""
    history, self._undrawn_history = self._undrawn_history, None
    if history is None:
      return
    best = history_lib.best_entry(history, history[-1]['phase']) if history else None
    self._write('curves.png', lambda path: plots.save(plots.curves(history, best), path))
    self._curves_drawn_at = time.monotonic()

  def _tensorboard_epoch(self, step: int, entry: dict) -> None:
    """One epoch's numbers; the step counts epochs over all phases, as curves.png."""
    if self._events is None:
      from tensorboardX import SummaryWriter  # imported when a run writes its first epoch
      self._events = SummaryWriter(str(self.root / 'tensorboard'))
    for key, value in entry.items():
      if key not in ('phase', 'epoch') and isinstance(value, (int, float)):
        self._events.add_scalar(f'{entry["phase"]}/{key}', value, step)
    self._events.flush()

  def close(self) -> None:
    """Draws curves.png of a run that stopped before its end (a NaN loss, an
    interrupt) and closes the TensorBoard event file, if a run opened one."""
    self.write_curves()
    if self._events is not None:
      self._events.close()
      self._events = None

  def write_results(self, results: dict) -> None:
    self._write('results.json', lambda path: files.write_json(path, results))

  def write_predictions(self, arrays: dict) -> None:
    """Numpy arrays, never pickled objects."""
    self._write('predictions.npz', lambda path: files.write_atomically(
        path, lambda f: np.savez(f, **arrays)))

  def write_evaluation(self, name: str, evaluation) -> str:
    folder = self.root / 'evaluation' / name
    if _writes_files():
      with files.writing(folder):
        evaluation.write(folder)
    return str(folder)

  def export_dir(self, format_: str) -> str:
    return str(self.root / 'export' / format_)

  def checkpoints(self, phase: str) -> checkpoint_lib.Checkpoints:
    return checkpoint_lib.Checkpoints(self.path, phase)

  def read_json(self, name: str) -> Any:
    try:
      return files.read_json(self.root / name)
    except FileNotFoundError:
      raise
    except (OSError, ValueError) as e:
      raise WorkdirError(f'{self.root / name}: cannot be read ({e})') from None


def _check_fits(workdir: str, expected, loaded) -> None:
  """The checkpoint's arrays are the model's, name for name and shape for shape."""
  shapes = lambda tree: {jax.tree_util.keystr(p): tuple(v.shape)
                         for p, v in jax.tree_util.tree_leaves_with_path(tree)}
  want, have = shapes(expected), shapes(loaded)
  problems = sorted(set(want) ^ set(have)) + sorted(
      f'{k}: {have[k]} instead of {want[k]}' for k in set(want) & set(have)
      if want[k] != have[k])
  if problems:
    raise WorkdirError(f'{workdir}: its checkpoint does not fit the model config.json '
                       f'describes ({len(problems)} differences, e.g. {problems[:3]}); '
                       'was it written by another version of fsv?')


def init_variables(config, model, image_size) -> dict:
  """A run's starting variables: random from its seed, pretrained weights
  where the model has them, then `config.init_from`'s best ones."""
  variables = models.init_variables(config.model, model, jax.random.PRNGKey(config.seed),
                                    (*image_size, 3))
  if config.init_from:
    _, loaded = checkpoint_lib.restore_variables(config.init_from, 'best')
    variables = checkpoint_lib.merge_params(variables, loaded)
  return variables


def check_init_from(path: str) -> None:
  """`config.init_from` names a workdir with a best checkpoint; before any work."""
  checkpoints = files.as_path(path) / 'checkpoints'
  if not any((checkpoints / phase / 'best').is_dir() for phase in checkpoint_lib.PHASES):
    raise ConfigError(f'config.init_from={path!r}: not a workdir with a best checkpoint '
                      f'(no {checkpoints}/<phase>/best)')


def load_run(workdir: str, checkpoint: str = 'best') -> Run:
  """The finished run in `workdir` as a `Run`, with its `checkpoint`: 'best'
  (by validation accuracy) or 'last' (the last epoch) of its last phase.

  Raises WorkdirError when the workdir is missing, unfinished, or written by
  an incompatible version of fsv.
  """
  if checkpoint not in CHECKPOINTS:
    raise ValueError(f'checkpoint={checkpoint!r}: must be one of {CHECKPOINTS}')
  wd = Workdir(workdir)
  if not wd.root.is_dir():
    raise WorkdirError(f'{workdir}: no such workdir')
  try:
    results = wd.read_json('results.json')
    stored_config = wd.read_json('config.json')
  except FileNotFoundError as e:
    raise WorkdirError(f'{workdir}: the run has not finished ({e.filename} is missing); '
                       'rerun its command to resume it') from None
  if results.get('workdir_format', FORMAT) > FORMAT:
    raise WorkdirError(f'{workdir}: written by a newer fsv (workdir format '
                       f'{results["workdir_format"]}, this one reads {FORMAT})')
  try:
    config = config_lib.validate(stored_config)
  except ConfigError as e:
    raise WorkdirError(f'{workdir}: its config.json does not fit this version of fsv '
                       f'({e})') from None
  class_names = tuple(results['class_names'])
  model = models.build(config.model, len(class_names), config.dtype)
  image_size = tuple(config.data.image_size)
  if results.get('evaluated') == 'initial':  # a run of 0 epochs: nothing was trained
    variables = init_variables(config, model, image_size)
    checkpoint = 'initial'
  else:
    expected = jax.eval_shape(model.init, jax.random.PRNGKey(0),
                              jax.ShapeDtypeStruct((1, *image_size, 3), np.float32))
    phase, loaded = checkpoint_lib.restore_variables(
        workdir, 'best' if checkpoint == 'best' else 'latest')
    if phase == 'bottleneck':  # the checkpoint has the head; the base is as initialised
      _check_fits(workdir, expected['params']['head'], loaded['params']['head'])
      variables = init_variables(config, model, image_size)
      variables['params'] = {**variables['params'], 'head': loaded['params']['head']}
    else:
      _check_fits(workdir, expected, {k: v for k, v in loaded.items() if v})
      variables = loaded
  history = wd.read_json('history.json') if (wd.root / 'history.json').exists() else []
  return Run(config=config, class_names=class_names, model=model, variables=variables,
             history=history, results=results, workdir=workdir, checkpoint=checkpoint)
