"""Weights of the keras.applications ports from Keras files: the one loader
(fsv/pretrained/keras_applications.py) behind `model.weights=PATH`,
`weights='imagenet'` (download, hash, cache) and `fetch --source=PATH`.

The conversion itself is proved against Keras's own models in each port's
parity test (tests/test_resnet.py, ...); here the files are written with
h5py in Keras 3's `.weights.h5` layout from random arrays shaped as the
module's variables, so nothing is compiled."""
import hashlib

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fsv import models
from fsv.models import keras_weights
from fsv.models import mobilenet_v2
from fsv.models import resnet
from fsv.pretrained import __main__ as fetch_command
from fsv.pretrained import keras_applications
from fsv.pretrained import keras_layers
from fsv.pretrained.layout import WeightsError


def _shapes(name, include_top):
  model = models.get(name).build(models.default_config(name), 1000 if include_top else 2,
                                 jnp.float32, include_top=include_top)
  return jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))


def _random_layers(shapes, seed=0):
  """{layer: arrays in Keras's order} for every layer of `shapes` but the head."""
  rng = np.random.default_rng(seed)
  layers = {}
  for collection, order in (('params', keras_layers.PARAM_ORDER),
                            ('batch_stats', keras_layers.STATS_ORDER)):
    for layer, leaves in shapes.get(collection, {}).items():
      if layer != 'head':
        layers.setdefault(layer, []).extend(
            rng.normal(size=leaves[leaf].shape).astype(np.float32)
            for leaf in order if leaf in leaves)
  return {layer: tuple(arrays) for layer, arrays in layers.items()}


def _write_keras3(path, layers):
  """A Keras 3 `.weights.h5`: layers/<class key>/vars/0, 1, ... named by attribute."""
  with h5py.File(path, 'w') as f:
    for i, (name, arrays) in enumerate(layers.items()):
      group = f.create_group(f'layers/layer_{i}/vars')
      group.attrs['name'] = name
      for j, array in enumerate(arrays):
        group[str(j)] = array
  return path


def _assert_loaded(variables, layers):
  for layer, arrays in layers.items():
    loaded = [v for collection in ('params', 'batch_stats')
              for v in _in_keras_order(variables.get(collection, {}).get(layer, {}),
                                       collection)]
    assert len(loaded) == len(arrays), layer
    for got, want in zip(loaded, arrays):
      np.testing.assert_array_equal(got, want)


def _in_keras_order(leaves, collection):
  order = keras_layers.PARAM_ORDER if collection == 'params' else keras_layers.STATS_ORDER
  return [leaves[leaf] for leaf in order if leaf in leaves]


def test_a_users_keras_file_loads_with_model_weights(tmp_path):
  shapes = _shapes('resnet50', False)
  layers = _random_layers(shapes)
  config = models.default_config('resnet50')
  config.weights = str(_write_keras3(tmp_path / 'mine.weights.h5', layers))
  variables = models.get('resnet50').weights.load(config, shapes)
  _assert_loaded(variables, layers)
  assert variables['params']['head'] is shapes['params']['head']  # fsv's head is kept


def test_a_file_of_another_architecture_is_refused_naming_the_layers(tmp_path):
  layers = _random_layers(_shapes('resnet50', False))
  del layers['conv5_block3_3_conv']
  layers['conv1_conv'] = layers['conv1_conv'][:1]
  config = models.default_config('resnet50')
  config.weights = str(_write_keras3(tmp_path / 'other.weights.h5', layers))
  with pytest.raises(WeightsError, match=r'other.weights.h5: does not fit the model: it lacks '
                     r'1 layers of the model: conv5_block3_3_conv; conv1_conv has 1 arrays'):
    models.get('resnet50').weights.load(config, _shapes('resnet50', False))


def test_imagenet_downloads_checks_the_hash_and_caches(tmp_path):
  shapes = _shapes('resnet50', False)
  layers = _random_layers(shapes)
  served = _write_keras3(tmp_path / 'served_notop.h5', layers)
  digest = hashlib.md5(served.read_bytes()).hexdigest()
  port = keras_weights.Port('resnet50', {False: (served.as_uri(), digest),
                                         True: (served.as_uri(), '0' * 32)})
  cache = str(tmp_path / 'cache')
  assert not keras_applications.in_cache(port, False, cache)
  _assert_loaded(keras_applications.load(port, 'imagenet', shapes, False, cache), layers)
  assert keras_applications.in_cache(port, False, cache)
  served.unlink()  # from the cache now, without the network
  _assert_loaded(keras_applications.load(port, 'imagenet', shapes, False, cache), layers)

  altered = keras_weights.Port('resnet50', {False: (port.files[False][0], 'f' * 64),
                                            True: port.files[True]})
  _write_keras3(served, layers)
  with pytest.raises(WeightsError, match=r'sha256 [0-9a-f]{64}, expected f{64} \(a truncated '
                     r'or altered download\); nothing was kept'):
    keras_applications.fetch(altered, 'keras', False, str(tmp_path / 'other_cache'))
  assert not keras_applications.in_cache(altered, False, str(tmp_path / 'other_cache'))


def test_fetch_from_a_file_refuses_one_that_is_not_official(tmp_path, capsys):
  path = _write_keras3(tmp_path / 'fine_tuned.h5', _random_layers(_shapes('resnet50', False)))
  code = fetch_command.main(['fetch', 'resnet50', f'--source={path}',
                             f'--cache_dir={tmp_path / "cache"}'])
  error = capsys.readouterr().err
  assert code == 1 and error.count('\n') == 1
  assert 'is not that of an official resnet50 ImageNet file' in error
  assert f"model.weights='{path}'" in error
  assert resnet.KERAS_FILES['resnet50', False][1] in error


def test_fetch_of_a_file_keras_pins_no_hash_for_then_top5_reads_it(tmp_path, capsys):
  # Keras gives no hash for MobileNetV2's files: the top's layer tells them apart.
  assert all(h is None for _, h in mobilenet_v2.port('mobilenet_v2').files.values())
  layers = _random_layers(_shapes('mobilenet_v2', True))
  path = _write_keras3(tmp_path / 'mobilenet_v2_1.0_224.h5', layers)
  cache = str(tmp_path / 'cache')
  assert fetch_command.main(['fetch', 'mobilenet_v2', f'--source={path}',
                             f'--cache_dir={cache}']) == 0
  assert 'mobilenet_v2 ImageNet weights with top' in capsys.readouterr().out
  module, variables, size = models.imagenet_model('mobilenet_v2', cache)
  assert size == (224, 224)
  _assert_loaded(variables, layers)
  # The entry with the top also serves a transfer model's base.
  config = models.default_config('mobilenet_v2')
  config.cache_dir = cache
  assert models.get('mobilenet_v2').weights.in_cache(config)
  base = models.get('mobilenet_v2').weights.load(config, _shapes('mobilenet_v2', False))
  np.testing.assert_array_equal(base['params']['Conv1']['kernel'], layers['Conv1'][0])


def test_imagenet_model_reads_a_users_file_with_the_top(tmp_path):
  layers = _random_layers(_shapes('resnet50', True), seed=3)
  path = _write_keras3(tmp_path / 'mine_top.weights.h5', layers)
  module, variables, _ = models.imagenet_model('resnet50', weights=str(path))
  assert module.include_top
  _assert_loaded(variables, layers)
