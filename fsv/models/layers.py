"""Layers shared by several models."""
from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax.numpy as jnp

from fsv.models import conv3x3


def max_pool_2x2(x: jnp.ndarray) -> jnp.ndarray:
  """Keras MaxPooling2D(2) ('valid': an odd last row/column is dropped).

  Written as reshape + max rather than `nn.max_pool`: XLA's CPU backend
  differentiates reduce_window through select-and-scatter, which made the
  small convnet's training step 35% slower here; the max's gradient is
  elementwise.
  """
  n, h, w, c = x.shape
  x = x[:, :h // 2 * 2, :w // 2 * 2]
  return x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


class DepthwiseConv(nn.Module):
  """A depthwise convolution with TF/lax 'SAME' padding (and a bias if asked); the kernel
  is (k, k, 1, channels), as `nn.Conv(feature_group_count=channels)` holds it.

  Computed as k*k shifted multiply-adds rather than a grouped convolution:
  XLA's CPU backend runs grouped convolutions 4-20x slower forward and 6-15x
  slower backward than this, at EfficientNet-Lite's shapes (batch 32).
  """
  kernel_size: int
  stride: int = 1
  use_bias: bool = False
  dtype: Any = jnp.float32  # of the computation; the kernel is stored in float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    k = self.kernel_size
    kernel = self.param('kernel', nn.initializers.lecun_normal(), (k, k, 1, x.shape[-1]))
    x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
    out = depthwise_same(x, kernel, self.stride)
    if self.use_bias:
      out = out + self.param('bias', nn.initializers.zeros, (x.shape[-1],)).astype(self.dtype)
    return out


class Conv3x3(nn.Module):
  """nn.Conv(features, (3, 3), padding=padding), 'VALID' or 'SAME', with its
  parameters, computed by `algorithm` ('xla' or 'winograd';
  fsv/models/conv3x3.py): Winograd where it pays, XLA's convolution elsewhere."""
  features: int
  padding: str
  algorithm: str = 'xla'
  kernel_init: Callable = nn.initializers.lecun_normal()  # nn.Conv's
  dtype: Any = jnp.float32  # of the computation; parameters are float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    kernel = self.param('kernel', self.kernel_init, (3, 3, x.shape[-1], self.features))
    bias = self.param('bias', nn.initializers.zeros, (self.features,))
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    if conv3x3.winograd_pays(self.algorithm, x.shape, self.features):
      if self.padding == 'SAME':
        x = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
      return conv3x3.valid_winograd(x, kernel) + bias
    if self.padding == 'SAME':
      return conv3x3.same_xla(x, kernel) + bias
    return conv3x3.valid_xla(x, kernel) + bias


class Tap(nn.Module):
  """The identity, named: marks the activations that Grad-CAM explains.

  It has no parameters, so placing one changes no parameter tree or
  checkpoint; fsv/explain.py finds it by name with `nn.intercept_methods`.
  """

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    return x


def depthwise_same(x: jnp.ndarray, kernel: jnp.ndarray, stride: int = 1) -> jnp.ndarray:
  """x (n, h, w, C) convolved channel by channel with kernel (k, k, 1, C), TF 'SAME'
  padding, as k*k shifted multiply-adds (what `DepthwiseConv` computes)."""
  k, s = kernel.shape[0], stride
  _, h, w, _ = x.shape
  out_h, out_w = -(-h // s), -(-w // s)
  pad_h, pad_w = max((out_h - 1) * s + k - h, 0), max((out_w - 1) * s + k - w, 0)
  # TF 'same': an odd total padding puts the extra row/column after.
  x = jnp.pad(x, ((0, 0), (pad_h // 2, pad_h - pad_h // 2),
                  (pad_w // 2, pad_w - pad_w // 2), (0, 0)))
  out = jnp.zeros(x.shape[:1] + (out_h, out_w) + x.shape[3:], x.dtype)
  for u in range(k):
    for v in range(k):
      window = x[:, u:u + (out_h - 1) * s + 1:s, v:v + (out_w - 1) * s + 1:s]
      out = out + window * kernel[u, v, 0]
  return out


class SeparableConv(nn.Module):
  """Keras's SeparableConv2D (depth_multiplier 1, 'same' padding): a depthwise
  convolution, then a 1x1 convolution to `features` channels, then the bias if asked.

  Leaves `depthwise_kernel` (k, k, 1, C) and `pointwise_kernel` (1, 1, C, features)
  (and `bias`), fsv/pretrained/keras_layers.py's names for Keras's arrays. The
  depthwise part is `depthwise_same`, not a grouped convolution (see
  `DepthwiseConv`); the pointwise part is a matrix product over channels.
  """
  features: int
  kernel_size: int
  stride: int = 1
  use_bias: bool = False
  dtype: Any = jnp.float32  # of the computation; the kernels are stored in float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    k, channels = self.kernel_size, x.shape[-1]
    depthwise = self.param('depthwise_kernel', nn.initializers.lecun_normal(),
                           (k, k, 1, channels))
    pointwise = self.param('pointwise_kernel', nn.initializers.lecun_normal(),
                           (1, 1, channels, self.features))
    x = depthwise_same(x.astype(self.dtype), depthwise.astype(self.dtype), self.stride)
    out = x @ pointwise[0, 0].astype(self.dtype)
    if self.use_bias:
      out = out + self.param('bias', nn.initializers.zeros,
                             (self.features,)).astype(self.dtype)
    return out


class Head(nn.Module):
  """Dropout and logits on globally pooled features: the transfer head of the
  backbones whose ImageNet top is one dense layer on pooled features."""
  num_outputs: int = 1
  dropout: float = 0.2
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, features: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    x = nn.Dropout(self.dropout, deterministic=not train)(features)
    return nn.Dense(self.num_outputs, dtype=self.dtype, name='logits')(x)


def head_of(model: nn.Module) -> Head:
  """The `Head` of a model with fields num_outputs, head_dropout and dtype, as a
  module of its own (for the `head` parameters, trained on cached features)."""
  return Head(model.num_outputs, model.head_dropout, model.dtype, parent=None)


POOLINGS = ('avg', 'max')


def global_pool(x: jnp.ndarray, pooling: str) -> jnp.ndarray:
  """(n, h, w, C) -> (n, C): Keras's GlobalAveragePooling2D or GlobalMaxPooling2D."""
  return x.mean(axis=(1, 2)) if pooling == 'avg' else x.max(axis=(1, 2))


def validate_head_config(full_config, error) -> None:
  """Checks the keys of a backbone with a global pooling and a `Head`."""
  config = full_config.model
  if config.pooling not in POOLINGS:
    raise error(f'config.model.pooling={config.pooling!r}: must be one of {POOLINGS}')
  if not 0 <= config.head_dropout < 1:
    raise error(f'config.model.head_dropout={config.head_dropout}: must be in [0, 1)')


def batch_norm(model: nn.Module, x: jnp.ndarray, name: str, train: bool, momentum: float,
               epsilon: float) -> jnp.ndarray:
  """Keras's BatchNormalization `name`, inside `model`'s compact method, frozen
  as fsv freezes it: batch statistics (and updates of the running ones) only
  in training steps and only in the layers `model.batch_norm_training` names;
  every other call normalises with the running statistics (Keras's
  trainable=False). Activations in `model.dtype`."""
  return nn.BatchNorm(use_running_average=not (train and name in model.batch_norm_training),
                      momentum=momentum, epsilon=epsilon, dtype=model.dtype, name=name)(x)
