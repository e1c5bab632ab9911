"""Mixed precision: bfloat16 activations over float32 parameters and optimizer
state, float32 logits and losses, and float16's dynamic loss scaling."""
import jax
import jax.extend
import jax.numpy as jnp
import numpy as np

import fsv
from fsv import augment
from fsv import checkpoint as checkpoint_lib
from fsv import models
from fsv import partition
from fsv import precision
from fsv import steps
from fsv.models import vgg

from test_train import _config, _tiny_dataset


def _step_setup(dtype, loss_scale=None, **train):
  """A tiny convnet's jitted step, its state and one batch of 8; with
  `ema_decay` in `train`, the state keeps the moving average as a run's does."""
  config = fsv.validate_config(_config(**train))
  data = _tiny_dataset()
  model = models.build(config.model, 2, dtype)
  params = models.init_variables(config.model, model, jax.random.PRNGKey(0),
                                 data.splits['train'].images.shape[1:])['params']
  tx = partition.optimizer(config.train, params, 3)
  ema_decay = config.train.ema_decay
  state = steps.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                           opt_state=tx.init(params), loss_scale=loss_scale,
                           ema=jax.tree_util.tree_map(jnp.copy, params) if ema_decay else None)
  step = steps.make_train_step(model, tx, augment.AugmentConfig(rescale=1 / 255),
                               ema_decay=ema_decay)
  rows = slice(0, 8)
  batch = (data.splits['train'].images[rows], data.splits['train'].labels[rows],
           jax.random.PRNGKey(1))
  return model, step, state, batch


def _dtypes(jaxpr, primitive):
  """Output dtypes of every `primitive` equation, nested jaxprs included."""
  found = []
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == primitive:
      found += [v.aval.dtype for v in eqn.outvars]
    for sub in jax.extend.core.jaxprs_in_params(eqn.params):
      found += _dtypes(sub, primitive)
  return found


def test_bfloat16_computes_activations_in_bfloat16_and_keeps_float32_state():
  model, step, state, batch = _step_setup('bfloat16')
  images = batch[0].astype(np.float32)
  jaxpr = jax.make_jaxpr(lambda p: model.apply({'params': p}, images))(state.params).jaxpr
  assert set(_dtypes(jaxpr, 'conv_general_dilated')) == {jnp.dtype(jnp.bfloat16)}
  assert set(_dtypes(jaxpr, 'dot_general')) == {jnp.dtype(jnp.bfloat16)}

  state, metrics = step(state, *batch)
  kinds = {leaf.dtype for leaf in jax.tree_util.tree_leaves((state.params, state.opt_state))
           if jnp.issubdtype(leaf.dtype, jnp.floating)}
  assert kinds == {jnp.dtype(jnp.float32)}  # RMSprop's moments: float32 like the params
  assert metrics['loss'].dtype == jnp.float32


def test_vgg_preprocesses_in_float32_before_the_bfloat16_convs():
  model = vgg.VGGClassifier(head_units=4, dtype=jnp.bfloat16)
  images = jnp.full((1, 32, 32, 3), 200.0)
  params = jax.eval_shape(model.init, jax.random.PRNGKey(0), images)['params']
  jaxpr = jax.make_jaxpr(lambda p: model.apply({'params': p}, images))(params).jaxpr
  # The means are subtracted before the first cast to bfloat16.
  first_sub = next(e for e in jaxpr.eqns if e.primitive.name == 'sub')
  assert first_sub.outvars[0].aval.dtype == jnp.float32
  np.testing.assert_allclose(vgg.caffe_preprocess(images.astype(jnp.bfloat16))[0, 0, 0],
                             np.array([200.0, 200.0, 200.0]) - vgg.CAFFE_BGR_MEAN,
                             rtol=1e-6)


def test_efficientnet_computes_in_bfloat16_with_float32_batch_norm_statistics():
  config = models.default_config('efficientnet_lite0')
  model = models.build(config, 2, 'bfloat16').clone(batch_norm_training=('top_bn',))
  images = jnp.full((2, 32, 32, 3), 200.0)
  variables = models.random_variables(model, jax.random.PRNGKey(0), images.shape[1:])
  jaxpr = jax.make_jaxpr(lambda v: model.apply(v, images))(variables).jaxpr
  assert set(_dtypes(jaxpr, 'conv_general_dilated')) == {jnp.dtype(jnp.bfloat16)}
  assert set(_dtypes(jaxpr, 'mul')) >= {jnp.dtype(jnp.bfloat16)}  # depthwise multiply-adds
  logits, updated = model.apply(variables, images, train=True, mutable=['batch_stats'],
                                rngs={'dropout': jax.random.PRNGKey(1)})
  assert np.isfinite(np.asarray(logits, np.float32)).all()
  assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(updated)} == {jnp.dtype(jnp.float32)}


