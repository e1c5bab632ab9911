"""PyTorch's legacy (pre-1.6, single-stream) `torch.save` files, read without
PyTorch and without unrestricted pickle.

The stream holds five pickles and then raw bytes:
  1. a magic number, 2. the protocol version (1001), 3. system info (byte
  order, type sizes), 4. the saved object, whose tensors refer to their
  storages through persistent ids, 5. the list of storage keys in the order
  the storages follow; then, for each storage, its element count (8 bytes,
  little endian) and its elements.
Unpickling can run any importable callable, so every pickle here goes
through `_Unpickler`, which knows only the few globals that rebuild a state
dict of tensors and maps them to numpy; anything else is a WeightsError
naming the global, before it is imported.
"""
from __future__ import annotations

import collections
import dataclasses
import io
import pickle
from typing import Any, BinaryIO

import numpy as np

from fsv.pretrained.layout import WeightsError

MAGIC_NUMBER = 0x1950a86a20f9469cfc6c
PROTOCOL_VERSION = 1001

# torch.<Name>Storage -> the numpy dtype of its elements (little endian).
STORAGE_DTYPES = {
    'FloatStorage': '<f4', 'DoubleStorage': '<f8', 'HalfStorage': '<f2',
    'LongStorage': '<i8', 'IntStorage': '<i4', 'ShortStorage': '<i2',
    'CharStorage': 'i1', 'ByteStorage': 'u1', 'BoolStorage': '?',
}


@dataclasses.dataclass(frozen=True)
class _StorageType:
  dtype: np.dtype


@dataclasses.dataclass(frozen=True)
class _Storage:
  key: str
  dtype: np.dtype
  size: int


@dataclasses.dataclass(frozen=True)
class _Tensor:
  """A tensor whose storage bytes come later in the stream."""
  storage: _Storage
  offset: int
  shape: tuple
  strides: tuple  # in elements


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
  del requires_grad, backward_hooks, metadata  # training bookkeeping, not data
  if not isinstance(storage, _Storage):
    raise WeightsError(f'a tensor refers to {storage!r}, not to a storage')
  return _Tensor(storage, int(storage_offset), tuple(size), tuple(stride))


class _Unpickler(pickle.Unpickler):
  """Unpickles only what a state dict of tensors needs."""

  def __init__(self, stream: BinaryIO, origin: str):
    super().__init__(stream)
    self._origin = origin
    self.storages: dict[str, _Storage] = {}

  def find_class(self, module: str, name: str) -> Any:
    if (module, name) == ('collections', 'OrderedDict'):
      return collections.OrderedDict
    if (module, name) == ('torch._utils', '_rebuild_tensor_v2'):
      return _rebuild_tensor_v2
    if module == 'torch' and name in STORAGE_DTYPES:
      return _StorageType(np.dtype(STORAGE_DTYPES[name]))
    raise WeightsError(f'{self._origin}: refused to unpickle the global {module}.{name} '
                       '(only tensors in a state dict are read)')

  def persistent_load(self, pid: Any) -> _Storage:
    # ('storage', type, key, device, element count, view): see the module docstring.
    if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == 'storage'
            and isinstance(pid[1], _StorageType) and isinstance(pid[4], int)):
      raise WeightsError(f'{self._origin}: unexpected persistent id {pid!r:.200}')
    _, storage_type, key, _, size, view = pid
    if view is not None:
      raise WeightsError(f'{self._origin}: storage views are not supported ({key})')
    return self.storages.setdefault(key, _Storage(str(key), storage_type.dtype, size))


def _load(unpickler: _Unpickler, origin: str, what: str) -> Any:
  try:
    return unpickler.load()
  except WeightsError:
    raise
  except Exception as e:  # a damaged stream fails in many ways inside pickle
    raise WeightsError(f'{origin}: cannot read the {what} ({type(e).__name__}: {e})') from None


def read_state_dict(data: bytes, origin: str) -> dict[str, np.ndarray]:
  """{name: array} of a legacy `torch.save(state_dict)` file's bytes."""
  stream = io.BytesIO(data)
  unpickler = lambda: _Unpickler(stream, origin)
  if _load(unpickler(), origin, 'magic number') != MAGIC_NUMBER:
    raise WeightsError(f'{origin}: not a legacy PyTorch file (wrong magic number); '
                       'files from PyTorch >= 1.6 are zip archives')
  version = _load(unpickler(), origin, 'protocol version')
  if version != PROTOCOL_VERSION:
    raise WeightsError(f'{origin}: protocol version {version!r}, expected {PROTOCOL_VERSION}')
  info = _load(unpickler(), origin, 'system info')
  if not isinstance(info, dict) or not info.get('little_endian'):
    raise WeightsError(f'{origin}: only little-endian files are supported ({info!r:.200})')
  objects = unpickler()
  state = _load(objects, origin, 'state dict')
  if not isinstance(state, dict) or not all(
      isinstance(k, str) and isinstance(v, _Tensor) for k, v in state.items()):
    raise WeightsError(f'{origin}: the saved object is not a state dict of tensors')
  keys = _load(unpickler(), origin, 'storage keys')
  if not isinstance(keys, list) or set(keys) != set(objects.storages):
    raise WeightsError(f'{origin}: the storage keys do not match the tensors')
  buffers = {}
  for key in keys:
    storage = objects.storages[key]
    header = stream.read(8)
    if len(header) == 8 and int.from_bytes(header, 'little') != storage.size:
      raise WeightsError(f'{origin}: storage {key} holds {int.from_bytes(header, "little")} '
                         f'elements, its tensors say {storage.size}')
    raw = stream.read(storage.size * storage.dtype.itemsize)
    if len(header) != 8 or len(raw) != storage.size * storage.dtype.itemsize:
      raise WeightsError(f'{origin}: truncated: storage {key} is incomplete')
    buffers[key] = np.frombuffer(raw, storage.dtype)
  return {name: _materialize(name, tensor, buffers[tensor.storage.key], origin)
          for name, tensor in state.items()}


def _materialize(name: str, tensor: _Tensor, buffer: np.ndarray, origin: str) -> np.ndarray:
  shape, strides = tensor.shape, tensor.strides
  if len(shape) != len(strides) or any(s < 0 for s in shape + strides):
    raise WeightsError(f'{origin}: {name} has shape {shape} with strides {strides}')
  last = tensor.offset + sum((n - 1) * s for n, s in zip(shape, strides))
  if tensor.offset < 0 or (all(shape) and last >= len(buffer)):
    raise WeightsError(f'{origin}: {name} reaches past the end of its storage')
  view = np.lib.stride_tricks.as_strided(
      buffer[tensor.offset:], shape, tuple(s * buffer.itemsize for s in strides),
      writeable=False)
  return np.array(view, dtype=buffer.dtype.newbyteorder('='))
