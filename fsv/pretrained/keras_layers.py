"""Keras layers' arrays into the variables of a Flax module that uses Keras's layer names.

The backbones ported from `keras.applications` (fsv/models/) name each
Flax submodule after its Keras layer, at the top level of the variable
tree, and name their leaves as Flax does. Keras stores each layer's arrays
in an order that matches this order of Flax leaf names:

  params:       kernel, depthwise_kernel, pointwise_kernel, scale, gamma, bias
  batch_stats:  mean, var

(Conv2D and Dense: kernel, bias; BatchNormalization: gamma, beta,
moving_mean, moving_variance -> scale, bias, mean, var; LayerNormalization:
gamma, beta -> scale, bias; SeparableConv2D: depthwise_kernel,
pointwise_kernel[, bias]; ConvNeXt's LayerScale: gamma.) So one rule
converts every layer: the module's initialised variables are the template,
each of its layers takes the file's arrays of the same name in that order,
and every shape is checked. A depthwise kernel that Keras holds as
(k, k, channels, 1) is transposed to the (k, k, 1, channels) of a Flax
grouped convolution.
"""
from __future__ import annotations

from typing import Collection, Mapping, Sequence

import numpy as np

from fsv.pretrained.layout import WeightsError

PARAM_ORDER = ('kernel', 'depthwise_kernel', 'pointwise_kernel', 'scale', 'gamma', 'bias')
STATS_ORDER = ('mean', 'var')
Layers = Mapping[str, Sequence[np.ndarray]]


def _leaves(template: Mapping, layer: str) -> list[tuple[str, str, tuple[int, ...]]]:
  """(collection, leaf name, shape) of a template layer, in Keras's order."""
  leaves = []
  for collection, order in (('params', PARAM_ORDER), ('batch_stats', STATS_ORDER)):
    own = template.get(collection, {}).get(layer, {})
    unknown = set(own) - set(order)
    if unknown:
      raise ValueError(f'{layer}: leaves {sorted(unknown)} have no Keras counterpart '
                       f'(known: {order})')
    leaves += [(collection, leaf, tuple(own[leaf].shape)) for leaf in order if leaf in own]
  return leaves


def _fit(array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray | None:
  if array.shape == shape:
    return array
  if (array.ndim == 4 and array.shape[3] == 1 and shape[2] == 1
      and array.shape[:2] + array.shape[2:][::-1] == shape):
    return array.transpose(0, 1, 3, 2)  # depthwise (k, k, C, 1) -> (k, k, 1, C)
  return None


def to_variables(layers: Layers, template: Mapping, origin: str,
                 keep: Collection[str] = ('head',)) -> dict:
  """The template's variables with every layer but `keep` taken from `layers`.

  Args:
    layers: Keras layer name -> its arrays in Keras's order (keras_h5.read).
    template: the module's initialised variables ('params' and maybe
      'batch_stats'), whose top-level names are Keras's layer names.
    origin: where `layers` came from, for the messages.
    keep: top-level names that keep the template's values (fsv's own head).

  Returns: {'params': ..., 'batch_stats': ...} (the template's collections),
  float32 numpy arrays.

  Raises:
    WeightsError naming every layer the file lacks or gets the shape of
    (all of them, so one message says what is wrong with the file). Layers
    of the file that the module lacks (a top the model does not include)
    are ignored.
  """
  names = [n for c in ('params', 'batch_stats') for n in template.get(c, {})]
  out = {c: dict(template[c]) for c in template}
  missing, wrong = [], []
  for layer in dict.fromkeys(names):
    if layer in keep:
      continue
    if layer not in layers:
      missing.append(layer)
      continue
    leaves, arrays = _leaves(template, layer), layers[layer]
    if len(arrays) != len(leaves):
      wrong.append(f'{layer} has {len(arrays)} arrays, the model {len(leaves)} '
                   f'({", ".join(leaf for _, leaf, _ in leaves)})')
      continue
    fitted = [_fit(np.asarray(a, np.float32), shape) for a, (_, _, shape) in zip(arrays, leaves)]
    if any(f is None for f in fitted):
      wrong.append(f'{layer} has shapes {[tuple(np.shape(a)) for a in arrays]}, the model '
                   f'{[shape for _, _, shape in leaves]}')
      continue
    for (collection, leaf, _), array in zip(leaves, fitted):
      out[collection][layer] = {**out[collection][layer], leaf: array}
  problems = ([f'it lacks {len(missing)} layers of the model: {", ".join(missing[:8])}'
               + (', ...' if len(missing) > 8 else '')] if missing else []) + wrong[:8]
  if problems:
    raise WeightsError(f'{origin}: does not fit the model: ' + '; '.join(problems))
  return out
