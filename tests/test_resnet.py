"""ResNet50: parity with Keras 3's own model, Keras's weight files, frozen
BatchNorm and the backbone contract."""
import functools
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fsv import models
from fsv import partition
from fsv.models import backbone
from fsv.models import resnet
from fsv.models.layers import Tap
from fsv.pretrained import keras_h5
from fsv.pretrained import keras_layers

NAME = 'resnet50'
# Not square, and large enough that the last block's map is 2x2, so that the
# pooling is compared too (at 32x32 it is one pixel).
HEIGHT, WIDTH = 64, 48


def _template(model, height=HEIGHT, width=WIDTH) -> dict:
  """The module's variables as zeros, without running its initialisers."""
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, height, width, 3)))
  return jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), shapes)


def _pixels(seed=1) -> np.ndarray:
  return np.random.default_rng(seed).uniform(0, 255, (2, HEIGHT, WIDTH, 3)).astype(np.float32)


def _assert_close(actual, expected, what):
  """Within 1e-5 of the activations' scale (float32 sums in another order)."""
  actual, expected = np.asarray(actual), np.asarray(expected)
  assert actual.shape == expected.shape, what
  np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-5 * np.abs(expected).max(),
                             err_msg=what)


# ------------------------------------------------------ parity with Keras 3


def _keras():
  os.environ['KERAS_BACKEND'] = 'jax'  # before the first import; TensorFlow is not installed
  return pytest.importorskip('keras')


@pytest.fixture(scope='module')
def keras_resnet(tmp_path_factory):
  """Keras's ResNet50 (random weights, random BatchNorm statistics) saved to a
  .weights.h5, its outputs on `_pixels()` (logits, average-pooled features,
  the Grad-CAM layer's activations) and the Keras model itself."""
  keras = _keras()
  rng = np.random.default_rng(0)

  def uniform(shape, minval=0.0, maxval=1.0, dtype=None, seed=None):
    return rng.uniform(minval, maxval, shape).astype(dtype or 'float32')

  # Keras draws each kernel's Glorot-uniform values with a jitted threefry, one
  # XLA compilation per kernel shape: 30 s of this test on two busy cores.
  # The same distribution from numpy builds the same model in 3 s (and where
  # Keras moved its initialisers' random module, the slow way still works).
  with pytest.MonkeyPatch.context() as patch:
    try:
      from keras.src.initializers import random_initializers
      patch.setattr(random_initializers.random, 'uniform', uniform)
    except (ImportError, AttributeError):
      pass
    model = keras.applications.ResNet50(weights=None, input_shape=(HEIGHT, WIDTH, 3),
                                        classifier_activation=None)
  for layer in model.layers:
    if isinstance(layer, keras.layers.BatchNormalization):
      layer.moving_mean.assign(rng.normal(0, 0.1, layer.moving_mean.shape).astype('float32'))
      layer.moving_variance.assign(
          rng.uniform(0.5, 1.5, layer.moving_variance.shape).astype('float32'))
  path = tmp_path_factory.mktemp('keras') / 'm.weights.h5'
  model.save_weights(path)
  # include_top=False, pooling='avg' is this model up to 'avg_pool'.
  outputs = keras.Model(model.input, [model.output, model.get_layer('avg_pool').output,
                                      model.get_layer(resnet.GRADCAM_LAYER).output])
  x = keras.applications.resnet50.preprocess_input(_pixels().copy())
  logits, features, gradcam = outputs.predict(x, verbose=0)
  return dict(path=path, model=model, logits=logits, features=features, gradcam=gradcam)


def test_keras_layers_convert_by_name(keras_resnet):
  layers = keras_h5.read(keras_resnet['path'], {})
  model = resnet.build(resnet.default_config(), 1000, include_top=True)
  template = _template(model)
  assert set(layers) == set(template['params'])  # every Keras layer with weights
  # Keras's ResNet50: 25,636,712 parameters, 53,120 of them BatchNorm statistics.
  sizes = {c: sum(a.size for a in jax.tree_util.tree_leaves(template[c])) for c in template}
  assert sizes == {'params': 25_583_592, 'batch_stats': 53_120}


