"""Training end to end on tiny synthetic data: learning, determinism, resume, outputs."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import fsv
from fsv import train as train_lib
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
  strip = lambda h: [{k: v for k, v in e.items() if k != 'seconds'} for e in h]
  assert strip(a) == strip(b)
  assert strip(a) != strip(c)


def test_workdir_outputs_and_resume_continue_from_saved_epoch(tmp_path):
  data = _tiny_dataset()
  full = fsv.fit(_config(epochs=3), dataset=data, workdir=str(tmp_path / 'full'))

  workdir = str(tmp_path / 'interrupted')
  fsv.fit(_config(epochs=2), dataset=data, workdir=workdir)  # "interrupted" after 2
  resumed = fsv.fit(_config(epochs=3), dataset=data, workdir=workdir)
  assert [h['epoch'] for h in resumed.history] == [1, 2, 3]
  strip = lambda h: [{k: v for k, v in e.items() if k != 'seconds'} for e in h]
  assert strip(resumed.history) == strip(full.history)  # resume == uninterrupted

  for name in ('history.json', 'results.json', 'curves.png', 'config.json',
               'data_report.json'):
    assert os.path.getsize(os.path.join(workdir, name)) > 0
  history = json.load(open(os.path.join(workdir, 'history.json')))
  assert [h['epoch'] for h in history] == [1, 2, 3]
  results = json.load(open(os.path.join(workdir, 'results.json')))
  assert {'test_accuracy', 'test_loss', 'wall_seconds'} <= set(results)
  assert results['test_accuracy'] == full.results['test_accuracy']
  best = max(history, key=lambda h: h['val_accuracy'])
  assert results['evaluated'] == 'best' and results['best_epoch'] == best['epoch']
  assert results['val_accuracy'] == best['val_accuracy']
  assert os.listdir(os.path.join(workdir, 'checkpoints', 'train', 'latest')) == ['3']


def test_epoch_indices_cover_every_example_once_per_pass():
  order = train_lib.epoch_indices(seed=0, epoch=1, num_examples=10, count=25)
  assert len(order) == 25
  assert sorted(order[:10]) == list(range(10)) and sorted(order[10:20]) == list(range(10))
  assert not np.array_equal(order, train_lib.epoch_indices(0, 2, 10, 25))


def test_class_count_disagreeing_with_data_is_an_error():
  config = _config()
  config.model.num_classes = 5
  with pytest.raises(fsv.ConfigError, match='num_classes=5 but the data has 2'):
    fsv.fit(config, dataset=_tiny_dataset())


def test_experiments_run_end_to_end_on_an_image_folder(tmp_path, make_image_folder):
  classes = lambda n: {'cats': n, 'dogs': n}
  data_dir = make_image_folder({'train': classes(6), 'validation': classes(2),
                                'test': classes(2)})
  workdir = tmp_path / 'work'
  command = [sys.executable, '-m', 'experiments.run', '--config=configs/scratch_aug.py',
             f'--config.data.dir={data_dir}',
             f'--config.data.cache_dir={tmp_path / "cache"}',
             f'--config.data.image_size=({SIZE},{SIZE})',
             '--config.model.conv_features=(4,4)', '--config.model.dense_units=8',
             '--config.train.epochs=2', '--config.train.batch_size=4',
             f'--workdir={workdir}']
  proc = subprocess.run(command, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  results = json.load(open(workdir / 'results.json'))
  assert results['class_names'] == ['cats', 'dogs'] and results['epochs'] == 2
  assert 0 <= results['test_accuracy'] <= 1
  assert 'checkpoint_manager.py' not in proc.stderr  # orbax's INFO chatter is filtered

  rerun = subprocess.run(command, capture_output=True, text=True, timeout=300)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert 'train: resuming after epoch 2 of 2' in rerun.stderr and 'from cache' in rerun.stderr.lower()
