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

import fsv
from fsv import files
from fsv import workdir as workdir_lib

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
  workdir = workdir_lib.Workdir(f'{BUCKET}/runs/finetune')
  workdir.check_writable()
  history = [{'phase': 'train', 'epoch': 1, 'train_loss': 0.5, 'train_accuracy': 0.75,
              'val_loss': 0.4, 'val_accuracy': 0.8}]
  workdir.write_history(history)
  workdir.write_curves()
  local = fake_gcs / 'fsv-test-bucket' / 'runs' / 'finetune'
  assert sorted(os.listdir(local)) == ['curves.png', 'history.json']
  assert json.loads((local / 'history.json').read_text()) == history
  assert (local / 'curves.png').read_bytes()[:4] == b'\x89PNG'


def test_workdir_urls_stay_urls_and_local_paths_become_absolute(tmp_path):
  assert str(files.as_path(f'{BUCKET}/runs/a')) == f'{BUCKET}/runs/a'
  assert str(files.as_path('runs/a')) == os.path.abspath('runs/a')


def test_init_from_a_gs_workdir_without_checkpoints_names_it(fake_gcs):
  workdir = f'{BUCKET}/runs/empty'
  workdir_lib.Workdir(workdir).check_writable()
  with pytest.raises(fsv.ConfigError, match='not a workdir with a best checkpoint'):
    workdir_lib.check_init_from(workdir)


def test_loading_an_unfinished_gs_workdir_names_it(fake_gcs):
  workdir = workdir_lib.Workdir(f'{BUCKET}/runs/unfinished')
  workdir.check_writable()
  workdir.write_history([])
  with pytest.raises(fsv.WorkdirError, match=f'^{BUCKET}/runs/unfinished: the run has not '
                     'finished'):
    fsv.load_run(workdir.path)
  with pytest.raises(fsv.WorkdirError, match=f'^{BUCKET}/runs/missing: no such workdir'):
    fsv.load_run(f'{BUCKET}/runs/missing')


def test_only_process_0_writes_the_report_files(tmp_path, monkeypatch):
  # Every host of a multi-host run calls the writers with the same workdir.
  monkeypatch.setattr(workdir_lib.jax, 'process_index', lambda: 1)
  workdir = workdir_lib.Workdir(str(tmp_path / 'work'))
  workdir.check_writable()
  workdir.write_history([{'phase': 'train', 'epoch': 1, 'train_loss': 1.0,
                          'train_accuracy': 0.5}])
  workdir.write_results({})
  assert os.listdir(tmp_path / 'work') == []
