"""Today's training recipes, each for its semantics on tiny data: label
smoothing, class weights, balanced sampling, the moving average of the
weights, one-cycle and step schedules, reduce-on-plateau, early stopping, and
a run that keeps its best model across phases."""
import json
import os

os.environ.setdefault('KERAS_BACKEND', 'jax')  # Keras as a reference needs no TensorFlow

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import fsv
from fsv import loop
from fsv import losses
from fsv import optim
from fsv.data.decode import Dataset, Split, SplitReport
from fsv.errors import ConfigError

from test_precision import _step_setup

SIZE = 16


def _dataset(per_class=(12, 12), seed=0, noise=60, val_per_class=6):
  """Classes differ by which colour channel is bright (less so with more noise)."""
  rng = np.random.default_rng(seed)

  def split(counts):
    labels = np.concatenate([np.full(n, c, np.int32) for c, n in enumerate(counts)])
    images = rng.integers(0, noise, (len(labels), SIZE, SIZE, 3)).astype(np.uint8)
    images[np.arange(len(labels)), :, :, labels % 3] += np.uint8(255 - noise)
    return Split(images=images, labels=labels, files=tuple(map(str, range(len(labels)))))

  classes = len(per_class)
  splits = {'train': split(per_class), 'validation': split((val_per_class,) * classes),
            'test': split((val_per_class,) * classes)}
  report = {k: SplitReport(loaded=len(v.labels), skipped=(), converted=0)
            for k, v in splits.items()}
  return Dataset(class_names=tuple(f'c{i}' for i in range(classes)), splits=splits,
                 report=report)


def _config(**train):
  config = fsv.base_config()
  config.data.dir = 'unused-when-a-dataset-is-passed'
  config.data.image_size = (SIZE, SIZE)
  config.model.conv_features = (4, 4)
  config.model.dense_units = 8
  config.model.flatten_dropout = 0.0
  config.train.update(dict(epochs=3, batch_size=8, optimizer='adam', learning_rate=3e-3),
                      **train)
  return config


def _without_seconds(history):
  return [{k: v for k, v in entry.items() if k != 'seconds'} for entry in history]


@pytest.mark.parametrize('classes', [2, 3])
def test_label_smoothing_is_keras_label_smoothing(classes):
  keras = pytest.importorskip('keras')
  rng = np.random.default_rng(0)
  labels = rng.integers(0, classes, 6)
  targets = np.eye(classes, dtype=np.float32)[labels]
  outputs = 1 if classes == 2 else classes
  logits = rng.normal(size=(6, outputs)).astype(np.float32)
  loss, _ = losses.Objective(classes, label_smoothing=0.2).loss(jnp.asarray(logits), targets)
  if classes == 2:
    expected = keras.losses.BinaryCrossentropy(from_logits=True, label_smoothing=0.2)(
        labels[:, None].astype(np.float32), logits)
  else:
    expected = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.2)(
        targets, logits)
  np.testing.assert_allclose(loss, np.asarray(expected), rtol=1e-5)


def test_plain_objective_equals_evaluation_loss_and_weights_scale_examples():
  logits = jnp.asarray([[2.0, -1.0, 0.5], [0.1, 0.2, 3.0], [1.0, 1.0, -2.0]])
  labels = jnp.asarray([0, 2, 1])
  targets = jax.nn.one_hot(labels, 3)
  per_example, correct = losses.loss_and_correct(logits, labels)
  loss, accuracy = losses.Objective(3).loss(logits, targets)
  np.testing.assert_allclose(loss, per_example.mean(), rtol=1e-6)
  assert accuracy == correct.mean() == pytest.approx(2 / 3)
  weighted, _ = losses.Objective(3, class_weights=(1.0, 5.0, 2.0)).loss(logits, targets)
  np.testing.assert_allclose(
      weighted, (per_example * jnp.asarray([1.0, 2.0, 5.0])).sum() / 3, rtol=1e-6)


def test_balanced_class_weights_and_bad_ones():
  labels = np.array([0] * 9 + [1] * 1)
  assert losses.class_weights('balanced', labels, 2) == pytest.approx((10 / 18, 10 / 2))
  assert losses.class_weights('1,9', labels, 2) == (1.0, 9.0)
  assert losses.class_weights('', labels, 2) == ()
  with pytest.raises(ConfigError, match='2 weights for 3 classes'):
    losses.class_weights('1,9', labels, 3)
  with pytest.raises(ConfigError, match='no training example'):
    losses.class_weights('balanced', np.zeros(4, int), 2)
  for bad in ('1,x', '0,0', '-1,2', 'inf,1'):
    with pytest.raises(ConfigError, match='class_weights'):
      fsv.validate_config(_config(class_weights=bad))


