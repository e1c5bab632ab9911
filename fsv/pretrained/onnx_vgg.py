"""The conv base of a VGG exported to ONNX (e.g. by tf2onnx from Keras).

The Conv nodes, in graph order, are the conv layers in network order; their
OIHW weights become HWIO kernels. Only the conv base is read: heads differ
from model to model. The input channels are taken as they are, so the file
must come from a Keras VGG (BGR, caffe preprocessing), which the ImageNet
digest checks for the ImageNet weights.
"""
from __future__ import annotations

from typing import BinaryIO, Sequence, Union

from google.protobuf.message import DecodeError
import numpy as np
import onnx
from onnx import numpy_helper

from fsv.pretrained.layout import WeightsError

# ONNX Conv weights are (out, in, h, w); Flax's kernels are (h, w, in, out).
OIHW_TO_HWIO = (2, 3, 1, 0)


def read(source: Union[str, BinaryIO], conv_names: Sequence[str], label: str
         ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """conv layer name -> (HWIO kernel, bias); `label` names the file in errors."""
  try:
    model = onnx.load(source)
  except (OSError, DecodeError, ValueError) as e:
    raise WeightsError(f'{label}: not a readable ONNX model ({e})') from None
  graph = model.graph
  constants = {t.name: t for t in graph.initializer}
  constants.update({node.output[0]: attr.t for node in graph.node
                    if node.op_type == 'Constant' for attr in node.attribute
                    if attr.name == 'value'})
  convs = [node for node in graph.node if node.op_type == 'Conv']
  if len(convs) != len(conv_names):
    raise WeightsError(f'{label}: {len(convs)} Conv nodes; a VGG with these conv '
                       f'layers has {len(conv_names)} ({conv_names[0]} ... {conv_names[-1]})')
  return {name: _conv(node, name, constants, label) for name, node in zip(conv_names, convs)}


def _conv(node: onnx.NodeProto, name: str, constants: dict, label: str
          ) -> tuple[np.ndarray, np.ndarray]:
  where = f'{label}: Conv node {node.name!r} (as {name})'
  attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
  same = (list(attrs.get('pads', [])) == [1, 1, 1, 1]
          or attrs.get('auto_pad', b'') in (b'SAME_UPPER', b'SAME_LOWER'))
  plain = (all(s == 1 for s in attrs.get('strides', [1]))
           and all(d == 1 for d in attrs.get('dilations', [1])) and attrs.get('group', 1) == 1)
  if not (same and plain):
    raise WeightsError(f'{where}: {attrs}; VGG convolutions have stride 1, no dilation, '
                       "one group and 'same' padding")
  if len(node.input) < 3 or not all(i in constants for i in node.input[1:3]):
    raise WeightsError(f'{where}: weight and bias must both be constant initializers')
  weight, bias = (numpy_helper.to_array(constants[i]) for i in node.input[1:3])
  if weight.ndim != 4:
    raise WeightsError(f'{where}: weight of shape {weight.shape}, expected 4-D (OIHW)')
  return weight.transpose(OIHW_TO_HWIO), bias
