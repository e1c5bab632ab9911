"""Xception: parity with keras.applications.Xception on random weights, the
names of Keras's unnamed residual layers, frozen BatchNorm, the contract."""
import os

os.environ.setdefault('KERAS_BACKEND', 'jax')  # Keras as a reference needs no TensorFlow

import re
import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from fsv import models
from fsv.models import backbone
from fsv.models import xception
from fsv.models.layers import SeparableConv
from fsv.pretrained import keras_h5
from fsv.pretrained import keras_layers
from fsv.pretrained.layout import WeightsError

# Not square, and sizes whose stride-2 poolings see both odd and even maps,
# so TF's asymmetric 'same' padding is exercised (75 -> 37 -> 35 -> 18 -> 9 -> 5 -> 3).
HEIGHT, WIDTH = 75, 77


def _numpy_uniform(rng):
  """Keras's JAX `random.uniform` drawn by numpy instead: Keras's initialisers
  compile one XLA program per weight shape (29 for Xception, ~20 s here)."""
  def uniform(shape, minval=0.0, maxval=1.0, dtype=None, seed=None):
    del seed
    return jnp.asarray(rng.uniform(minval, maxval, shape), dtype or 'float32')
  return uniform


def _keras_xception(keras):
  """Keras's Xception (the top's logits), built after other layers took the
  first automatic names, with random BatchNorm parameters and statistics."""
  keras.layers.Conv2D(1, 1), keras.layers.Conv2D(1, 1)
  keras.layers.BatchNormalization()
  rng = np.random.default_rng(0)
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(keras.src.backend.jax.random, 'uniform', _numpy_uniform(rng))
    model = keras.applications.Xception(weights=None, input_shape=(HEIGHT, WIDTH, 3),
                                        classifier_activation=None)
  for layer in model.layers:
    if isinstance(layer, keras.layers.BatchNormalization):
      shape = layer.gamma.shape
      layer.gamma.assign(rng.uniform(0.5, 1.5, shape))
      layer.beta.assign(rng.normal(0, 0.1, shape))
      layer.moving_mean.assign(rng.normal(0, 0.1, shape))
      layer.moving_variance.assign(rng.uniform(0.5, 1.5, shape))
  bias = model.get_layer('predictions').bias
  bias.assign(rng.normal(0, 0.1, bias.shape))
  return model


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
  """Keras's outputs on 0-255 pixels and its weights files (Keras 3 and classic)."""
  keras = pytest.importorskip('keras')
  pytest.importorskip('h5py')
  from keras.applications import xception as keras_xception
  model = _keras_xception(keras)
  pixels = np.random.default_rng(1).uniform(0, 255, (2, HEIGHT, WIDTH, 3)).astype(np.float32)
  # avg_pool's output is what include_top=False, pooling='avg' returns (the same
  # GlobalAveragePooling2D on the same activations).
  probe = keras.Model(model.inputs, [model.output, model.get_layer('avg_pool').output,
                                     model.get_layer(xception.GRADCAM_LAYER).output])
  logits, features, activations = probe.predict(keras_xception.preprocess_input(pixels.copy()),
                                                verbose=0)
  directory = tmp_path_factory.mktemp('xception')
  model.save_weights(directory / 'm.weights.h5')
  model.save(directory / 'm.h5')  # Keras 3's legacy writer: the classic layout
  auto_named = [layer.name for layer in model.layers
                if isinstance(layer, (keras.layers.Conv2D, keras.layers.BatchNormalization))
                and not layer.name.startswith('block')]
  return types.SimpleNamespace(pixels=pixels, logits=logits, features=features,
                               activations=activations, directory=directory,
                               auto_named=auto_named)


def _tap(module, method_name):
  del method_name
  return module.name == xception.GRADCAM_LAYER


@pytest.fixture(scope='module')
def converted(reference):
  """The Keras 3 file's weights in the module with the ImageNet top."""
  model = xception.Xception(include_top=True)
  # Shapes are all the template needs (initialising would compile for ~30 s).
  shapes = jax.eval_shape(model.init, jax.random.key(0),
                          jax.ShapeDtypeStruct((1, HEIGHT, WIDTH, 3), jnp.float32))
  template = jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), shapes)
  path = reference.directory / 'm.weights.h5'
  layers = xception.rename_keras_layers(keras_h5.read(path, {}))
  return model, keras_layers.to_variables(layers, template, str(path))


def _transfer_variables(converted, seed=0):
  """The converted base, without Keras's top, with a random fsv head (3 outputs)."""
  _, variables = converted
  params = {k: v for k, v in variables['params'].items() if k != 'predictions'}
  rng = np.random.default_rng(seed)
  params['head'] = {'logits': {'kernel': rng.normal(0, 0.05, (2048, 3)).astype(np.float32),
                               'bias': np.zeros(3, np.float32)}}
  return {'params': params, 'batch_stats': variables['batch_stats']}


