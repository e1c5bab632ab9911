"""Keras's 3x3 'valid' convolution (stride 1, NHWC, HWIO kernels), two ways
that give the same numbers up to float rounding.

`valid_xla` is XLA's convolution. On CPU, XLA computes the kernel gradient as
a convolution whose window is the size of the output map, which is slow: in
the small convnet's training step it was the largest single cost
(BENCHMARKS.md). `valid_winograd` uses Winograd's minimal filtering F(2x2, 3x3)
(Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks", 2016):
the input is cut into overlapping 4x4 tiles, tiles and kernel are transformed
by small constant matrices, multiplied channel by channel in 16 batched
matrix products, and the products transformed back to 2x2 output tiles,
2.25 times fewer multiplications. Its kernel gradient is again tile
transforms and 16 matrix products (2-4x faster than XLA's on CPU); its input
gradient is XLA's, which is fast.

A 'same' convolution is a 'valid' one of the input padded by one pixel.

F(4x4, 3x3) (6x6 tiles) needs fewer multiplications still, but measured no
faster here (its transforms move more data), with ten times the rounding
error in the forward pass.
"""
from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
from jax import lax

# F(2x2, 3x3): input transform B^T, kernel transform G, output transform A^T,
# and the transposes the kernel gradient applies.
_INPUT = ((1, 0, -1, 0), (0, 1, 1, 0), (0, -1, 1, 0), (0, 1, 0, -1))
_KERNEL = ((1, 0, 0), (.5, .5, .5), (.5, -.5, .5), (0, 0, 1))
_OUTPUT = ((1, 1, 1, 0), (0, 1, -1, -1))
_KERNEL_T = tuple(zip(*_KERNEL))
_OUTPUT_T = tuple(zip(*_OUTPUT))
_TILE = 4  # input tile side
_STEP = 2  # output tile side, and the stride between input tiles


def _combine(matrix: Sequence[Sequence[float]],
             arrays: Sequence[jnp.ndarray]) -> list[jnp.ndarray]:
  """`matrix` @ `arrays` for a small constant matrix, written as sums and
  scalings that XLA fuses into one loop (a dot of length 3 or 4 would not be)."""
  rows = []
  for coefficients in matrix:
    total = None
    for c, array in zip(coefficients, arrays):
      if c:
        term = array if c == 1 else -array if c == -1 else array * c
        total = term if total is None else total + term
    rows.append(total)
  return rows


def _transform(matrix, grid: list[list[jnp.ndarray]]) -> list[list[jnp.ndarray]]:
  """`matrix` @ grid @ `matrix`^T, for a grid (list of rows) of arrays."""
  columns = [_combine(matrix, [row[j] for row in grid]) for j in range(len(grid[0]))]
  return [_combine(matrix, [column[i] for column in columns]) for i in range(len(matrix))]


# How training steps compute 3x3 convolutions, the same numbers up to float
# rounding: 'xla' (lax.conv), 'winograd' (`valid_winograd`, for the convs
# wide enough for it to pay, `winograd_pays`) or 'auto': 'winograd' for
# float32 on CPU, where the small convnet trains 1.6-2.9x and VGG16's
# fine-tuning 1.5-2.5x faster (BENCHMARKS.md), else 'xla'. What it speeds up
# is the kernel gradient, so inference (evaluation, prediction, features,
# Grad-CAM, export) always runs XLA's convolution, and exported models hold
# plain Conv ops.
CONV_ALGORITHMS = ('auto', 'xla', 'winograd')
# Winograd's matrix products are (tiles x in channels) by (in x out
# channels): for narrow convs they are too thin to beat XLA. Measured
# (BENCHMARKS.md, 74x74 maps, batch 32, forward and both gradients): 8 to 8,
# 8 to 16 and 16 to 16 channels 1.2-1.5x slower than XLA, 16 to 32 2.1x and
# 32 to 32 2.5x faster; the 3-channel first conv's kernel gradient 3x slower.
WINOGRAD_MIN_WIDTH = 16 * 32  # in channels x out channels
# Nor do large maps: in VGG16's fine-tuning step (batch 32, 150x150) Winograd
# on block1's 150x150 maps made the step slower (5.3 against 6.1 images/s)
# and its tiles raised peak memory from 3.7 to 6.1 GB; on block2's 75x75 and
# below it pays (BENCHMARKS.md).
WINOGRAD_MAX_PIXELS = 80 * 80  # of the input map


def resolve(requested: str, dtype: Any) -> str:
  """`requested` (one of CONV_ALGORITHMS) with 'auto' made concrete for the
  default backend and `dtype`."""
  if requested != 'auto':
    return requested
  return 'winograd' if jax.default_backend() == 'cpu' and dtype == jnp.float32 else 'xla'


def validate_config(config, error) -> None:
  """A model config's `conv_algorithm` is one of CONV_ALGORITHMS."""
  if config.conv_algorithm not in CONV_ALGORITHMS:
    raise error(f'config.model.conv_algorithm={config.conv_algorithm!r}: '
                f'must be one of {CONV_ALGORITHMS}')