def test_logits_and_gradcam_layer_match_keras(keras_resnet):
  model = resnet.build(resnet.default_config(), 1000, include_top=True)
  variables = keras_layers.to_variables(keras_h5.read(keras_resnet['path'], {}),
                                        _template(model), 'keras')

  @jax.jit
  def apply(variables, rgb):
    return model.apply(variables, rgb, capture_intermediates=lambda m, _: isinstance(m, Tap),
                       mutable=['intermediates'])

  logits, state = apply(variables, _pixels())
  gradcam, = state['intermediates'][resnet.GRADCAM_LAYER]['__call__']
  # Measured: 1.7e-5 of logits up to 30; 4.6e-5 of activations up to 40.
  _assert_close(logits, keras_resnet['logits'], 'logits')
  _assert_close(gradcam, keras_resnet['gradcam'], resnet.GRADCAM_LAYER)


def test_features_match_keras_without_top(keras_resnet):
  model = resnet.build(resnet.default_config(), 3)
  variables = keras_layers.to_variables(keras_h5.read(keras_resnet['path'], {}),
                                        _template(model), 'keras')
  assert 'predictions' not in variables['params'] and 'head' in variables['params']
  features = jax.jit(lambda v, x: model.apply(v, x, features_only=True))(variables, _pixels())
  # Measured: 1.5e-5 of features up to 32.
  _assert_close(features, keras_resnet['features'], 'features')


def test_classic_h5_holds_the_same_layers(keras_resnet, tmp_path):
  # Keras 3's legacy model.save('x.h5'), the layout of the official files.
  keras_resnet['model'].save(tmp_path / 'm.h5')
  classic = keras_h5.read(tmp_path / 'm.h5', {})
  current = keras_h5.read(keras_resnet['path'], {})
  assert classic.keys() == current.keys()
  for name, arrays in current.items():
    assert len(classic[name]) == len(arrays), name
    for a, b in zip(classic[name], arrays):
      np.testing.assert_array_equal(a, b, err_msg=name)


def test_keras_files_are_the_official_ones():
  _keras()
  from keras.src.applications import resnet as keras_resnet_source
  for (name, include_top), (url, md5) in resnet.KERAS_FILES.items():
    assert url.startswith(keras_resnet_source.BASE_WEIGHTS_PATH)
    assert md5 == keras_resnet_source.WEIGHTS_HASHES[name][0 if include_top else 1]
    assert url.endswith('_notop.h5') != include_top


# -------------------------------------------------------------- BatchNorm

# The same code as ResNet50's, with a table small enough to run in a second.
TINY = (resnet.Stack(4, 1, 1), resnet.Stack(8, 2, 2))