def _assert_close(actual, expected, tolerance):
  """Within `tolerance` times the largest magnitude of `expected`."""
  scale = float(np.abs(expected).max())
  assert scale > 0.1  # random weights that left activations alive
  np.testing.assert_allclose(np.asarray(actual), expected, rtol=0, atol=tolerance * scale)


# ------------------------------------------------------------- parity


def test_keras_names_were_shifted_by_earlier_layers(reference):
  conv, bn = ([n for n in reference.auto_named if n.startswith(cls)]
              for cls in ('conv2d', 'batch_normalization'))
  assert len(conv) == len(bn) == 4
  assert 'conv2d' not in conv and 'conv2d_1' not in conv and 'batch_normalization' not in bn


def test_logits_and_gradcam_activations_match_keras(reference, converted):
  # Measured (float32, CPU): |diff| <= 1.3e-7 of the logits' scale, 6.3e-8 of the
  # activations'; BatchNorm epsilon 1e-5 instead of Keras's 1e-3 gives 7e-4.
  model, variables = converted
  logits, state = jax.jit(lambda v, x: model.apply(
      v, x, capture_intermediates=_tap, mutable=['intermediates']))(variables, reference.pixels)
  activations = state['intermediates'][xception.GRADCAM_LAYER]['__call__'][0]
  assert activations.shape == reference.activations.shape == (2, 3, 3, 2048)
  _assert_close(activations, reference.activations, 1e-4)
  assert logits.shape == (2, xception.IMAGENET_CLASSES)
  _assert_close(logits, reference.logits, 1e-4)


def test_features_in_a_frozen_training_step_match_keras_avg_pooling(reference, converted):
  """features_only of the transfer model (fsv's head, no top) = Keras's
  include_top=False, pooling='avg' output, in a training step too: BatchNorm
  not named in batch_norm_training normalises with its running statistics
  (Keras's inference mode) and leaves them as they were."""
  variables = _transfer_variables(converted)
  model = xception.Xception(num_outputs=3)
  features, state = jax.jit(lambda v, x: model.apply(
      v, x, train=True, features_only=True, mutable=['batch_stats']))(variables,
                                                                       reference.pixels)
  assert features.shape == (2, 2048)
  _assert_close(features, reference.features, 1e-4)  # measured 1.3e-7
  for (where, a), b in zip(jax.tree_util.tree_leaves_with_path(state['batch_stats']),
                           jax.tree_util.tree_leaves(variables['batch_stats'])):
    np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(where))


def test_classic_h5_file_converts_to_the_same_variables(reference, converted):
  model, variables = converted
  path = reference.directory / 'm.h5'
  layers = xception.rename_keras_layers(keras_h5.read(path, {}))
  classic = keras_layers.to_variables(layers, variables, str(path))
  for (where, a), b in zip(jax.tree_util.tree_leaves_with_path(variables),
                           jax.tree_util.tree_leaves(classic)):
    np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(where))


# ------------------------------------------------------- residual names


def _arrays(n):
  return (np.full((1,), n, np.float32),)


def test_residual_layers_renamed_in_numeric_order():
  """Keras 2's official files: conv2d_1..4; a suffix 10 comes after 9, and
  'conv2d' (no suffix) first."""
  layers = {'block1_conv1': _arrays(-1), 'conv2d': _arrays(0), 'conv2d_10': _arrays(10),
            'conv2d_9': _arrays(9), 'conv2d_2': _arrays(2),
            **{f'batch_normalization_{i}': _arrays(i) for i in (1, 2, 3, 4)}}
  renamed = xception.rename_keras_layers(layers)
  assert renamed['block1_conv1'] == layers['block1_conv1']
  assert [renamed[n][0][0] for n in xception.RESIDUAL_CONVS] == [0, 2, 9, 10]
  assert [renamed[n][0][0] for n in xception.RESIDUAL_BNS] == [1, 2, 3, 4]
  assert xception.RESIDUAL_CONVS == ('block2_residual_conv', 'block3_residual_conv',
                                     'block4_residual_conv', 'block13_residual_conv')
  assert not any(n.startswith(('conv2d', 'batch_normalization')) for n in renamed)


def test_layers_already_under_fsvs_names_pass_unchanged():
  """As fsv's weights cache (.npz) holds a converted file."""
  layers = {name: _arrays(i) for i, name in
            enumerate(('block1_conv1',) + xception.RESIDUAL_CONVS + xception.RESIDUAL_BNS)}
  assert xception.rename_keras_layers(layers) == layers
  del layers['block13_residual_bn']
  with pytest.raises(WeightsError, match='auto-named'):
    xception.rename_keras_layers(layers)


