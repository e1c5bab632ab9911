"""The workdir as the run's contract: one run at a time, the same config and data
on resume, damaged checkpoints never a silent restart."""
import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
from PIL import Image
import pytest

import fsv
from fsv import workdir as workdir_lib

from test_train import _config, _tiny_dataset, _without_seconds

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _fit(workdir, epochs=3, allow_changes=(), **train):
  return fsv.fit(_config(epochs=epochs, **train), dataset=_tiny_dataset(),
                 workdir=str(workdir), allow_changes=allow_changes)


def test_a_second_process_on_a_workdir_in_use_is_refused(tmp_path):
  workdir = tmp_path / 'work'
  workdir.mkdir()
  holder = subprocess.Popen(
      [sys.executable, '-c', 'import sys, time\n'
       'from fsv import workdir\n'
       'with workdir.Workdir(sys.argv[1]).locked():\n'
       '  print("locked", flush=True)\n'
       '  time.sleep(60)\n', str(workdir)],
      stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == 'locked'
    with pytest.raises(fsv.WorkdirError, match=f'^workdir {workdir} is in use by process '
                       f'{holder.pid}$'):
      _fit(workdir)
    assert not (workdir / 'config.json').exists()  # refused before writing anything
  finally:
    holder.kill()  # SIGKILL: the kernel releases the lock
    holder.wait()
  _fit(workdir, epochs=1)


def test_a_rerun_with_another_config_is_refused_before_anything_is_written(tmp_path):
  workdir = tmp_path / 'work'
  _fit(workdir, epochs=2)
  stored = (workdir / 'config.json').read_text()
  other = _config(epochs=2)
  other.data.image_size = (20, 20)
  other.train.learning_rate = 1e-3
  with pytest.raises(fsv.WorkdirError, match=(
      r'holds a run of another config: data.image_size \[24, 24\] -> \[20, 20\], '
      r'train.learning_rate 0.003 -> 0.001\. Use another workdir for a new run$')):
    fsv.fit(other, dataset=_tiny_dataset(), workdir=str(workdir))
  assert (workdir / 'config.json').read_text() == stored
  with pytest.raises(fsv.WorkdirError, match=r'\[.data.image_size.\] cannot change while a '
                     'run continues'):
    fsv.fit(other, dataset=_tiny_dataset(), workdir=str(workdir),
            allow_changes=('data.image_size', 'train.learning_rate'))
  assert (workdir / 'config.json').read_text() == stored


def test_keys_that_cannot_change_results_may_differ(tmp_path):
  workdir = tmp_path / 'work'
  first = _fit(workdir, epochs=2)
  config = _config(epochs=2, eval_batch_size=5, on_nonfinite_loss='ignore')
  config.data.cache_dir = str(tmp_path / 'elsewhere')
  again = fsv.fit(config, dataset=_tiny_dataset(), workdir=str(workdir))
  assert _without_seconds(again.history) == _without_seconds(first.history)


def test_an_allowed_change_is_recorded_where_it_took_effect(tmp_path):
  workdir = tmp_path / 'work'
  _fit(workdir, epochs=2)
  with pytest.raises(fsv.WorkdirError, match='allow it: --allow_changes=train.epochs$'):
    _fit(workdir, epochs=3)
  run = _fit(workdir, epochs=3, allow_changes=('train.epochs',))
  assert [h.get('config_changes') for h in run.history] == [
      None, None, {'train.epochs': [2, 3]}]
  assert json.loads((workdir / 'config.json').read_text())['train']['epochs'] == 3
  saved = json.loads((workdir / 'history.json').read_text())
  assert saved[2]['config_changes'] == {'train.epochs': [2, 3]}


def test_a_rerun_on_other_data_is_refused(tmp_path):
  workdir = tmp_path / 'work'
  _fit(workdir, epochs=1)
  with pytest.raises(fsv.WorkdirError, match=r"holds a run on other data: its \['test', "
                     r"'train', 'validation'\] split\(s\) differ"):
    fsv.fit(_config(epochs=1), dataset=_tiny_dataset(seed=1), workdir=str(workdir))
  with pytest.raises(fsv.WorkdirError, match=r"holds a run on the classes \['c0', 'c1'\], "
                     r"not \['c0', 'c1', 'c2'\]"):
    fsv.fit(_config(epochs=1), dataset=_tiny_dataset(num_classes=3), workdir=str(workdir))


def test_the_command_line_names_the_lock_and_config_problems_in_one_line(tmp_path):
  data = tmp_path / 'data'
  for split in ('train', 'validation'):
    for name in ('a', 'b'):
      (data / split / name).mkdir(parents=True)
      for i in range(2):
        Image.new('RGB', (30, 30), (40 * i, 90, 200 if name == 'a' else 10)).save(
            data / split / name / f'{i}.png')
  command = [sys.executable, '-m', 'experiments.run', '--config=scratch',
             f'--config.data.dir={data}', f'--config.data.cache_dir={tmp_path / "cache"}',
             '--config.data.image_size=(46,46)', '--config.model.conv_features=(4,4,4,4)',
             '--config.model.dense_units=8', '--config.train.batch_size=4',
             '--config.train.epochs=1', f'--workdir={tmp_path / "work"}']
  done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
  done = subprocess.run([*command[:-2], '--config.train.epochs=2', command[-1]], cwd=REPO,
                        capture_output=True, text=True, timeout=300)
  assert done.returncode == 1 and 'Traceback' not in done.stderr
  assert done.stderr.strip().splitlines()[-1].endswith(
      'holds a run of another config: train.epochs 1 -> 2. Use another workdir for a new '
      'run; to continue this one under the change, allow it: --allow_changes=train.epochs')
  done = subprocess.run([*command[:-2], '--config.train.epochs=2', '--allow_changes=train.epochs',
                         command[-1]], cwd=REPO, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]


# --------------------------------------------------------------- damaged checkpoints

def _checkpoint(workdir, which):
  (step,) = [p for p in (workdir / 'checkpoints' / 'train' / which).iterdir()]
  return step


def _truncate_arrays(step):
  for path in (step / 'state').rglob('*'):
    if path.is_file() and path.stat().st_size > 100:
      path.write_bytes(path.read_bytes()[:50])


def _drop_metadata(step):
  shutil.rmtree(step / 'meta')


def _empty_history(step):
  (step / 'meta' / 'metadata').write_text(json.dumps({'history': []}))


@pytest.fixture
def uninterrupted(tmp_path):
  """The run resumes are compared with: 4 epochs straight."""
  return _fit(tmp_path / 'straight', epochs=4, learning_rate=1e-2)


@pytest.mark.parametrize('damage', ['truncated arrays', 'no metadata', 'empty history',
                                    'missing'])
def test_a_damaged_latest_checkpoint_falls_back_to_best(tmp_path, uninterrupted, damage,
                                                        caplog):
  workdir = tmp_path / 'work'
  first = _fit(workdir, epochs=4, learning_rate=1e-2)
  best_epoch = first.results['best_epoch']
  assert best_epoch < 4, 'the test needs a best epoch before the last'
  latest = _checkpoint(workdir, 'latest')
  {'truncated arrays': _truncate_arrays, 'no metadata': _drop_metadata,
   'empty history': _empty_history, 'missing': shutil.rmtree}[damage](latest)
  (workdir / 'results.json').unlink()  # as if killed before the end

  resumed = _fit(workdir, epochs=4, learning_rate=1e-2)
  assert 'resuming from the best checkpoint' in caplog.text
  assert [h['epoch'] for h in resumed.history] == [1, 2, 3, 4]
  # The epochs after the best one are trained again, from the same keys:
  assert _without_seconds(resumed.history) == _without_seconds(uninterrupted.history)
  jax.tree_util.tree_map(np.testing.assert_array_equal, resumed.params, uninterrupted.params)
  if damage != 'missing':
    assert os.listdir(workdir / 'checkpoints' / 'train' / 'damaged')


def test_checkpoints_none_of_which_can_be_read_stop_the_run(tmp_path):
  workdir = tmp_path / 'work'
  _fit(workdir, epochs=2)
  for which in ('latest', 'best'):
    _drop_metadata(_checkpoint(workdir, which))
  with pytest.raises(fsv.WorkdirError, match=r'checkpoints/train: no checkpoint can be read '
                     r'\(latest: epoch 2: its metadata cannot be read .*; best: .*\); move '
                     'the folder away to start this phase over'):
    _fit(workdir, epochs=2)


def test_stale_temporary_checkpoint_folders_are_removed_on_resume(tmp_path):
  workdir = tmp_path / 'work'
  _fit(workdir, epochs=2)
  stale = workdir / 'checkpoints' / 'train' / 'latest' / '3.orbax-checkpoint-tmp-1234'
  stale.mkdir()
  (stale / 'state').mkdir()
  (workdir / 'results.json').unlink()
  _fit(workdir, epochs=3, allow_changes=('train.epochs',))
  assert not stale.exists()
  assert sorted(os.listdir(workdir / 'checkpoints' / 'train' / 'latest')) == ['3']


def test_locks_are_released_after_a_run_and_on_an_error(tmp_path):
  workdir = tmp_path / 'work'
  _fit(workdir, epochs=1)
  with pytest.raises(fsv.WorkdirError):
    fsv.fit(_config(epochs=1), dataset=_tiny_dataset(seed=1), workdir=str(workdir))
  with workdir_lib.Workdir(str(workdir)).locked():
    assert (workdir / '.lock').read_text() == str(os.getpid())
  _fit(workdir, epochs=1)


@pytest.mark.parametrize('every_s, drawn', [(3600.0, [3]), (0.0, [1, 2, 3])])
def test_curves_are_redrawn_at_most_every_interval_and_show_every_epoch_at_the_end(
    tmp_path, monkeypatch, every_s, drawn):
  monkeypatch.setattr(workdir_lib, 'CURVES_EVERY_S', every_s)
  lengths = []
  curves = workdir_lib.plots.curves
  monkeypatch.setattr(workdir_lib.plots, 'curves',
                      lambda history, best: lengths.append(len(history)) or curves(history, best))
  run = _fit(tmp_path / 'work', epochs=3)
  assert len(run.history) == 3
  assert lengths == drawn
  assert (tmp_path / 'work' / 'curves.png').read_bytes()[:4] == b'\x89PNG'