def test_bfloat16_training_learns_as_float32_does():
  data = _tiny_dataset()
  runs = {dtype: fsv.fit(dict(_config(epochs=4).to_dict(), dtype=dtype), dataset=data)
          for dtype in ('float32', 'bfloat16')}
  for run in runs.values():
    assert run.history[-1]['train_loss'] < run.history[0]['train_loss']
    assert run.results['test_accuracy'] >= 0.75
  losses = [[h['train_loss'] for h in run.history] for run in runs.values()]
  np.testing.assert_allclose(losses[1], losses[0], atol=0.05)
  assert jax.tree_util.tree_leaves(runs['bfloat16'].params)[0].dtype == jnp.float32


def test_bottleneck_features_of_another_dtype_are_cached_apart(tmp_path):
  images = np.random.default_rng(0).integers(0, 255, (2, 32, 32, 3), np.uint8)
  mesh = fsv.parallel.make_mesh()
  features = {}
  for dtype in ('float32', 'bfloat16'):
    model = vgg.VGGClassifier(head_units=4, dtype=jnp.dtype(dtype))
    variables = models.random_variables(model, jax.random.PRNGKey(0), images.shape[1:])
    base = {'params': {k: v for k, v in variables['params'].items() if k != 'head'}}
    features[dtype] = fsv.features.cached(model, variables, base, images, 2, mesh,
                                          str(tmp_path), 'features')
  assert len(list((tmp_path / 'features').glob('*.npy'))) == 2
  assert {f.dtype for f in features.values()} == {np.dtype(np.float32)}
  assert not np.array_equal(features['float32'], features['bfloat16'])


# --- Dynamic loss scaling ----------------------------------------------------


def test_loss_scale_halves_on_overflow_and_doubles_after_a_period():
  scale = precision.DynamicLossScale.create(2.0**4, period=3)
  ok, overflow = jnp.array(True), jnp.array(False)
  scale = scale.adjust(ok).adjust(ok)
  assert (float(scale.scale), int(scale.good_steps)) == (16.0, 2)
  scale = scale.adjust(overflow)
  assert (float(scale.scale), int(scale.good_steps)) == (8.0, 0)
  scale = scale.adjust(ok).adjust(ok).adjust(ok)
  assert (float(scale.scale), int(scale.good_steps)) == (16.0, 0)
  for _ in range(10):
    scale = scale.adjust(overflow)
  assert float(scale.scale) == 1.0


def test_only_float16_scales_its_loss():
  assert precision.loss_scale('float32') is None
  assert precision.loss_scale('bfloat16') is None
  assert float(precision.loss_scale('float16').scale) == 2.0**15


def test_scaled_step_equals_the_unscaled_step_when_nothing_overflows():
  # float32 activations: scaling by a power of two and back is exact.
  _, step, state, batch = _step_setup('float32')
  unscaled, unscaled_metrics = step(state, *batch)
  _, step, state, batch = _step_setup('float32', precision.DynamicLossScale.create())
  scaled, metrics = step(state, *batch)
  jax.tree_util.tree_map(np.testing.assert_array_equal,
                         (unscaled.params, unscaled.opt_state),
                         (scaled.params, scaled.opt_state))
  assert float(metrics['loss']) == float(unscaled_metrics['loss'])
  assert not metrics['skipped'] and int(scaled.loss_scale.good_steps) == 1


def test_overflowing_float16_step_is_skipped_and_halves_the_scale():
  _, step, state, batch = _step_setup('float16', precision.DynamicLossScale.create(2.0**60))
  before = jax.tree_util.tree_map(np.asarray, (state.params, state.opt_state))
  state, metrics = step(state, *batch)
  assert metrics['skipped'] and np.isfinite(float(metrics['loss']))
  jax.tree_util.tree_map(np.testing.assert_array_equal, before,
                         (state.params, state.opt_state))
  assert float(state.loss_scale.scale) == 2.0**59


def test_float16_run_skips_overflowing_steps_without_a_nonfinite_loss_error(
    tmp_path, monkeypatch):
  # Starting at 2**20 the first steps overflow: they are skipped, not errors.
  monkeypatch.setattr(precision, 'loss_scale', lambda dtype: (
      precision.DynamicLossScale.create(2.0**20, period=4) if dtype == 'float16' else None))
  config = dict(_config(epochs=4).to_dict(), dtype='float16')
  workdir = tmp_path / 'work'
  result = fsv.fit(config, dataset=_tiny_dataset(), workdir=str(workdir))
  assert result.history[0]['skipped_steps'] >= 1
  assert result.history[-1]['train_loss'] < result.history[0]['train_loss']
  scales = [h['loss_scale'] for h in result.history]
  assert scales[0] < 2.0**20 and scales[-1] > scales[1]  # halved, then grown again
  # The scale is checkpointed with the train state, so a resume continues it.
  checkpoints = checkpoint_lib.Checkpoints(str(workdir))
  state, _ = checkpoints.restore_latest(None)
  checkpoints.close()
  assert float(state['loss_scale']['scale']) == scales[-1]
