"""Freezing through optax: labels from patterns, frozen weights untouched,
no optimizer state and no backward pass for them."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fsv
from fsv import augment
from fsv import models
from fsv import partition
from fsv import steps
from fsv.config import ConfigError

SIZE = 24


def _small_model_and_params():
  config = fsv.base_config()
  config.model.conv_features = (4, 8)
  config.model.dense_units = 8
  model = fsv.build_model(config.model, 2)
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, SIZE, SIZE, 3)))['params']
  return model, params


def _train_config(**kw):
  config = fsv.base_config().train
  config.update(kw)
  return config


def test_labels_from_patterns_and_groups():
  _, params = _small_model_and_params()
  labels = partition.labels(params, ('conv2/.*', 'dense/.*', 'logits/.*'),
                            (('conv2/.*', 1e-5),))
  assert labels['conv1'] == {'kernel': 'frozen', 'bias': 'frozen'}
  assert labels['conv2']['kernel'] == 'group0'
  assert labels['logits']['bias'] == 'trainable'


@pytest.mark.parametrize('name', models.NAMES)
def test_every_backbone_names_its_top_block_and_head(name):
  """'@top_block' and '@head' mean something for every backbone: each group
  matches parameters, and the top block is part of the base."""
  model_keys = dict(name=name) if name == 'small_convnet' else dict(name=name, weights='')
  config = fsv.validate_config(dict(model=model_keys, data=dict(dir='unused')))
  model = fsv.build_model(config.model, 2)
  size = max(32, models.min_input_size(config.model))
  params = jax.eval_shape(model.init, jax.random.PRNGKey(0),
                          jnp.zeros((1, size, size, 3)))['params']
  groups = models.layer_groups(config.model)
  names = jax.tree_util.tree_leaves(partition.path_names(params))

  def selected(*patterns):
    labels = partition.labels(params, patterns, (), groups)
    return {n for n, label in zip(names, jax.tree_util.tree_leaves(labels))
            if label != partition.FROZEN}

  assert selected('@top_block') and selected('@head')
  assert selected('@top_block') < selected('@base')
  assert not selected('@head') & selected('@base')


def test_layer_groups_expand_in_patterns():
  _, params = _small_model_and_params()
  groups = {'top_block': ('conv2/.*',)}
  labels = partition.labels(params, ('@top_block', 'logits/.*'), (('@top_block', 1e-5),),
                            groups)
  assert labels['conv1']['kernel'] == 'frozen'
  assert labels['conv2']['kernel'] == 'group0'
  with pytest.raises(ConfigError, match=r"no layer group 'top'; it has \['top_block'\]"):
    partition.labels(params, ('@top',), (), groups)


@pytest.mark.parametrize('trainable,groups,match', [
    (('block5_.*',), (), "'block5_.*' matches no parameter"),
    (('conv[',), (), 'not a regular expression'),
    (('logits/.*',), (('conv1/.*', 1e-3),), "'conv1/.*' matches no parameter"),
])
def test_patterns_that_match_nothing_are_errors(trainable, groups, match):
  _, params = _small_model_and_params()
  with pytest.raises(ConfigError, match=match):
    partition.labels(params, trainable, groups)


def _train_a_few_steps(trainable, optimizer='rmsprop', accumulation_steps=1):
  model, params = _small_model_and_params()
  tx = partition.optimizer(_train_config(trainable=trainable, optimizer=optimizer,
                                         learning_rate=1e-2), params, 10)
  state = steps.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                               opt_state=tx.init(params))
  step = steps.make_train_step(model, tx, augment.AugmentConfig(),
                                   accumulation_steps=accumulation_steps)
  images = np.random.default_rng(0).integers(0, 255, (4, SIZE, SIZE, 3), np.uint8)
  labels = np.array([0, 1, 0, 1], np.int32)
  before = jax.tree_util.tree_map(np.asarray, params)
  for i in range(3):
    state, _ = step(state, images, labels, jax.random.PRNGKey(i))
  return before, state, tx, step, (images, labels)


def test_frozen_parameters_are_bit_for_bit_unchanged():
  before, state, *_ = _train_a_few_steps(('dense/.*', 'logits/.*'), optimizer='adam')
  after = jax.tree_util.tree_map(np.asarray, state.params)
  for name in ('conv1', 'conv2'):
    for leaf in ('kernel', 'bias'):
      np.testing.assert_array_equal(after[name][leaf], before[name][leaf])
  assert not np.array_equal(after['dense']['kernel'], before['dense']['kernel'])


def test_no_optimizer_state_for_frozen_parameters():
  _, state, *_ = _train_a_few_steps(('logits/.*',), optimizer='adam')
  state_size = sum(x.size for x in jax.tree_util.tree_leaves(state.opt_state))
  logits_size = sum(x.size for x in jax.tree_util.tree_leaves(state.params['logits']))
  # Adam keeps two moments (plus step counters) for the trainable logits only.
  assert 2 * logits_size <= state_size <= 2 * logits_size + 4


def _compiled_convolutions(trainable, accumulation_steps) -> int:
  _, state, _, step, (images, labels) = _train_a_few_steps(
      trainable, accumulation_steps=accumulation_steps)
  hlo = step.lower(state, images, labels, jax.random.PRNGKey(0)).compile().as_text()
  return hlo.count(' convolution(')


@pytest.mark.parametrize('accumulation_steps', [1, 2])
def test_compiled_step_skips_the_frozen_backward_pass(accumulation_steps):
  # Two conv layers: forward 2; all trainable adds 2 kernel grads + 1 input grad.
  # Accumulated, they are the loop's body: frozen gradients are not summed either.
  count = lambda trainable: _compiled_convolutions(trainable, accumulation_steps)
  assert count(('.*',)) == 5
  assert count(('conv2/.*', 'dense/.*', 'logits/.*')) == 3
  assert count(('dense/.*', 'logits/.*')) == 2
