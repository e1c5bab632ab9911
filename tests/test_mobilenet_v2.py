"""MobileNetV2: parity with keras.applications.MobileNetV2 on random weights
read from Keras's own files, frozen BatchNorm, and the backbone contract."""
import os

os.environ.setdefault('KERAS_BACKEND', 'jax')  # Keras as a reference needs no TensorFlow

import functools
import re
import types

import h5py
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from fsv import models
from fsv.models import backbone
from fsv.models import mobilenet_v2 as mnv2
from fsv.pretrained import keras_h5
from fsv.pretrained import keras_layers

# Odd on purpose: the stem sees 35, the stride-2 depthwise convs 18 (even)
# then 9, 5, 3 (odd), where Keras's ZeroPadding2D(correct_pad) + 'valid'
# and lax's 'SAME' could part ways; 35 -> 18 -> 9 -> 5 -> 3 -> 2.
SIZE = 35
FEATURES = 1280


@pytest.fixture(scope='module')
def keras():
  return pytest.importorskip('keras')


def _randomize(keras, model, seed: int = 0):
  """Non-trivial BatchNorm statistics, scales and offsets, and a top bias:
  Keras initialises them to 0 and 1, where a mix-up would not show."""
  rng = np.random.default_rng(seed)
  for layer in model.layers:
    if isinstance(layer, keras.layers.BatchNormalization):
      channels = layer.moving_mean.shape
      layer.moving_mean.assign(rng.normal(0, 0.1, channels).astype(np.float32))
      layer.moving_variance.assign(rng.uniform(0.5, 1.5, channels).astype(np.float32))
      layer.gamma.assign(rng.uniform(0.5, 1.5, channels).astype(np.float32))
      layer.beta.assign(rng.normal(0, 0.1, channels).astype(np.float32))
    elif isinstance(layer, keras.layers.Dense):
      layer.bias.assign(rng.normal(0, 0.1, layer.bias.shape).astype(np.float32))


def _build(keras, seed: int = 0, **kwargs):
  """keras.applications.MobileNetV2 with weights=None at SIZE px, its
  random kernels drawn by numpy: JAX compiles its sampler once per kernel
  shape, 20 s of CPU for this model's 44 shapes."""
  from keras.src import backend as keras_backend
  rng = np.random.default_rng(seed)

  def uniform(shape, minval=0.0, maxval=1.0, dtype=None, seed=None):
    del seed
    return jnp.asarray(rng.uniform(minval, maxval, shape), dtype or jnp.float32)

  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(keras_backend.random, 'uniform', uniform)
    return keras.applications.MobileNetV2(weights=None, input_shape=(SIZE, SIZE, 3),
                                          **kwargs)


@pytest.fixture(scope='module')
def pixels():
  return np.random.default_rng(1).uniform(0, 255, (2, SIZE, SIZE, 3)).astype(np.float32)


@pytest.fixture(scope='module')
def keras_top(keras, pixels, tmp_path_factory):
  """Keras's model with its top, its weights in Keras 3's and the classic
  layouts, and its logits and out_relu activations on `pixels`."""
  folder = tmp_path_factory.mktemp('keras_top')
  model = _build(keras, classifier_activation=None)
  _randomize(keras, model)
  model.save_weights(folder / 'm.weights.h5')
  model.save(folder / 'model.h5')  # Keras 3 writes the legacy full-model layout for '.h5'
  from keras.src.legacy.saving import legacy_h5_format
  with h5py.File(folder / 'legacy.h5', 'w') as f:  # the official files' layout
    legacy_h5_format.save_weights_to_hdf5_group(f, model)
  both = keras.Model(model.inputs, [model.get_layer(mnv2.GRADCAM_LAYER).output, model.output])
  # predict: one compiled graph (calling the model runs and compiles op by op).
  tap, logits = both.predict(keras.applications.mobilenet_v2.preprocess_input(pixels.copy()),
                             verbose=0)
  return types.SimpleNamespace(model=model, folder=folder, tap=np.asarray(tap),
                               logits=np.asarray(logits))


