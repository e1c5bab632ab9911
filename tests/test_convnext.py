"""ConvNeXt-Tiny: parity with keras.applications.ConvNeXtTiny on random weights
read from Keras's own files, Keras's layer names, stochastic depth, the contract."""
import functools
import os
import pathlib
import re

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from fsv import partition
from fsv.models import backbone
from fsv.models import convnext
from fsv.pretrained import keras_h5
from fsv.pretrained import keras_layers

NAME = 'convnext_tiny'
P = NAME + '_'
# Keras's own ConvNeXt builder (what ConvNeXtTiny calls) at a reduced depth
# and width, so that both sides build and run in seconds on a shared CPU: the
# same layers, names and code paths as ConvNeXtTiny, whose depths and widths
# are checked against Keras's MODEL_CONFIGS separately. (Full ConvNeXtTiny at
# 32 px, run once the same way: max |diff| 1.9e-6 for logits of scale 3.4,
# 2.5e-6 at the Grad-CAM layer (scale 4.2), 1.9e-6 notop (scale 4.7).)
MINI = 'convnext_mini'
MINI_VARIANT = convnext.Variant((1, 1, 2, 1), (16, 24, 32, 48), 224)
SIZE = 64  # 2x2 after the last stage, so that average and max pooling differ


def _pixels(seed: int = 0, size: int = SIZE) -> np.ndarray:
  return np.random.default_rng(seed).uniform(0, 255, (2, size, size, 3)).astype(np.float32)


@pytest.fixture(scope='module')
def mini():
  """The reduced variant, in convnext.VARIANTS while this file's tests run."""
  with pytest.MonkeyPatch.context() as patch:
    patch.setitem(convnext.VARIANTS, MINI, MINI_VARIANT)
    yield MINI


def _mini(include_top=False, **fields) -> convnext.ConvNeXt:
  return convnext.ConvNeXt(variant=MINI, num_outputs=convnext.IMAGENET_CLASSES
                           if include_top else 3, include_top=include_top, **fields)


def _init(model, seed: int = 0) -> dict:
  """Random variables of the module's shapes: kernels N(0, 1/fan_in), the rest
  around their initial values. (Tracing `init` for its shapes, instead of
  running it, saves compiling ~40 truncated-normal initialisers: 20 s here.)"""
  rng = np.random.default_rng(seed)

  def value(path, leaf):
    name, shape = path[-1].key, leaf.shape
    if name == 'kernel':
      return rng.normal(0, np.prod(shape[:-1]) ** -0.5, shape).astype(np.float32)
    if name in ('scale', 'gamma'):
      return rng.uniform(0.5, 1.5, shape).astype(np.float32)
    return rng.normal(0, 0.2, shape).astype(np.float32)

  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, SIZE, SIZE, 3)))
  return jax.tree_util.tree_map_with_path(value, shapes)


def _apply(model, variables, rgb, **kwargs):
  """Output and the Grad-CAM layer's activations."""
  out, state = model.apply(variables, jnp.asarray(rgb), capture_intermediates=lambda m, _:
                           m.name == convnext.GRADCAM_LAYER, mutable=['intermediates'],
                           **kwargs)
  return np.asarray(out), np.asarray(state['intermediates'][convnext.GRADCAM_LAYER]
                                     ['__call__'][0])


@functools.lru_cache(maxsize=None)
def _tiny_shapes(include_top: bool = True) -> dict:
  """ConvNeXtTiny's variables' shapes at the minimum input (no computation)."""
  model = convnext.build(convnext.default_config(NAME), 1000 if include_top else 3,
                         include_top=include_top)
  return jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))


# ------------------------------------------------------------------- Keras


def _randomize(model, seed: int):
  """Non-trivial values for every weight Keras would initialise to constants
  (LayerScale's 1e-6 would hide each block's branch; LayerNorm 1 and 0, zero
  biases would hide a swapped gamma/beta or bias)."""
  rng = np.random.default_rng(seed)
  for variable in model.weights:
    leaf, shape = variable.path.rsplit('/', 1)[-1], tuple(variable.shape)
    if '_layer_scale/' in variable.path or leaf == 'gamma':
      variable.assign(rng.uniform(0.5, 1.5, shape).astype(np.float32))
    elif leaf in ('beta', 'bias'):
      variable.assign(rng.normal(0, 0.2, shape).astype(np.float32))


