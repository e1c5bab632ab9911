"""The small convnet's published variants, heads and input-size limits."""
import os

os.environ.setdefault('KERAS_BACKEND', 'jax')  # Keras as a reference needs no TensorFlow

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fsv import config as config_lib
from fsv import models
from fsv.models import layers
from fsv.models import small_convnet


def _param_shapes(model, size):
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, size, size, 3)))['params']
  return {k: (v['kernel'].shape, v['bias'].shape) for k, v in params.items()}


def test_book_variant_matches_keras_summary():
  # Deep Learning with Python, listing 5.5: 3,453,121 parameters.
  shapes = _param_shapes(models.SmallConvNet(num_outputs=1), 150)
  assert shapes['conv1'][0] == (3, 3, 3, 32)
  assert shapes['conv4'][0] == (3, 3, 128, 128)
  assert shapes['dense'][0] == (7 * 7 * 128, 512)
  assert shapes['logits'][0] == (512, 1)
  count = sum(np.prod(k) + np.prod(b) for k, b in shapes.values())
  assert count == 3_453_121


@pytest.mark.parametrize('conv_algorithm', ['xla', 'winograd'])
def test_book_variant_computes_what_keras_computes(conv_algorithm):
  # fsv computes Keras' 'valid' convs as cropped 'same' ones or (training
  # steps) by Winograd's algorithm, for speed.
  keras = pytest.importorskip('keras')
  size = 64
  reference = keras.Sequential([keras.Input((size, size, 3))] + [
      layer for features in (32, 64, 128, 128) for layer in (
          keras.layers.Conv2D(features, 3, activation='relu'), keras.layers.MaxPooling2D(2))
  ] + [keras.layers.Flatten(), keras.layers.Dense(512, activation='relu'),
       keras.layers.Dense(1)])
  model = models.SmallConvNet(num_outputs=1, conv_algorithm=conv_algorithm,
                              flatten_dropout=0.0)
  names = ['conv1', 'conv2', 'conv3', 'conv4', 'dense', 'logits']
  weighted = [layer for layer in reference.layers if layer.weights]
  params = {name: {'kernel': np.asarray(layer.kernel), 'bias': np.asarray(layer.bias)}
            for name, layer in zip(names, weighted)}
  images = np.random.default_rng(0).normal(size=(2, size, size, 3)).astype(np.float32)
  np.testing.assert_allclose(model.apply({'params': params}, images, train=True),
                             np.asarray(reference(images)), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('make_key', [jax.random.PRNGKey, jax.random.key])
def test_random_variables_are_model_init_bit_for_bit(make_key):
  # fsv draws them at rank 1 (they compile faster); the numbers must stay flax's.
  model = models.SmallConvNet(num_outputs=1)
  drawn = models.random_variables(model, make_key(7), (64, 64, 3))
  expected = model.init(make_key(7), jnp.zeros((1, 64, 64, 3)))
  assert jax.tree_util.tree_structure(drawn) == jax.tree_util.tree_structure(expected)
  for a, b in zip(jax.tree_util.tree_leaves(drawn), jax.tree_util.tree_leaves(expected)):
    np.testing.assert_array_equal(a, b)


def test_blog_variant():
  model = models.SmallConvNet(num_outputs=1, **small_convnet.BLOG)
  shapes = _param_shapes(model, 150)
  assert [shapes[f'conv{i}'][0][-1] for i in (1, 2, 3)] == [32, 32, 64]
  assert shapes['dense'][0] == (17 * 17 * 64, 64)


def test_max_pool_matches_flax_max_pool_on_odd_sizes():
  import flax.linen as nn
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 7, 9, 3))
  np.testing.assert_array_equal(layers.max_pool_2x2(x),
                                nn.max_pool(x, (2, 2), strides=(2, 2)))


@pytest.mark.parametrize('num_classes,outputs', [(2, 1), (3, 3), (10, 10)])
def test_head_size(num_classes, outputs):
  config = config_lib.base().model
  config.conv_features = (4, 4)
  model = models.build(config, num_classes)
  y = model.apply(model.init(jax.random.PRNGKey(0), jnp.zeros((1, 20, 20, 3))),
                  jnp.zeros((5, 20, 20, 3)))
  assert y.shape == (5, outputs)


def test_dropout_only_in_training():
  model = models.SmallConvNet(conv_features=(4,), dense_units=8, flatten_dropout=0.5)
  x = jnp.ones((2, 10, 10, 3))
  variables = model.init(jax.random.PRNGKey(0), x)
  np.testing.assert_array_equal(model.apply(variables, x), model.apply(variables, x))
  a = model.apply(variables, x, train=True, rngs={'dropout': jax.random.PRNGKey(1)})
  b = model.apply(variables, x, train=True, rngs={'dropout': jax.random.PRNGKey(2)})
  assert not np.allclose(a, b)


@pytest.mark.parametrize('features,size', [((32, 64, 128, 128), 46), ((32, 32, 64), 22)])
def test_min_input_size_is_the_smallest_that_works(features, size):
  config = config_lib.base().model
  config.conv_features = features
  assert models.min_input_size(config) == size
  model = models.build(config, 2)
  model.init(jax.random.PRNGKey(0), jnp.zeros((1, size, size, 3)))
  with pytest.raises(Exception):
    model.init(jax.random.PRNGKey(0), jnp.zeros((1, size - 1, size - 1, 3)))
