"""predictions.npz written by a run, and ensembles chosen on validation only."""
import os
import subprocess
import sys

import numpy as np
import pytest

import fsv
from fsv import ensemble
from fsv import workdir

from test_train import _config, _tiny_dataset

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def run_workdir(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('run')
  result = fsv.fit(_config(epochs=2), dataset=_tiny_dataset(), workdir=str(workdir))
  return workdir, result


def test_run_writes_the_evaluated_models_predictions(run_workdir):
  workdir, result = run_workdir
  predictions = ensemble.load(str(workdir))
  for split, prefix in (('validation', 'val'), ('test', 'test')):
    data = result.dataset.splits[split]
    np.testing.assert_array_equal(predictions[f'{split}/labels'], data.labels)
    assert list(predictions[f'{split}/files']) == list(data.files)
    np.testing.assert_allclose(predictions[f'{split}/probabilities'],
                               fsv.predict(result, data.images), rtol=1e-6)
    accuracy, loss = ensemble.accuracy_and_loss(predictions[f'{split}/probabilities'],
                                                data.labels)
    assert accuracy == pytest.approx(result.results[f'{prefix}_accuracy'])
    assert loss == pytest.approx(result.results[f'{prefix}_loss'], rel=1e-4)
    np.testing.assert_allclose(predictions[f'{split}/flipped_probabilities'],
                               fsv.predict(result, data.images[:, :, ::-1]), rtol=1e-6)


def _fake_run(path, val_probs_of_class1, test_probs_of_class1, flipped=None):
  """A workdir whose predictions are given: 4 validation and 4 test examples."""
  labels = np.array([0, 0, 1, 1], np.int32)
  files = np.array(['a.jpg', 'b.jpg', 'c.jpg', 'd.jpg'])
  arrays = {}
  for split, p in (('validation', val_probs_of_class1), ('test', test_probs_of_class1)):
    p = np.asarray(p, np.float32)
    arrays.update({f'{split}/labels': labels, f'{split}/files': files,
                   f'{split}/probabilities': np.stack([1 - p, p], -1)})
    if flipped is not None:
      arrays[f'{split}/flipped_probabilities'] = np.stack([1 - flipped, flipped], -1)
  workdir.Workdir(str(path)).write_predictions(arrays)
  return str(path)


def test_ensemble_is_chosen_on_validation_never_on_test(tmp_path):
  (tmp_path / 'a').mkdir(), (tmp_path / 'b').mkdir()
  # a and b alone: 3/4 on validation (a: 4/4 on test); together 4/4 on
  # validation, 2/4 on test.
  a = _fake_run(tmp_path / 'a', [0.1, 0.6, 0.9, 0.9], [0.1, 0.1, 0.9, 0.9])
  b = _fake_run(tmp_path / 'b', [0.1, 0.2, 0.9, 0.4], [0.95, 0.95, 0.9, 0.9])
  chosen = ensemble.choose([a, b])
  assert chosen['members'] == [a, b] and not chosen['flip']
  assert chosen['val_accuracy'] == 1.0
  assert chosen['test_accuracy'] == 0.5
  assert chosen['candidates'] == 3  # no flipped predictions: {a}, {b}, {a, b}


def test_mirrored_images_are_used_only_when_validation_prefers_them(tmp_path):
  (tmp_path / 'a').mkdir()
  flipped = np.array([0.0, 0.0, 1.0, 1.0], np.float32)
  a = _fake_run(tmp_path / 'a', [0.1, 0.6, 0.9, 0.9], [0.1, 0.1, 0.9, 0.9], flipped)
  chosen = ensemble.choose([a])
  assert chosen['flip'] and chosen['val_accuracy'] == 1.0
  assert [(c['flip'], c['val_accuracy']) for c in chosen['ranking']] == [(True, 1.0),
                                                                         (False, 0.75)]


def test_equal_accuracy_goes_to_the_lower_loss_then_fewer_members(tmp_path):
  (tmp_path / 'a').mkdir(), (tmp_path / 'b').mkdir()
  a = _fake_run(tmp_path / 'a', [0.1, 0.1, 0.9, 0.9], [0.1, 0.1, 0.9, 0.9])
  b = _fake_run(tmp_path / 'b', [0.4, 0.4, 0.6, 0.6], [0.1, 0.1, 0.9, 0.9])
  ranking = ensemble.choose([a, b])['ranking']
  assert [c['members'] for c in ranking] == [(a,), (a, b), (b,)]


def test_runs_on_different_examples_are_refused(tmp_path):
  (tmp_path / 'a').mkdir(), (tmp_path / 'b').mkdir()
  a = _fake_run(tmp_path / 'a', [0.1, 0.2, 0.9, 0.9], [0.1, 0.1, 0.9, 0.9])
  b = _fake_run(tmp_path / 'b', [0.1, 0.2, 0.9, 0.9], [0.1, 0.1, 0.9, 0.9])
  arrays = dict(np.load(tmp_path / 'b' / 'predictions.npz'))
  arrays['test/files'] = arrays['test/files'][::-1]
  workdir.Workdir(str(tmp_path / 'b')).write_predictions(arrays)
  with pytest.raises(fsv.DataError, match='different test files'):
    ensemble.choose([a, b])


def test_command_names_a_workdir_without_predictions(tmp_path):
  done = subprocess.run([sys.executable, '-m', 'experiments.ensemble',
                         f'--workdirs={tmp_path}'], cwd=REPO, capture_output=True,
                        text=True)
  assert done.returncode != 0
  assert f'{tmp_path}: no predictions.npz' in done.stderr
  assert 'Traceback' not in done.stderr