@pytest.mark.parametrize('change', ['one_missing', 'one_more'])
def test_renaming_refuses_other_than_four_auto_named_layers(change):
  layers = {**{f'conv2d_{i}': _arrays(i) for i in (1, 2, 3, 4)},
            **{f'batch_normalization_{i}': _arrays(i) for i in (1, 2, 3, 4)}}
  if change == 'one_missing':
    del layers['batch_normalization_3']
  else:
    layers['conv2d_5'] = _arrays(5)
  with pytest.raises(WeightsError, match='auto-named'):
    xception.rename_keras_layers(layers)


# ------------------------------------------------------------- layers


def test_separable_conv_is_depthwise_then_pointwise():
  """Strided, with a bias and an odd and an even side (Xception's own, stride 1
  without bias, are checked by the parity tests)."""
  stride = 2
  x = jnp.asarray(np.random.default_rng(3).normal(size=(2, 8, 9, 4)), jnp.float32)
  layer = SeparableConv(5, 3, stride, use_bias=True)
  params = dict(jax.jit(layer.init)(jax.random.key(0), x)['params'])
  assert params['depthwise_kernel'].shape == (3, 3, 1, 4)
  assert params['pointwise_kernel'].shape == (1, 1, 4, 5)
  params['bias'] = jnp.arange(5.0)
  spec = ('NHWC', 'HWIO', 'NHWC')
  depthwise = jax.lax.conv_general_dilated(x, params['depthwise_kernel'], (stride, stride),
                                           'SAME', dimension_numbers=spec,
                                           feature_group_count=4)
  expected = jax.lax.conv_general_dilated(depthwise, params['pointwise_kernel'], (1, 1),
                                          'VALID', dimension_numbers=spec)
  expected = expected + params['bias']
  np.testing.assert_allclose(jax.jit(layer.apply)({'params': params}, x), expected,
                             rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('height, width', [(5, 6), (1, 2)])
def test_max_pool_is_tf_same_pooling(height, width):
  x = jnp.asarray(np.random.default_rng(4).normal(size=(2, height, width, 3)), jnp.float32)
  expected = nn.max_pool(x, (3, 3), (2, 2), padding='SAME')  # lax 'SAME' = TF's
  np.testing.assert_array_equal(jax.jit(xception.max_pool_3x3_same)(x), expected)


# ------------------------------------------------------------- BatchNorm


def test_batch_norm_named_in_training_updates_its_statistics(reference, converted):
  variables = _transfer_variables(converted)
  trained = ('block2_sepconv1_bn', 'block2_residual_bn')
  model = xception.Xception(num_outputs=3, batch_norm_training=trained)
  # Only the statistics are returned: XLA then compiles no more than block 2.
  state = jax.jit(lambda v, x: model.apply(
      v, x, train=True, features_only=True, mutable=['batch_stats'])[1])(variables,
                                                                         reference.pixels)
  for name, stats in state['batch_stats'].items():
    changed = not np.array_equal(stats['mean'], variables['batch_stats'][name]['mean'])
    assert changed == (name in trained), name


# ------------------------------------------------------------- contract


def test_backbone_record_passes_the_contract():
  record, = xception.BACKBONES
  backbone.check(record)
  assert record.name == 'xception' and record.gradcam_layer == 'block14_sepconv2_act'
  assert record.default_input_size == (299, 299)


def test_builds_at_the_minimum_input_size():
  config = xception.default_config()
  size = xception.min_input_size(config)
  assert size == 71
  model = xception.build(config, 4)
  x = jax.ShapeDtypeStruct((2, size, size, 3), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.key(0), x)
  assert jax.eval_shape(model.apply, variables, x).shape == (2, 4)
  assert set(variables['params']) >= set(xception.RESIDUAL_CONVS) | {'head'}
  assert 'predictions' not in variables['params']


def test_layer_groups_select_the_exit_flow():
  config = xception.default_config()
  groups = xception.layer_groups(config)
  model = xception.build(config, 2)
  x = jax.ShapeDtypeStruct((1, 71, 71, 3), jnp.float32)
  params = jax.eval_shape(model.init, jax.random.key(0), x)['params']
  paths = ['/'.join(k.key for k in path)
           for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]]

  def selected(group):
    return {p.split('/')[0] for p in paths if any(re.fullmatch(g, p) for g in groups[group])}

  assert selected('base') == set(params) - {'head'}
  assert selected('head') == {'head'}
  assert selected('top_block') == {n for n in params if n.startswith(('block13_', 'block14_'))}
  assert 'block13_residual_conv' in selected('top_block')


def test_validate_config_refuses_bad_pooling_and_dropout():
  for key, value in (('pooling', 'flatten'), ('head_dropout', 1.0)):
    config = ml_collections.ConfigDict({'model': xception.default_config()})
    config.model[key] = value
    with pytest.raises(ValueError, match=key):
      models.get('xception').validate_config(config, ValueError)