@pytest.fixture(scope='module')
def keras_no_top(keras, keras_top, pixels):
  """Keras's model with include_top=False, pooling='avg' and the same
  weights, saved in the layout of the official `_no_top.h5` files."""
  model = _build(keras, include_top=False, pooling='avg')
  for layer in model.layers:
    if layer.weights:
      layer.set_weights(keras_top.model.get_layer(layer.name).get_weights())
  path = keras_top.folder / 'no_top.h5'
  from keras.src.legacy.saving import legacy_h5_format
  with h5py.File(path, 'w') as f:
    legacy_h5_format.save_weights_to_hdf5_group(f, model)
  features = model.predict(keras.applications.mobilenet_v2.preprocess_input(pixels.copy()),
                           verbose=0)
  return types.SimpleNamespace(path=path, features=np.asarray(features))


@functools.cache
def _template(include_top: bool) -> dict:
  """MobileNetV2(include_top)'s variables: shapes only (no compilation), but
  the head's values, which `to_variables` keeps. Cached: tracing the model
  takes seconds."""
  model = mnv2.MobileNetV2(include_top=include_top)
  variables = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, SIZE, SIZE, 3)))
  if not include_top:
    head = models.head_of(mnv2.default_config(), model).init(jax.random.key(0), jnp.zeros((1, FEATURES)))
    variables = {**variables, 'params': {**variables['params'], 'head': head['params']}}
  return variables


def _load(path, include_top: bool) -> dict:
  return keras_layers.to_variables(keras_h5.read(path, {}), _template(include_top), str(path))


def _scale_error(ours, theirs) -> float:
  """The largest difference relative to the reference's largest magnitude."""
  ours, theirs = np.asarray(ours), np.asarray(theirs)
  return float(np.abs(ours - theirs).max() / np.abs(theirs).max())


# ------------------------------------------------------------ Keras parity


def test_layer_names_are_keras_layers_with_weights(keras_top):
  ours = set(_template(True)['params'])
  assert ours == {layer.name for layer in keras_top.model.layers if layer.weights}


def test_logits_and_gradcam_activations_match_keras(keras_top, pixels):
  model = mnv2.MobileNetV2(include_top=True)
  variables = _load(keras_top.folder / 'm.weights.h5', include_top=True)
  logits, state = jax.jit(lambda v, x: model.apply(
      v, x, capture_intermediates=lambda m, _: m.name == mnv2.GRADCAM_LAYER,
      mutable=['intermediates']))(variables, pixels)
  tap = state['intermediates'][mnv2.GRADCAM_LAYER]['__call__'][0]
  assert tap.shape == keras_top.tap.shape == (2, 2, 2, FEATURES)
  # Measured: 1.8e-7 both (logits |max| 0.67, out_relu |max| 0.65).
  assert _scale_error(logits, keras_top.logits) < 1e-5
  assert _scale_error(tap, keras_top.tap) < 1e-5


@pytest.fixture(scope='module')
def no_top_run(keras_no_top, pixels):
  """The transfer model (no top, average pooling) with the no-top file's
  weights: its features in inference, and in training steps with all
  BatchNorm frozen and with Conv_1_bn training, in one compilation."""
  variables = _load(keras_no_top.path, include_top=False)

  @jax.jit
  def run(v, x):
    model = mnv2.MobileNetV2()
    inference, seen = model.apply(v, x, features_only=True, mutable=['intermediates'],
                                  capture_intermediates=lambda m, _: m.name == 'Conv_1')
    frozen, frozen_state = model.apply(v, x, train=True, features_only=True,
                                       mutable=['batch_stats'])
    trained, trained_state = model.clone(batch_norm_training=('Conv_1_bn',)).apply(
        v, x, train=True, features_only=True, mutable=['batch_stats'])
    return dict(features=inference, conv_1=seen['intermediates']['Conv_1']['__call__'][0],
                frozen=frozen, frozen_stats=frozen_state['batch_stats'],
                trained=trained, trained_stats=trained_state['batch_stats'])

  return types.SimpleNamespace(variables=variables, **run(variables, pixels))


def test_features_match_keras_without_top_from_a_no_top_file(keras_no_top, no_top_run):
  assert 'predictions' not in no_top_run.variables['params']
  assert no_top_run.features.shape == (2, FEATURES)
  # Measured: 6e-8 (|max| 0.65).
  assert _scale_error(no_top_run.features, keras_no_top.features) < 1e-5