def _keras():
  pytest.importorskip('h5py')
  os.environ.setdefault('KERAS_BACKEND', 'jax')
  keras = pytest.importorskip('keras')
  if keras.backend.backend() != 'jax':
    pytest.skip(f'Keras runs on {keras.backend.backend()}, not jax')
  return keras, pytest.importorskip('keras.src.applications.convnext')


@pytest.fixture(scope='module')
def keras_run(mini, tmp_path_factory):
  """Keras's top and notop ConvNeXt (MINI_VARIANT) on random weights: their
  files (Keras 3 .weights.h5 and legacy .h5) and outputs on `_pixels()`."""
  keras, keras_convnext = _keras()
  tmp = tmp_path_factory.mktemp('convnext')
  # Unnamed LayerNormalizations made earlier in the session shift the auto name
  # of the notop model's pooled-features LayerNorm.
  keras.layers.LayerNormalization()
  keras.layers.LayerNormalization()
  rgb = _pixels()
  # ConvNeXt's preprocess_input is the identity (the model normalises); called
  # anyway, so that a Keras that changed this would show.
  x = np.asarray(keras.applications.convnext.preprocess_input(rgb.copy()))
  run = {'rgb': rgb}
  for include_top in (True, False):
    kind = 'top' if include_top else 'notop'
    model = keras_convnext.ConvNeXt(
        depths=list(MINI_VARIANT.depths), projection_dims=list(MINI_VARIANT.projection_dims),
        drop_path_rate=0.0, layer_scale_init_value=convnext.LAYER_SCALE_INIT, name=mini,
        include_top=include_top, weights=None, input_shape=(SIZE, SIZE, 3), pooling='avg',
        classifier_activation=None)
    _randomize(model, seed=1 if include_top else 2)
    run[kind] = np.asarray(model(x))
    if include_top:
      last_stage = model.get_layer(mini + '_head_gap').input
      run['gradcam'] = np.asarray(keras.Model(model.input, last_stage)(x))
    else:
      run['notop_norm'] = model.layers[-1].name
    run[kind + '.weights.h5'] = tmp / f'{kind}.weights.h5'
    model.save_weights(run[kind + '.weights.h5'])
    try:
      model.save(tmp / f'{kind}.h5')
      run[kind + '.h5'] = tmp / f'{kind}.h5'
    except Exception as e:  # noqa: BLE001 (legacy saving is optional)
      run[kind + '.h5'] = e
  return run


def _variables(path: pathlib.Path, include_top: bool) -> tuple[convnext.ConvNeXt, dict]:
  model = _mini(include_top)
  layers = convnext.rename_keras_layers(keras_h5.read(path, {}), MINI)
  keep = () if include_top else ('head',)
  return model, keras_layers.to_variables(layers, _init(model), str(path), keep=keep)


def _close(actual, expected, scale_tol=1e-5):
  """Equal up to float32 rounding relative to the activations' scale."""
  scale = float(np.abs(expected).max())
  np.testing.assert_allclose(actual, expected, rtol=0, atol=scale_tol * max(scale, 1.0))


def test_variants_are_kerass_model_configs():
  _, keras_convnext = _keras()
  for name, variant in convnext.VARIANTS.items():
    config = keras_convnext.MODEL_CONFIGS[name.removeprefix('convnext_')]
    assert variant == (tuple(config['depths']), tuple(config['projection_dims']),
                       config['default_size'])
  assert convnext.REGISTERED == (NAME,)


def test_top_logits_and_gradcam_activations_match_keras(keras_run):
  model, variables = _variables(keras_run['top.weights.h5'], include_top=True)
  logits, gradcam = _apply(model, variables, keras_run['rgb'])
  # Measured max |diff|: 2.7e-7 for logits of scale 1.3, 1.4e-6 for the
  # last stage's activations of scale 3.5.
  _close(logits, keras_run['top'])
  _close(gradcam, keras_run['gradcam'])


