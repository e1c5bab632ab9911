"""Training end to end on tiny synthetic data: learning, determinism, resume, outputs,
and what stops a run: kills, NaN losses, workdirs that cannot be written."""
import errno
import json
import math
import os
import re
import signal
import subprocess
import sys
import time

from etils.epath import gpath
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

import fsv
from fsv import checkpoint as checkpoint_lib
from fsv import loop
from fsv.data.decode import Dataset, Split, SplitReport

SIZE = 24


def _tiny_dataset(num_classes=2, per_class=12, seed=0):
  """Classes differ by which colour channel is bright: learnable in a few steps."""
  rng = np.random.default_rng(seed)

  def split(n):
    labels = np.repeat(np.arange(num_classes), n).astype(np.int32)
    images = rng.integers(0, 60, (len(labels), SIZE, SIZE, 3)).astype(np.uint8)
    images[np.arange(len(labels)), :, :, labels % 3] += 180
    return Split(images=images, labels=labels, files=tuple(map(str, range(len(labels)))))

  splits = {'train': split(per_class), 'validation': split(4), 'test': split(4)}
  report = {k: SplitReport(loaded=len(v.labels), skipped=(), converted=0)
            for k, v in splits.items()}
  return Dataset(class_names=tuple(f'c{i}' for i in range(num_classes)),
                 splits=splits, report=report)


def _without_seconds(history):
  return [{k: v for k, v in entry.items() if k != 'seconds'} for entry in history]


def _assert_trees_equal(a, b):
  jax.tree_util.tree_map(np.testing.assert_array_equal, a, b)


def _without_wall_seconds(results):
  return {k: v for k, v in results.items() if k != 'wall_seconds'}


def _config(**train):
  config = fsv.base_config()
  config.data.dir = 'unused-when-a-dataset-is-passed'
  config.data.image_size = (SIZE, SIZE)
  config.model.conv_features = (8, 8)
  config.model.dense_units = 16
  config.model.flatten_dropout = 0.0
  config.train.update(dict(epochs=3, batch_size=8, optimizer='adam',
                           learning_rate=3e-3), **train)
  return config


@pytest.mark.parametrize('num_classes', [2, 3])
def test_fit_learns_binary_and_multiclass(num_classes):
  result = fsv.fit(_config(epochs=4), dataset=_tiny_dataset(num_classes))
  assert len(result.history) == 4
  assert result.history[-1]['train_loss'] < result.history[0]['train_loss']
  assert result.results['test_accuracy'] >= 0.75
  probabilities = fsv.predict(result, result.dataset.splits['test'].images)
  assert probabilities.shape == (4 * num_classes, num_classes)
  np.testing.assert_allclose(probabilities.sum(-1), 1, rtol=1e-5)


def test_same_seed_same_numbers_different_seed_different_numbers():
  data = _tiny_dataset()
  a = fsv.fit(_config(epochs=2), dataset=data).history
  b = fsv.fit(_config(epochs=2), dataset=data).history
  config = _config(epochs=2)
  config.seed = 1
  c = fsv.fit(config, dataset=data).history
  assert _without_seconds(a) == _without_seconds(b)
  assert _without_seconds(a) != _without_seconds(c)


def test_workdir_outputs_and_resume_continue_from_saved_epoch(tmp_path):
  data = _tiny_dataset()
  full = fsv.fit(_config(epochs=3), dataset=data, workdir=str(tmp_path / 'full'))

  workdir = str(tmp_path / 'interrupted')
  fsv.fit(_config(epochs=2), dataset=data, workdir=workdir)  # "interrupted" after 2
  resumed = fsv.fit(_config(epochs=3), dataset=data, workdir=workdir,
                    allow_changes=('train.epochs',))
  assert [h['epoch'] for h in resumed.history] == [1, 2, 3]
  assert resumed.history[2].pop('config_changes') == {'train.epochs': [2, 3]}
  # resumed == uninterrupted, bit for bit
  assert _without_seconds(resumed.history) == _without_seconds(full.history)
  _assert_trees_equal(resumed.params, full.params)

  for name in ('history.json', 'results.json', 'curves.png', 'config.json',
               'data_report.json'):
    assert os.path.getsize(os.path.join(workdir, name)) > 0
  history = json.load(open(os.path.join(workdir, 'history.json')))
  assert [h['epoch'] for h in history] == [1, 2, 3]
  results = json.load(open(os.path.join(workdir, 'results.json')))
  assert {'test_accuracy', 'test_loss', 'wall_seconds'} <= set(results)
  assert _without_wall_seconds(results) == _without_wall_seconds(full.results)
  best = max(history, key=lambda h: h['val_accuracy'])
  assert results['evaluated'] == 'best' and results['best_epoch'] == best['epoch']
  assert results['val_accuracy'] == best['val_accuracy']
  assert os.listdir(os.path.join(workdir, 'checkpoints', 'train', 'latest')) == ['3']