def winograd_pays(algorithm: str, x_shape: Sequence[int], out_channels: int) -> bool:
  """Whether a 3x3 convolution of an (N, H, W, C) input runs by Winograd."""
  _, height, width, in_channels = x_shape
  return (algorithm == 'winograd' and in_channels * out_channels >= WINOGRAD_MIN_WIDTH
          and height * width <= WINOGRAD_MAX_PIXELS)


def same_xla(x: jnp.ndarray, kernel: jnp.ndarray) -> jnp.ndarray:
  """x (N, H, W, C) and kernel (3, 3, C, D) give (N, H, W, D)."""
  return lax.conv_general_dilated(x, kernel, (1, 1), 'SAME',
                                  dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


def valid_xla(x: jnp.ndarray, kernel: jnp.ndarray) -> jnp.ndarray:
  """x (N, H, W, C) and kernel (3, 3, C, D) give (N, H - 2, W - 2, D)."""
  # Computed as 'same' and cropped: XLA's CPU backend runs 'same'
  # convolutions and their gradients 1.5-3x faster than 'valid' ones, which
  # more than pays for the border's extra 5% of work (BENCHMARKS.md).
  return same_xla(x, kernel)[:, 1:-1, 1:-1]


def _tile_counts(x: jnp.ndarray) -> tuple[int, int]:
  """Tile rows and columns: an odd output side gets one more tile, cropped
  from the result."""
  return -(-(x.shape[1] - 2) // _STEP), -(-(x.shape[2] - 2) // _STEP)


def _stacked(grid: list[list[jnp.ndarray]]) -> jnp.ndarray:
  """A 4x4 grid of arrays (..., C) as one (16, everything else, C) array."""
  return jnp.stack([t for row in grid for t in row]).reshape(
      _TILE * _TILE, -1, grid[0][0].shape[-1])


def _transformed_tiles(x: jnp.ndarray) -> jnp.ndarray:
  """B^T d B of every 4x4 input tile d: (16, N * tiles, C)."""
  tiles_h, tiles_w = _tile_counts(x)
  x = jnp.pad(x, ((0, 0), (0, _STEP * tiles_h + 2 - x.shape[1]),
                  (0, _STEP * tiles_w + 2 - x.shape[2]), (0, 0)))
  # Pixel (i, j) of every tile at once: a strided view of the input.
  pixels = [[x[:, i:i + _STEP * tiles_h:_STEP, j:j + _STEP * tiles_w:_STEP]
             for j in range(_TILE)] for i in range(_TILE)]
  return _stacked(_transform(_INPUT, pixels))


@jax.custom_vjp
def valid_winograd(x: jnp.ndarray, kernel: jnp.ndarray) -> jnp.ndarray:
  """x (N, H, W, C) and kernel (3, 3, C, D) give (N, H - 2, W - 2, D); any H, W >= 3."""
  if x.ndim != 4 or min(x.shape[1:3]) < 3 or kernel.shape[:3] != (3, 3, x.shape[-1]):
    raise ValueError(f'valid_winograd: input {x.shape} and kernel {kernel.shape} do not '
                     'make a 3x3 valid convolution')
  n, height, width, _ = x.shape
  tiles_h, tiles_w = _tile_counts(x)
  kernels = _stacked(_transform(_KERNEL, [[kernel[i, j] for j in range(3)]
                                          for i in range(3)]))  # (16, C, D)
  products = lax.dot_general(_transformed_tiles(x), kernels,
                             (((2,), (1,)), ((0,), (0,))))
  products = products.reshape(_TILE, _TILE, n, tiles_h, tiles_w, -1)
  outputs = _transform(_OUTPUT, [[products[i, j] for j in range(_TILE)]
                                 for i in range(_TILE)])
  # (row in tile, column in tile, N, tile row, tile column, D) -> (N, H', W', D)
  y = jnp.stack([jnp.stack(row) for row in outputs])
  y = y.transpose(2, 3, 0, 4, 1, 5).reshape(n, _STEP * tiles_h, _STEP * tiles_w, -1)
  return y[:, :height - 2, :width - 2]


def _forward(x, kernel):
  # Only x and the kernel are kept: the transformed tiles, 4x the input's
  # size, are cheaper to compute again than to hold and read back.
  return valid_winograd(x, kernel), (x, kernel)


def _backward(residuals, dy):
  x, kernel = residuals
  tiles_h, tiles_w = _tile_counts(x)
  _, input_grad = jax.vjp(lambda x: valid_xla(x, kernel), x)
  padded = jnp.pad(dy, ((0, 0), (0, _STEP * tiles_h - dy.shape[1]),
                        (0, _STEP * tiles_w - dy.shape[2]), (0, 0)))
  # A dY A^T of every 2x2 output tile dY: the output transform's transpose.
  pixels = [[padded[:, i::_STEP, j::_STEP] for j in range(_STEP)] for i in range(_STEP)]
  products = lax.dot_general(_transformed_tiles(x), _stacked(_transform(_OUTPUT_T, pixels)),
                             (((1,), (1,)), ((0,), (0,))))  # (16, C, D)
  kernel_grad = _transform(_KERNEL_T, [[products[_TILE * i + j] for j in range(_TILE)]
                                       for i in range(_TILE)])
  return input_grad(dy)[0], jnp.stack([jnp.stack(row) for row in kernel_grad])


valid_winograd.defvjp(_forward, _backward)