def _minority_recall(result) -> float:
  probabilities = fsv.predict(result, result.dataset.splits['test'].images)
  labels = result.dataset.splits['test'].labels
  return float((probabilities.argmax(-1)[labels == 1] == 1).mean())


def test_class_weights_and_balanced_sampling_raise_minority_recall():
  # 1:9 imbalance with classes hard to tell apart: unweighted, the model
  # predicts the majority class for the minority's test images. The last
  # epochs are compared (balanced validation would pick an early one).
  data = _dataset(per_class=(72, 8), noise=200, val_per_class=20)
  recall = lambda **train: _minority_recall(fsv.fit(
      _config(epochs=10, evaluate_with='last', **train), dataset=data))
  plain, weighted, balanced = recall(), recall(class_weights='balanced'), recall(
      sampling='balanced')
  assert plain < 0.5 < weighted and plain < 0.5 < balanced, (plain, weighted, balanced)


def test_balanced_sampling_draws_classes_equally_and_deterministically():
  labels = np.array([0] * 90 + [1] * 10)
  order = loop.epoch_indices(0, 1, 100, 4000, balance=labels)
  assert abs(np.mean(labels[order]) - 0.5) < 0.03
  np.testing.assert_array_equal(order, loop.epoch_indices(0, 1, 100, 4000, balance=labels))
  assert not np.array_equal(order, loop.epoch_indices(0, 2, 100, 4000, balance=labels))


def test_schedules_one_cycle_and_step():
  config = fsv.validate_config(_config(learning_rate=1.0, epochs=4, schedule='one_cycle'))
  one_cycle = optim.schedule(config.train, steps_per_epoch=25)  # 100 steps
  assert one_cycle(0) == pytest.approx(1 / 25)
  assert one_cycle(25) == pytest.approx(1.0)  # the peak a quarter of the way in
  assert one_cycle(100) < 1e-4
  config = fsv.validate_config(_config(learning_rate=1.0, epochs=9, schedule='step',
                                       decay_epochs=3, decay_factor=0.5))
  step = optim.schedule(config.train, steps_per_epoch=10)
  assert [float(step(s)) for s in (0, 29, 30, 59, 60)] == [1.0, 1.0, 0.5, 0.5, 0.25]
  with pytest.raises(ConfigError, match='decay_epochs'):
    fsv.validate_config(_config(schedule='step'))


def test_moving_average_is_what_is_validated_kept_and_resumed(tmp_path):
  data = _dataset()
  config = _config(epochs=2, ema_decay=0.9)
  full = fsv.fit(config, dataset=data, workdir=str(tmp_path / 'full'))
  plain = fsv.fit(_config(epochs=2), dataset=data)
  # The raw weights train as without averaging; what is validated differs.
  assert [h['train_loss'] for h in full.history] == [h['train_loss'] for h in plain.history]
  assert [h['val_loss'] for h in full.history] != [h['val_loss'] for h in plain.history]
  # The evaluated (and saved, and loaded) parameters are the average's.
  loaded = fsv.load_run(str(tmp_path / 'full'))
  np.testing.assert_allclose(loaded.probabilities(data.splits['test'].images),
                             full.probabilities(data.splits['test'].images), atol=1e-6)
  assert loaded.results['val_accuracy'] == full.history[
      [h['val_accuracy'] for h in full.history].index(full.results['val_accuracy'])][
          'val_accuracy']
  # Resume is exact: the average is part of the checkpointed state.
  resumed_dir = str(tmp_path / 'resumed')
  fsv.fit(_config(epochs=1, ema_decay=0.9), dataset=data, workdir=resumed_dir)
  resumed = fsv.fit(config, dataset=data, workdir=resumed_dir,
                    allow_changes=('train.epochs',))
  resumed.history[1].pop('config_changes')
  assert _without_seconds(resumed.history) == _without_seconds(full.history)