def test_notop_features_match_keras_pooling_avg(keras_run):
  model, variables = _variables(keras_run['notop.weights.h5'], include_top=False)
  features = np.asarray(model.apply(variables, jnp.asarray(keras_run['rgb']),
                                    features_only=True))
  # Keras's notop output: LayerNorm(GlobalAveragePooling(last stage)).
  # Measured max |diff| 6e-7 on a scale of 2.3.
  _close(features, keras_run['notop'])
  logits = model.apply(variables, jnp.asarray(keras_run['rgb']))
  assert logits.shape == (2, 3)


def test_notop_auto_named_layer_norm_is_renamed_to_the_head_layernorm(keras_run):
  # Shifted by the unnamed LayerNormalizations made before the model.
  auto = keras_run['notop_norm']
  assert auto.startswith('layer_normalization_'), auto
  layers = keras_h5.read(keras_run['notop.weights.h5'], {})
  head_norm = MINI + '_head_layernorm'
  assert auto in layers and head_norm not in layers
  renamed = convnext.rename_keras_layers(layers, MINI)
  assert auto not in renamed
  np.testing.assert_array_equal(renamed[head_norm][0], layers[auto][0])
  assert set(renamed) - {head_norm} == set(layers) - {auto}


def test_rename_leaves_top_files_and_ambiguous_files_alone():
  top = {P + 'head_layernorm': (1,), 'layer_normalization_4': (2,)}
  assert convnext.rename_keras_layers(top, NAME) == top
  two = {'layer_normalization': (1,), 'layer_normalization_1': (2,)}
  assert convnext.rename_keras_layers(two, NAME) == two
  assert convnext.rename_keras_layers({'layer_normalization': (1,)}, NAME) == {
      P + 'head_layernorm': (1,)}


@pytest.mark.parametrize('kind', ['top', 'notop'])
def test_legacy_h5_names_nested_layers_as_keras3_files_do(keras_run, kind):
  legacy = keras_run[kind + '.h5']
  if isinstance(legacy, Exception):
    pytest.skip(f'Keras cannot write a legacy .h5 of ConvNeXt: {legacy!r}')
  modern = keras_h5.read(keras_run[kind + '.weights.h5'], {})
  classic = keras_h5.read(legacy, {})
  # The Sequential stem/downsampling blocks' inner layers come back by their own names.
  assert {MINI + '_stem_conv', MINI + '_downsampling_conv_2'} <= set(classic)
  assert set(classic) == set(modern)
  for name, arrays in modern.items():
    assert len(classic[name]) == len(arrays)
    for a, b in zip(classic[name], arrays):
      np.testing.assert_array_equal(a, b)
  _, from_legacy = _variables(legacy, include_top=kind == 'top')
  _, from_modern = _variables(keras_run[kind + '.weights.h5'], include_top=kind == 'top')
  jax.tree_util.tree_map(np.testing.assert_array_equal, from_legacy, from_modern)


# ------------------------------------------------------------ conventions


def test_layers_are_keras_names_at_the_top_level():
  params = _tiny_shapes()['params']
  assert set(params[P + 'stage_0_block_0_layer_scale']) == {'gamma'}
  assert params[P + 'stage_0_block_0_layer_scale']['gamma'].shape == (96,)
  dw = params[P + 'stage_3_block_2_depthwise_conv']
  assert {k: v.shape for k, v in dw.items()} == {'kernel': (7, 7, 1, 768), 'bias': (768,)}
  assert params[P + 'stem_conv']['kernel'].shape == (4, 4, 3, 96)
  assert params[P + 'downsampling_conv_2']['kernel'].shape == (2, 2, 384, 768)
  assert P + 'stage_2_block_8_pointwise_conv_2' in params
  assert params[P + 'head_dense']['kernel'].shape == (768, 1000)
  # Keras's count for ConvNeXtTiny (include_top=True).
  assert sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(params)) == 28_589_128


def test_preprocessing_is_imagenet_mean_and_std():
  rgb = np.array([[0.485, 0.456, 0.406], [0.714, 0.680, 0.631]], np.float32) * 255
  out = np.asarray(convnext.preprocess(jnp.asarray(rgb)))
  np.testing.assert_allclose(out, [[0, 0, 0], [1, 1, 1]], atol=1e-5)


