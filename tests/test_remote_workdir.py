"""Workdirs given as gs:// URLs (Cloud TPU runs): fsv's own writers and readers
go through etils.epath, here with gs:// mapped onto a local folder; in a
multi-host run only process 0 writes the report files.

Orbax writes the arrays of a checkpoint with tensorstore, which reaches GCS by
itself and cannot be faked this way; it is exercised with local workdirs by
the other tests, through the same calls.
"""
import json
import os

from etils import epath
from etils.epath import gpath
import pytest

from fsv import checkpoint as checkpoint_lib
from fsv import report

BUCKET = 'gs://fsv-test-bucket'


@pytest.fixture
def fake_gcs(tmp_path, monkeypatch):
  """gs://... paths in epath land under tmp_path/gcs; the cwd must stay empty
  (a gs:// path handed to os/pathlib would become a local folder 'gs:')."""
  root, cwd = tmp_path / 'gcs', tmp_path / 'cwd'
  root.mkdir()
  cwd.mkdir()
  monkeypatch.chdir(cwd)
  # With TensorFlow installed epath sends gs:// to tf.io.gfile, around the mock.
  monkeypatch.setattr(gpath, '_is_tf_installed', lambda: False)

  def local(path):
    path = os.fspath(path)
    return str(root / path[len('gs://'):]) if path.startswith('gs://') else path

  def one(fn, path, *args, **kwargs):
    return fn(local(path), *args, **kwargs)

  def two(fn, path, dst, *args, **kwargs):
    return fn(local(path), local(dst), *args, **kwargs)

  with epath.testing.mock_epath(
      open=one, exists=one, isdir=one, listdir=one, glob=one, makedirs=one, mkdir=one,
      remove=one, rmtree=one, stat=one, walk=one, rename=two, replace=two, copy=two):
    yield root
  assert os.listdir(cwd) == []


def test_report_files_are_written_to_a_gs_workdir(fake_gcs):
  workdir = f'{BUCKET}/runs/finetune'
  report.check_writable(workdir)
  history = [{'phase': 'train', 'epoch': 1, 'train_loss': 0.5, 'train_accuracy': 0.75,
              'val_loss': 0.4, 'val_accuracy': 0.8}]
  report.write_json(f'{workdir}/history.json', history)
  report.plot_history(history, f'{workdir}/curves.png')
  local = fake_gcs / 'fsv-test-bucket' / 'runs' / 'finetune'
  assert sorted(os.listdir(local)) == ['curves.png', 'history.json']
  assert json.loads((local / 'history.json').read_text()) == history
  assert (local / 'curves.png').read_bytes()[:4] == b'\x89PNG'


def test_workdir_urls_stay_urls_and_local_paths_become_absolute(tmp_path):
  assert str(report.as_path(f'{BUCKET}/runs/a')) == f'{BUCKET}/runs/a'
  assert str(report.as_path('runs/a')) == os.path.abspath('runs/a')


def test_init_from_a_gs_workdir_without_checkpoints_names_it(fake_gcs):
  workdir = f'{BUCKET}/runs/empty'
  report.check_writable(workdir)
  with pytest.raises(FileNotFoundError, match='no checkpoints/ in that workdir'):
    checkpoint_lib.best_variables(workdir)


def test_only_process_0_writes_the_report_files(tmp_path, monkeypatch):
  # Every host of a multi-host run calls the writers with the same workdir.
  monkeypatch.setattr(report.jax, 'process_index', lambda: 1)
  report.check_writable(str(tmp_path / 'work'))
  report.write_json(str(tmp_path / 'work' / 'history.json'), [])
  report.plot_history([{'epoch': 1, 'train_loss': 1.0, 'train_accuracy': 0.5}],
                      str(tmp_path / 'work' / 'curves.png'))
  assert os.listdir(tmp_path / 'work') == []