@functools.lru_cache(maxsize=None)
def _tiny_variables() -> dict:
  """Random variables of every tiny model (no field changes them), drawn by
  numpy: Flax's initialisers compile one XLA program per shape."""
  shapes = jax.eval_shape(resnet.ResNetV1(stacks=TINY, num_outputs=2).init,
                          jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  rng = np.random.default_rng(3)

  def draw(path, leaf):
    if path[-1].key in ('scale', 'var'):
      return rng.uniform(0.5, 1.5, leaf.shape).astype(np.float32)
    return rng.normal(0, 0.1, leaf.shape).astype(np.float32)

  return jax.tree_util.tree_map_with_path(draw, shapes)


def _tiny(**fields):
  """A tiny model (no dropout, so that train=True needs no rng), its variables,
  pixels, and its jitted apply(rgb, **apply_arguments)."""
  model = resnet.ResNetV1(stacks=TINY, num_outputs=2, head_dropout=0.0, **fields)
  rgb = np.random.default_rng(2).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
  variables = _tiny_variables()

  def apply(**arguments):
    return jax.jit(functools.partial(model.apply, **arguments))(variables, rgb)

  return variables, apply


def test_tiny_table_names_layers_as_keras():
  variables = _tiny_variables()
  assert set(variables['batch_stats']) == {
      'conv1_bn', 'conv2_block1_0_bn', 'conv2_block1_1_bn', 'conv2_block1_2_bn',
      'conv2_block1_3_bn', 'conv3_block1_0_bn', 'conv3_block1_1_bn', 'conv3_block1_2_bn',
      'conv3_block1_3_bn', 'conv3_block2_1_bn', 'conv3_block2_2_bn', 'conv3_block2_3_bn'}
  assert set(variables['params']) == set(variables['batch_stats']) | {
      n.replace('_bn', '_conv') for n in variables['batch_stats']} | {'head'}


def test_frozen_batch_norm_uses_and_keeps_running_statistics():
  variables, apply = _tiny()
  out, state = apply(train=True, mutable=['batch_stats'])
  np.testing.assert_array_equal(out, apply())
  jax.tree_util.tree_map(np.testing.assert_array_equal, state['batch_stats'],
                         variables['batch_stats'])


def test_batch_norm_in_training_updates_only_named_layers():
  variables, apply = _tiny(batch_norm_training=('conv3_block2_3_bn',))
  out, state = apply(train=True, mutable=['batch_stats'])
  assert not np.allclose(out, apply())
  changed = {name for name, stats in state['batch_stats'].items()
             if not np.array_equal(stats['mean'], variables['batch_stats'][name]['mean'])}
  assert changed == {'conv3_block2_3_bn'}


def test_max_pooling_takes_the_gradcam_layers_maximum():
  _, apply = _tiny(pooling='max')
  features, state = apply(features_only=True,
                          capture_intermediates=lambda m, _: isinstance(m, Tap),
                          mutable=['intermediates'])
  gradcam, = state['intermediates'][resnet.GRADCAM_LAYER]['__call__']
  assert gradcam.shape == (2, 4, 4, 32)
  np.testing.assert_array_equal(features, gradcam.max(axis=(1, 2)))


# ------------------------------------------------------------ the contract


def test_backbone_record_passes_the_contract():
  record, = resnet.BACKBONES
  backbone.check(record)
  assert (record.name, record.gradcam_layer, record.default_input_size) == (
      NAME, 'conv5_block3_out', (224, 224))


def test_builds_at_the_minimum_input_size():
  config = resnet.default_config()
  size = resnet.min_input_size(config)
  model = resnet.build(config, 5)
  x = jnp.zeros((2, size, size, 3))
  variables = jax.eval_shape(model.init, jax.random.key(0), x)
  assert jax.eval_shape(model.apply, variables, x).shape == (2, 5)
  features = jax.eval_shape(lambda v: model.apply(v, x, features_only=True), variables)
  assert features.shape == (2, 2048)


def test_layer_groups_select_keras_layers():
  config = resnet.default_config()
  params = _template(resnet.build(config, 2), 32, 32)['params']
  paths = jax.tree_util.tree_leaves(partition.path_names(params))  # 'conv1_conv/kernel', ...
  groups = resnet.layer_groups(config)

  def selected(group):
    return {p.split('/')[0] for p in paths if any(re.fullmatch(g, p) for g in groups[group])}

  assert selected('base') == set(params) - {'head'}
  assert selected('top_block') == {n for n in params if n.startswith('conv5_')}
  assert selected('head') == {'head'}


def test_config_is_validated():
  class Error(Exception):
    pass

  config = resnet.default_config()
  full = type('Full', (), {'model': config})
  models.get('resnet50').validate_config(full, Error)
  config.pooling = 'flatten'
  with pytest.raises(Error, match='pooling'):
    models.get('resnet50').validate_config(full, Error)
  config.pooling, config.head_dropout = 'max', 1.0
  with pytest.raises(Error, match='head_dropout'):
    models.get('resnet50').validate_config(full, Error)