def test_max_pooling_normalises_the_maximum_of_the_last_stage(mini):
  model = _mini(pooling='max')
  variables = _init(model)
  features, gradcam = _apply(model, variables, _pixels(3), features_only=True)
  assert gradcam.shape == (2, 2, 2, 48)
  pooled = gradcam.max(axis=(1, 2))
  norm = variables['params'][MINI + '_head_layernorm']
  mean, var = pooled.mean(-1, keepdims=True), pooled.var(-1, keepdims=True)
  expected = (pooled - mean) / np.sqrt(var + 1e-6) * norm['scale'] + norm['bias']
  np.testing.assert_allclose(features, expected, atol=1e-4)


def test_drop_path_only_in_training_steps(mini):
  rgb, key = jnp.asarray(_pixels(4)), jax.random.key(7)
  variables = _init(_mini())  # layer scales ~1, so that each block's branch counts
  features = lambda model, train: np.asarray(model.apply(
      variables, rgb, train=train, features_only=True, rngs={'dropout': key}))
  inference = features(_mini(), False)
  # No BatchNorm, so no state: a training step without drop path computes the same.
  assert set(variables) == {'params'}
  np.testing.assert_array_equal(features(_mini(), True), inference)
  dropping = _mini(drop_path_rate=0.5)
  np.testing.assert_array_equal(features(dropping, False), inference)
  assert not np.allclose(features(dropping, True), inference, atol=1e-3)
  # Keras's schedule: linear over the blocks, the first never dropped.
  np.testing.assert_allclose(convnext.drop_rates(MINI, 0.5), [0, 0.125, 0.25, 0.375, 0.5])


def test_layer_groups_split_base_top_block_and_head():
  groups = convnext.layer_groups(convnext.default_config(NAME))
  names = jax.tree_util.tree_leaves(partition.path_names(_tiny_shapes(False)['params']))

  def matching(group):
    return {n for n in names if any(re.fullmatch(p, n) for p in groups[group])}

  base, top, head = matching('base'), matching('top_block'), matching('head')
  assert base | head == set(names) and not base & head
  assert top < base
  assert head == {'head/logits/kernel', 'head/logits/bias'}
  assert {P + 'downsampling_conv_2/kernel', P + 'stage_3_block_2_layer_scale/gamma',
          P + 'head_layernorm/scale'} <= top
  assert not any('stage_2_' in n or 'downsampling_conv_1' in n for n in top)


def test_backbone_contract_and_minimum_input():
  record = convnext.BACKBONES[0]
  backbone.check(record)
  assert record.name == NAME and not record.has_batch_norm
  assert record.default_input_size == (224, 224) and record.gradcam_layer == 'stage_3_output'
  config = record.default_config()
  assert 'batch_norm' not in config
  size = record.min_input_size(config)
  assert size == 32
  model = record.build(config, 2, jnp.float32)
  rgb = jnp.zeros((2, size, size, 3))
  variables = jax.eval_shape(model.init, jax.random.key(0), rgb)
  assert jax.eval_shape(model.apply, variables, rgb).shape == (2, 2)
  assert jax.eval_shape(functools.partial(model.apply, features_only=True),
                        variables, rgb).shape == (2, 768)


def test_validate_config_refuses_bad_pooling_and_rates():
  class Bad(Exception):
    pass

  for key, value in (('pooling', 'sum'), ('head_dropout', 1.0), ('drop_path_rate', -0.1)):
    full = ml_collections.ConfigDict({'model': convnext.default_config(NAME)})
    full.model[key] = value
    with pytest.raises(Bad, match=key):
      convnext.validate_config(full, Bad)
  convnext.validate_config(ml_collections.ConfigDict({'model': convnext.default_config(NAME)}),
                           Bad)


def test_keras_files_are_the_official_ones():
  url, digest = convnext.KERAS_FILES[(NAME, False)]
  assert url.endswith('/convnext/convnext_tiny_notop.h5') and len(digest) == 64
  assert convnext.KERAS_FILES[(NAME, True)][0].endswith('/convnext/convnext_tiny.h5')