def test_epoch_indices_cover_every_example_once_per_pass():
  order = loop.epoch_indices(seed=0, epoch=1, num_examples=10, count=25)
  assert len(order) == 25
  assert sorted(order[:10]) == list(range(10)) and sorted(order[10:20]) == list(range(10))
  assert not np.array_equal(order, loop.epoch_indices(0, 2, 10, 25))


def test_class_count_disagreeing_with_data_is_an_error():
  config = _config()
  config.model.num_classes = 5
  with pytest.raises(fsv.ConfigError, match='num_classes=5 but the data has 2'):
    fsv.fit(config, dataset=_tiny_dataset())


@pytest.fixture
def image_folder(make_image_folder):
  classes = lambda n: {'cats': n, 'dogs': n}
  return make_image_folder({'train': classes(6), 'validation': classes(2),
                            'test': classes(2)})


def _run_overrides(tmp_path, data_dir, epochs: int) -> dict:
  """What makes configs/scratch_aug.py a tiny run on `data_dir`, as flat keys."""
  return {'data.dir': str(data_dir), 'data.cache_dir': str(tmp_path / 'cache'),
          'data.image_size': (SIZE, SIZE), 'model.conv_features': (4, 4),
          'model.dense_units': 8, 'train.epochs': epochs, 'train.batch_size': 4}


def _run_command(overrides: dict, workdir) -> list:
  return [sys.executable, '-m', 'experiments.run', '--config=configs/scratch_aug.py',
          *(f'--config.{key}={value}' for key, value in overrides.items()),
          f'--workdir={workdir}']


def test_experiments_run_end_to_end_on_an_image_folder(tmp_path, image_folder):
  workdir = tmp_path / 'work'
  command = _run_command(_run_overrides(tmp_path, image_folder, epochs=2), workdir)
  proc = subprocess.run(command, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  results = json.load(open(workdir / 'results.json'))
  assert results['class_names'] == ['cats', 'dogs'] and results['epochs'] == 2
  assert 0 <= results['test_accuracy'] <= 1
  assert 'checkpoint_manager.py' not in proc.stderr  # orbax's INFO chatter is filtered

  rerun = subprocess.run(command, capture_output=True, text=True, timeout=300)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert 'train: resuming after epoch 2 of 2' in rerun.stderr and 'from cache' in rerun.stderr.lower()


def _history_epochs(workdir) -> list:
  path = workdir / 'history.json'
  return [h['epoch'] for h in json.loads(path.read_text())] if path.exists() else []


def _epochs_being_saved(workdir) -> list:
  """Epochs whose checkpoint orbax is writing now (it writes to a temporary folder)."""
  return [int(path.name.split('.')[0]) for path in
          (workdir / 'checkpoints' / 'train').glob('*/*.orbax-checkpoint-tmp*')]


def _kill_when(command, env, ready, log) -> None:
  """Runs `command` and SIGKILLs it as soon as `ready()`; fails if it ends first."""
  with open(log, 'w') as stderr:
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline and not ready():
      time.sleep(0.001)
    proc.kill()
    proc.wait()
  assert proc.returncode == -signal.SIGKILL, (
      f'the run ended (exit {proc.returncode}) before the kill point:\n'
      f'{log.read_text()[-3000:]}')


def test_killed_run_resumes_and_loses_nothing(tmp_path, image_folder):
  overrides = _run_overrides(tmp_path, image_folder, epochs=4)
  # Fast enough that validation accuracy improves after epoch 1, so `best` is
  # rewritten and a kill can land in its write too.
  overrides.update({'train.learning_rate': 1e-2, 'train.warmup_epochs': 0})
  workdir = tmp_path / 'killed'
  command = _run_command(overrides, workdir)
  # Later launches load the compiled steps instead of compiling them again.
  env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=str(tmp_path / 'compiled'),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0')
  kill_points = [
      lambda: len(_history_epochs(workdir)) >= 1,
      lambda: max(_epochs_being_saved(workdir), default=0) >= 3,  # mid-write
      lambda: len(_history_epochs(workdir)) >= 4,  # trained; results not written
  ]
  for i, ready in enumerate(kill_points):
    _kill_when(command, env, ready, tmp_path / f'kill{i}.log')
  proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]

  config = fsv.load_config('configs/scratch_aug.py')
  config.update_from_flattened_dict(overrides)
  uninterrupted = fsv.fit(config, workdir=str(tmp_path / 'uninterrupted'))
  history = json.loads((workdir / 'history.json').read_text())
  assert [h['epoch'] for h in history] == [1, 2, 3, 4]
  assert _without_seconds(history) == _without_seconds(uninterrupted.history)
  results = json.loads((workdir / 'results.json').read_text())
  assert _without_wall_seconds(results) == _without_wall_seconds(uninterrupted.results)
  killed = checkpoint_lib.Checkpoints(workdir)
  reference = checkpoint_lib.Checkpoints(tmp_path / 'uninterrupted')
  for restore in ('restore_latest', 'restore_best'):  # (state, meta): the states
    _assert_trees_equal(getattr(killed, restore)(None)[0],
                        getattr(reference, restore)(None)[0])
  killed.close()
  reference.close()


