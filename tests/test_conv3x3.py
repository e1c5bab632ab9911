"""The 3x3 convolutions of training steps (the small convnet's, VGG's):
Winograd's and XLA's give the same numbers and gradients as
`lax.conv_general_dilated` and `nn.Conv`."""
import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax
import numpy as np
import pytest

from fsv import config as config_lib
from fsv import models
from fsv.errors import ConfigError
from fsv.models import conv3x3
from fsv.models import layers
from fsv.models import vgg


def _reference(x, kernel):
  return lax.conv_general_dilated(x, kernel, (1, 1), 'VALID',
                                  dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


def _loss(conv):
  return lambda x, kernel, target: jnp.sum(conv(x, kernel) * target)


# (batch, height, width, in channels, out channels): odd and even output
# sides, the smallest input, non-square maps.
SHAPES = [(1, 3, 3, 1, 1), (2, 5, 8, 3, 4), (2, 17, 17, 16, 8), (1, 10, 4, 2, 3)]


@pytest.mark.parametrize('conv', [conv3x3.valid_winograd, conv3x3.valid_xla])
@pytest.mark.parametrize('shape', SHAPES)
def test_equals_lax_valid_convolution_and_its_gradients(conv, shape):
  n, height, width, channels, features = shape
  keys = jax.random.split(jax.random.PRNGKey(sum(shape)), 3)
  x = jax.random.normal(keys[0], (n, height, width, channels))
  kernel = jax.random.normal(keys[1], (3, 3, channels, features))
  target = jax.random.normal(keys[2], (n, height - 2, width - 2, features))
  def outputs_and_gradients(conv):  # one compilation for both
    y, gradients = jax.vjp(conv, x, kernel)
    return y, gradients(target)

  y, grads = jax.jit(outputs_and_gradients, static_argnums=0)(conv)
  np.testing.assert_allclose(y, _reference(x, kernel), rtol=1e-5, atol=2e-5)
  expected = jax.grad(_loss(_reference), (0, 1))(x, kernel, target)
  for grad, want in zip(grads, expected):
    np.testing.assert_allclose(grad, want, rtol=1e-5, atol=1e-4)


def test_winograd_refuses_what_is_not_a_3x3_valid_convolution():
  with pytest.raises(ValueError, match='3x3 valid convolution'):
    conv3x3.valid_winograd(jnp.zeros((1, 2, 5, 3)), jnp.zeros((3, 3, 3, 4)))
  with pytest.raises(ValueError, match='3x3 valid convolution'):
    conv3x3.valid_winograd(jnp.zeros((1, 5, 5, 3)), jnp.zeros((3, 3, 4, 4)))


@pytest.mark.parametrize('algorithm', ['winograd', 'xla'])
@pytest.mark.parametrize('shape', [(2, 7, 9, 16, 32), (1, 6, 6, 3, 8)])
def test_same_convolution_equals_nn_conv_and_its_gradients(algorithm, shape):
  """VGG's convolutions: 'SAME' as nn.Conv (the last shape too narrow for Winograd)."""
  n, height, width, channels, features = shape
  x = jax.random.normal(jax.random.PRNGKey(sum(shape)), (n, height, width, channels))
  conv = layers.Conv3x3(features, 'SAME', algorithm)
  reference = nn.Conv(features, (3, 3), padding='SAME')
  params = conv.init(jax.random.PRNGKey(1), x)
  assert jax.tree.map(jnp.shape, params) == jax.tree.map(
      jnp.shape, reference.init(jax.random.PRNGKey(1), x))
  params = jax.tree.map(lambda p: p + 0.1, params)  # a bias that is not zero
  def outputs_and_gradients(module):
    y, gradients = jax.vjp(lambda p, x: module.apply(p, x), params, x)
    return y, gradients(jnp.cos(y))

  (y, grads), (want, expected) = (outputs_and_gradients(m) for m in (conv, reference))
  np.testing.assert_allclose(y, want, rtol=1e-5, atol=2e-5)
  jax.tree.map(lambda grad, want: np.testing.assert_allclose(grad, want, rtol=1e-5, atol=1e-4),
               grads, expected)


def test_winograd_only_where_it_pays():
  assert conv3x3.winograd_pays('winograd', (32, 75, 75, 64), 128)  # VGG16's block2
  assert not conv3x3.winograd_pays('winograd', (32, 150, 150, 64), 64)  # block1: large maps
  assert not conv3x3.winograd_pays('winograd', (32, 148, 148, 3), 32)  # narrow
  assert not conv3x3.winograd_pays('xla', (32, 17, 17, 128), 128)


@pytest.mark.parametrize('name', ['small_convnet', 'vgg16'])
def test_auto_is_winograd_for_float32_on_cpu_and_xla_otherwise(name):
  if jax.default_backend() != 'cpu':
    pytest.skip('the rule for CPU')
  assert conv3x3.resolve('auto', jnp.dtype('float32')) == 'winograd'
  assert conv3x3.resolve('auto', jnp.dtype('bfloat16')) == 'xla'
  assert conv3x3.resolve('xla', jnp.dtype('float32')) == 'xla'
  config = config_lib.base(name)
  config.data.source = 'synthetic'
  config = config_lib.validate(config)
  assert models.build(config.model, 2).conv_algorithm == 'winograd'
  config.model.conv_algorithm = 'xla'
  assert models.build(config.model, 2).conv_algorithm == 'xla'


def test_inference_runs_xla_whatever_trains():
  winograd = models.SmallConvNet(num_outputs=1, conv_algorithm='winograd')
  images = jnp.zeros((1, 48, 48, 3))
  params = models.random_variables(winograd, jax.random.PRNGKey(0), images.shape[1:])
  assert 'conv_general_dilated' in str(jax.make_jaxpr(winograd.apply)(params, images))
  trained = str(jax.make_jaxpr(lambda p: winograd.apply(p, images, train=True,
                                                        rngs={'dropout': jax.random.PRNGKey(1)}))(params))
  assert 'custom_vjp' in trained and trained.count('conv_general_dilated') == 1  # conv1


def test_vgg_trains_by_winograd_and_infers_by_nn_conv():
  """Inference, the bottleneck features and their cache key are nn.Conv's
  computation whichever algorithm trains."""
  images = jnp.zeros((1, 32, 32, 3))
  by = {algorithm: vgg.VGGClassifier(conv_algorithm=algorithm) for algorithm in ('xla', 'winograd')}
  variables = models.random_variables(by['xla'], jax.random.PRNGKey(0), images.shape[1:])
  def jaxpr(model, **kwargs):
    return str(jax.make_jaxpr(lambda v: model.apply(
        v, images, rngs={'dropout': jax.random.PRNGKey(1)}, **kwargs))(variables))

  for kwargs in ({}, {'features_only': True}):
    assert jaxpr(by['winograd'], **kwargs) == jaxpr(by['xla'], **kwargs)
  trained = jaxpr(by['winograd'], train=True)
  assert trained.count('custom_vjp') == 12  # every conv but the 3-channel first
  assert 'custom_vjp' not in jaxpr(by['xla'], train=True)


@pytest.mark.parametrize('name', ['small_convnet', 'vgg16'])
def test_unknown_algorithm_is_refused_by_validate(name):
  config = config_lib.base(name)
  config.data.source = 'synthetic'
  config.model.conv_algorithm = 'fft'
  with pytest.raises(ConfigError, match='conv_algorithm'):
    config_lib.validate(config)


def test_the_models_training_gradients_agree_across_algorithms():
  size = 48  # the smallest even size the four convs and poolings leave a pixel of
  images = np.random.default_rng(0).uniform(size=(4, size, size, 3)).astype(np.float32)
  labels = jnp.array([0.0, 1.0, 1.0, 0.0])
  xla, winograd = (models.SmallConvNet(num_outputs=1, conv_algorithm=algorithm,
                                       flatten_dropout=0.0)  # train=True without dropout
                   for algorithm in ('xla', 'winograd'))
  params = models.random_variables(xla, jax.random.PRNGKey(0), images.shape[1:])['params']

  def loss(model):
    def of(params):
      logits = model.apply({'params': params}, images, train=True)[:, 0]
      return jnp.mean(jnp.logaddexp(0.0, logits) - labels * logits)
    return jax.jit(jax.value_and_grad(of))

  (want, expected), (got, grads) = loss(xla)(params), loss(winograd)(params)
  np.testing.assert_allclose(got, want, rtol=1e-6)
  assert jax.tree.structure(grads) == jax.tree.structure(expected)
  jax.tree.map(lambda grad, want: np.testing.assert_allclose(grad, want, rtol=1e-4, atol=1e-6),
               grads, expected)