@pytest.mark.parametrize('name', ['model.h5', 'legacy.h5'])
def test_classic_h5_layouts_give_the_same_variables(keras_top, name):
  """Keras 3's legacy `model.save('x.h5')` and the official files' layout
  (tf.keras save_weights) hold the arrays `.weights.h5` does."""
  expected = _load(keras_top.folder / 'm.weights.h5', include_top=True)
  got = _load(keras_top.folder / name, include_top=True)
  jax.tree_util.tree_map(np.testing.assert_array_equal, got, expected)


# --------------------------------------------------------------- BatchNorm


def test_batch_norm_is_frozen_unless_named(no_top_run):
  run, stats = no_top_run, no_top_run.variables['batch_stats']
  # Keras's trainable=False: train steps normalise with the running statistics
  # and leave them as they were.
  np.testing.assert_array_equal(run.frozen, run.features)
  jax.tree_util.tree_map(np.testing.assert_array_equal, run.frozen_stats, stats)
  # A layer named in batch_norm_training normalises with batch statistics and
  # moves its own running statistics (Keras's momentum 0.999), and only its own.
  assert not np.allclose(run.trained, run.features)
  changed = {name for name, new in run.trained_stats.items()
             if not np.array_equal(new['mean'], stats[name]['mean'])}
  assert changed == {'Conv_1_bn'}
  batch_mean = np.asarray(run.conv_1).mean(axis=(0, 1, 2))
  np.testing.assert_allclose(run.trained_stats['Conv_1_bn']['mean'],
                             0.999 * stats['Conv_1_bn']['mean'] + 0.001 * batch_mean,
                             rtol=1e-5, atol=1e-7)


# ----------------------------------------------------------- the contract


def test_backbone_contract():
  record, = mnv2.BACKBONES
  backbone.check(record)
  assert (record.name, record.gradcam_layer, record.default_input_size) == (
      'mobilenet_v2', 'out_relu', (224, 224))
  assert record.input_rescale == 1.0 and record.has_batch_norm


def test_builds_at_the_minimum_input_size():
  config = mnv2.default_config()
  size = mnv2.min_input_size(config)
  assert size == 32
  model = mnv2.build(config, 3)
  x = jnp.zeros((2, size, size, 3))
  logits = jax.eval_shape(lambda x: model.init_with_output(jax.random.key(0), x)[0], x)
  assert logits.shape == (2, 3)


def test_layer_groups_select_the_backbone_the_last_block_and_the_head():
  config = mnv2.default_config()
  paths = ['/'.join(k.key for k in path)
           for path, _ in jax.tree_util.tree_flatten_with_path(_template(False)['params'])[0]]
  groups = mnv2.layer_groups(config)

  def selected(group):
    return {p for p in paths if any(re.fullmatch(pattern, p) for pattern in groups[group])}

  head = {p for p in paths if p.startswith('head/')}
  assert head and selected('head') == head
  assert selected('base') == set(paths) - head
  assert {p.split('/')[0] for p in selected('top_block')} == {
      'block_16_expand', 'block_16_expand_BN', 'block_16_depthwise',
      'block_16_depthwise_BN', 'block_16_project', 'block_16_project_BN',
      'Conv_1', 'Conv_1_bn'}


@pytest.mark.parametrize('key, value', [('pooling', 'min'), ('pooling', ''),
                                        ('head_dropout', 1.0), ('head_dropout', -0.1)])
def test_validate_config_refuses(key, value):
  config = ml_collections.ConfigDict({'model': mnv2.default_config()})
  models.get('mobilenet_v2').validate_config(config, ValueError)
  config.model[key] = value
  with pytest.raises(ValueError, match=key):
    models.get('mobilenet_v2').validate_config(config, ValueError)


def test_keras_files_are_the_official_alpha_1_224_ones():
  url, _ = mnv2.KERAS_FILES[('mobilenet_v2', False)]
  assert url.endswith('mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5')
  assert set(mnv2.KERAS_FILES) == {('mobilenet_v2', True), ('mobilenet_v2', False)}
