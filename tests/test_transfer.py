"""VGG16 transfer strategies end to end on tiny data (random weights, 32x32)."""
import json
import os

import numpy as np
import pytest

import fsv
from fsv import features as features_lib

SIZE = 32


@pytest.fixture(scope='module')
def dataset(two_class_dataset):
  return two_class_dataset(SIZE, train=8, held_out=3)


def _config(tmp_path, **groups):
  config = fsv.base_config('vgg16')
  config.data.dir = 'unused'
  config.data.image_size = (SIZE, SIZE)
  config.model.weights = ''  # random: the real weights are not needed to test the flow
  config.model.head_units = 16
  config.model.cache_dir = str(tmp_path / 'cache')
  config.bottleneck.update(epochs=0, batch_size=8, learning_rate=1e-3)
  config.train.update(epochs=0, batch_size=8)
  for group, values in groups.items():
    config[group].update(values)
  return config


def test_bottleneck_trains_the_head_on_cached_features(tmp_path, dataset, monkeypatch):
  config = _config(tmp_path, bottleneck=dict(epochs=3))
  first = fsv.fit(config, dataset=dataset, workdir=str(tmp_path / 'run1'))
  assert first.results['phase'] == 'bottleneck' and first.results['epochs'] == 3
  assert [h['phase'] for h in first.history] == ['bottleneck'] * 3
  assert len(os.listdir(tmp_path / 'cache' / 'features')) == 3  # train, validation, test

  def no_extraction(*args, **kwargs):
    raise AssertionError('features should have come from the cache')

  monkeypatch.setattr(features_lib.inference, 'features', no_extraction)
  second = fsv.fit(config, dataset=dataset, workdir=str(tmp_path / 'run2'))
  assert second.results['test_accuracy'] == first.results['test_accuracy']
  # Another head (an ablation's member) trains on the same features.
  config.model.update(head_units=8, pooling='avg')
  fsv.fit(config, dataset=dataset, workdir=str(tmp_path / 'run3'))
  assert len(os.listdir(tmp_path / 'cache' / 'features')) == 3


def test_finetune_trains_block5_and_head_only_and_resumes(tmp_path, dataset):
  config = _config(tmp_path, bottleneck=dict(epochs=2),
                   train=dict(epochs=2, trainable=('block5_.*', 'head/.*'),
                              optimizer='sgd', learning_rate=1e-3,
                              evaluate_with='last'))  # the best may be its start
  workdir = str(tmp_path / 'finetune')
  initial = fsv.fit(_config(tmp_path), dataset=dataset).params  # epochs 0: the init
  result = fsv.fit(config, dataset=dataset, workdir=workdir)
  # The train phase's epoch 0 is the head it starts from, validated.
  assert [(h['phase'], h['epoch']) for h in result.history] == [
      ('bottleneck', 1), ('bottleneck', 2), ('train', 0), ('train', 1), ('train', 2)]
  best_head = max(result.history[:2], key=lambda h: h['val_accuracy'])
  assert result.history[2]['start'] == f'bottleneck epoch {best_head["epoch"]}'
  for name, value in result.params.items():
    if name.startswith(('block1', 'block2', 'block3', 'block4')):
      np.testing.assert_array_equal(value['kernel'], initial[name]['kernel'])
  assert not np.array_equal(result.params['block5_conv3']['kernel'],
                            initial['block5_conv3']['kernel'])

  # Asking for more epochs resumes the train phase; the head phase is not redone.
  config.train.epochs = 3
  resumed = fsv.fit(config, dataset=dataset, workdir=workdir, allow_changes=('train.epochs',))
  assert [(h['phase'], h['epoch']) for h in resumed.history][-2:] == [
      ('train', 2), ('train', 3)]
  assert len(resumed.history) == 6
  saved = json.load(open(os.path.join(workdir, 'history.json')))
  assert len(saved) == 6


def test_init_from_a_previous_workdir_takes_its_head(tmp_path, dataset):
  head_run = str(tmp_path / 'head')
  first = fsv.fit(_config(tmp_path, bottleneck=dict(epochs=2)), dataset=dataset,
                  workdir=head_run)
  config = _config(tmp_path, train=dict(epochs=1, trainable=('head/.*',)))
  config.init_from = head_run
  config.train.learning_rate = 1e-9  # ~no change: the start is what we check
  result = fsv.fit(config, dataset=dataset)
  np.testing.assert_allclose(result.params['head']['logits']['kernel'],
                             first.params['head']['logits']['kernel'], atol=1e-6)


def test_vgg_refuses_the_blogs_rescale(tmp_path):
  config = _config(tmp_path)
  config.augment.rescale = 1 / 255
  with pytest.raises(fsv.ConfigError, match='caffe preprocessing'):
    fsv.validate_config(config)