def test_moving_average_is_debiased_not_held_at_the_initial_weights():
  decay = 0.999
  _, step, state, (images, labels, _) = _step_setup('float32', ema_decay=decay)
  initial = jax.tree_util.tree_map(np.array, state.params)  # the step donates its state
  seen = []
  for i in range(3):
    state, _ = step(state, images, labels, jax.random.PRNGKey(i))
    seen.append(jax.tree_util.tree_map(np.array, state.params))
  # The average of the three steps' weights, weighted by decay ** age; the
  # random initial weights have no share (undebiased, they would keep 99.7%).
  weights = np.array([decay ** 2, decay, 1.0]) / (1 + decay + decay ** 2)
  expected = jax.tree_util.tree_map(lambda *p: sum(w * x for w, x in zip(weights, p)), *seen)
  for got, want, first in zip(jax.tree_util.tree_leaves(state.ema),
                              jax.tree_util.tree_leaves(expected),
                              jax.tree_util.tree_leaves(initial)):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    assert not np.allclose(got, first, atol=1e-4)


def test_plateau_lowers_the_rate_and_early_stopping_ends_the_phase(tmp_path):
  data = _dataset()
  # A rate too small to move validation accuracy: every epoch is a plateau.
  config = _config(epochs=8, learning_rate=1e-9, reduce_lr_patience=2, reduce_lr_factor=0.5,
                   early_stopping_patience=5)
  run = fsv.fit(config, dataset=data, workdir=str(tmp_path / 'w'))
  scales = {h['epoch']: h['learning_rate_scale'] for h in run.history
            if 'learning_rate_scale' in h}
  assert scales == {3: 0.5, 5: 0.25}, run.history
  assert [h['epoch'] for h in run.history] == [1, 2, 3, 4, 5, 6]
  assert run.history[-1]['stopped_early'] and run.results['stopped_early']
  assert run.results['epochs'] == 6 and run.results['best_epoch'] == 1
  # A rerun of the finished workdir trains nothing more.
  again = fsv.fit(config, dataset=data, workdir=str(tmp_path / 'w'))
  assert _without_seconds(again.history) == _without_seconds(run.history)


def test_a_phase_that_only_hurts_leaves_the_run_with_what_it_started_from(tmp_path):
  """A trained run, continued by a diverging phase: the run keeps (evaluates,
  checkpoints, loads) what it started from, its train epoch 0. (The head's
  best epoch starts the train phase the same way: tests/test_transfer.py.)"""
  data = _dataset()
  trained = fsv.fit(_config(epochs=4), dataset=data, workdir=str(tmp_path / 'trained'))
  config = _config(epochs=2, optimizer='sgd', learning_rate=30.0, momentum=0.0)
  config.init_from = str(tmp_path / 'trained')
  workdir = str(tmp_path / 'hurt')
  run = fsv.fit(config, dataset=data, workdir=workdir)
  start, *epochs = run.history
  assert start['epoch'] == 0 and start['start'] == f'init_from {tmp_path / "trained"}'
  assert start['val_accuracy'] == trained.results['val_accuracy'] > 0.5
  assert all(h['val_accuracy'] < start['val_accuracy'] for h in epochs), epochs
  assert run.results['best_epoch'] == 0 and run.results['epochs'] == 2
  assert run.results['best_is_start'] == start['start']
  assert run.results['test_accuracy'] == trained.results['test_accuracy']
  assert json.load(open(os.path.join(workdir, 'results.json')))['best_is_start']
  test_images = data.splits['test'].images
  np.testing.assert_allclose(fsv.load_run(workdir).probabilities(test_images),
                             trained.probabilities(test_images), atol=1e-6)


def test_a_workdir_written_before_these_keys_existed_resumes(tmp_path):
  data = _dataset()
  workdir = tmp_path / 'w'
  fsv.fit(_config(epochs=1), dataset=data, workdir=str(workdir))
  stored = json.load(open(workdir / 'config.json'))
  for group, key in (('train', 'ema_decay'), ('train', 'class_weights'), ('augment', 'ops')):
    del stored[group][key]
  (workdir / 'config.json').write_text(json.dumps(stored))
  resumed = fsv.fit(_config(epochs=2), dataset=data, workdir=str(workdir),
                    allow_changes=('train.epochs',))
  assert [h['epoch'] for h in resumed.history] == [1, 2]
  with pytest.raises(fsv.WorkdirError, match='train.ema_decay'):
    fsv.fit(_config(epochs=2, ema_decay=0.5), dataset=data, workdir=str(workdir))