def _diverging_config(on_nonfinite_loss: str):
  # One step an epoch: epoch 1 sees the initial weights, epoch 2 the diverged ones.
  return _config(epochs=3, steps_per_epoch=1, learning_rate=1e30,
                 on_nonfinite_loss=on_nonfinite_loss)


def test_nonfinite_loss_stops_the_run_before_its_epoch_is_checkpointed(tmp_path):
  workdir = tmp_path / 'work'
  with pytest.raises(fsv.NonFiniteLossError,
                     match=r'^train epoch 2 step 1: the training loss is (nan|inf)'):
    fsv.fit(_diverging_config('stop'), dataset=_tiny_dataset(), workdir=str(workdir))
  assert os.listdir(workdir / 'checkpoints' / 'train' / 'latest') == ['1']
  assert _history_epochs(workdir) == [1]
  assert (workdir / 'curves.png').is_file()  # drawn, though the run stopped early


def test_nonfinite_loss_can_be_ignored():
  history = fsv.fit(_diverging_config('ignore'), dataset=_tiny_dataset()).history
  assert len(history) == 3 and not math.isfinite(history[1]['train_loss'])


@pytest.mark.parametrize('make_unwritable', [
    pytest.param(lambda workdir: workdir.write_text('a file'), id='a-file'),
    pytest.param(lambda workdir: workdir.mkdir(mode=0o555), id='read-only',
                 marks=pytest.mark.skipif(os.geteuid() == 0,
                                          reason='root can write to a read-only folder')),
])
def test_unwritable_workdir_fails_before_the_data_is_loaded(tmp_path, make_unwritable):
  workdir = tmp_path / 'work'
  make_unwritable(workdir)
  # _config's data.dir does not exist: loading the data first would be a DataError.
  with pytest.raises(fsv.WorkdirError,
                     match=f'^cannot write to {re.escape(str(workdir))}: '):
    fsv.fit(_config(), workdir=str(workdir))


def test_checkpoint_folder_that_cannot_be_made_is_a_workdir_error(tmp_path):
  workdir = tmp_path / 'work'
  workdir.mkdir()
  (workdir / 'checkpoints').write_text('a file')
  with pytest.raises(fsv.WorkdirError,
                     match=f'^cannot write to {re.escape(str(workdir / "checkpoints"))}'):
    fsv.fit(_config(), dataset=_tiny_dataset(), workdir=str(workdir))


def _full_disk(*args, **kwargs):
  raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


_open = gpath.PosixGPath.open


def _open_on_a_full_disk(path, mode='r', *args, **kwargs):
  """The atomic writer's temporary files cannot be written; everything else can."""
  if 'w' in mode and path.name.endswith('.tmp'):
    _full_disk()
  return _open(path, mode, *args, **kwargs)


@pytest.mark.parametrize('writer', [
    pytest.param((gpath.PosixGPath, 'open', _open_on_a_full_disk), id='curves'),
    pytest.param((ocp.CheckpointManager, 'save', _full_disk), id='checkpoint'),
])
def test_full_disk_is_an_error_naming_the_workdir(tmp_path, monkeypatch, writer):
  monkeypatch.setattr(*writer)
  workdir = tmp_path / 'work'
  with pytest.raises(fsv.WorkdirError, match=(
      f'^cannot write to {re.escape(str(workdir))}/.*No space left on device')):
    fsv.fit(_config(), dataset=_tiny_dataset(), workdir=str(workdir))


def test_entry_point_reports_a_workdir_error_in_one_line(tmp_path, image_folder):
  workdir = tmp_path / 'work'
  workdir.write_text('a file')
  proc = subprocess.run(
      _run_command(_run_overrides(tmp_path, image_folder, epochs=1), workdir),
      capture_output=True, text=True, timeout=300)
  assert proc.returncode == 1
  assert proc.stderr.splitlines()[-1].startswith(f'error: cannot write to {workdir}: ')
  assert 'Traceback' not in proc.stderr
