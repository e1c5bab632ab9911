"""PyTorch's side: the book's convnet as a PyTorch user writes it, eager
('torch') or through `torch.compile` ('torch-compile').

Rows 1, 2b and 3 only: the same model, RMSprop, loss, batches and
augmentation ranges (rows.AUGMENTATION) as bench/keras_side.py, in plain
torch (no torchvision). The augmentation is one batched affine warp
(`affine_grid` + `grid_sample`) with per-image random parameters. The
compiled side compiles the model and the warp in its setup or its untimed
warm-up, and a repetition reuses what they compiled.
"""
from __future__ import annotations

import math
import os
from typing import Callable

import numpy as np
from PIL import Image
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils import data as torch_data

from bench import rows

# The faster layout for eager torch: row 1's train step at 150x150, batch 32,
# on a 2-core Xeon (family 6, model 167; shared with other work), two runs
# of each alternating, 3x4 steps each: channels_last 22-27 images/s, NCHW 14-18.
LAYOUT = torch.channels_last


class Rescaling(nn.Module):
  """Keras's Rescaling layer: the pixels times `scale`, in the model."""

  def __init__(self, scale: float):
    super().__init__()
    self.scale = scale

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return x * self.scale


def convnet(image_size: int, dropout: float = 0.0, rescale: bool = True) -> nn.Sequential:
  """keras_side.convnet in torch; it ends with the logit, the sigmoid being in the loss."""
  layers = [Rescaling(1 / 255)] if rescale else []
  channels, size = 3, image_size
  for filters in (32, 64, 128, 128):
    layers += [nn.Conv2d(channels, filters, 3), nn.ReLU(), nn.MaxPool2d(2)]
    channels, size = filters, (size - 2) // 2
  layers.append(nn.Flatten())
  if dropout:
    layers.append(nn.Dropout(dropout))
  layers += [nn.Linear(channels * size * size, 512), nn.ReLU(), nn.Linear(512, 1)]
  model = nn.Sequential(*layers)
  for layer in model.modules():  # Keras's initializers, so that it learns as the peers do
    if isinstance(layer, (nn.Conv2d, nn.Linear)):
      nn.init.xavier_uniform_(layer.weight)
      nn.init.zeros_(layer.bias)
  return model.to(memory_format=LAYOUT)


def parameters(model: nn.Module) -> int:
  return sum(p.numel() for p in model.parameters())


def trainer(model: nn.Module, compiled: bool) -> Callable[[torch.Tensor, torch.Tensor], float]:
  """The train step: RMSprop with Keras's settings, binary cross-entropy; returns the loss."""
  # Keras's rho and epsilon; Keras adds epsilon under the square root and
  # torch after it, which changes the update of tiny gradients, not the time.
  optimizer = torch.optim.RMSprop(model.parameters(), lr=1e-4, alpha=0.9, eps=1e-7)
  loss_fn = nn.BCEWithLogitsLoss()
  forward = torch.compile(model) if compiled else model
  model.train()

  def step(images: torch.Tensor, labels: torch.Tensor) -> float:
    optimizer.zero_grad(set_to_none=True)
    loss = loss_fn(forward(images).squeeze(1), labels)
    loss.backward()
    optimizer.step()
    return loss.item()  # as fsv.fit and Keras's fit, which read every step's loss

  return step


def to_tensor(images: np.ndarray | torch.Tensor) -> torch.Tensor:
  """(N, H, W, 3) uint8 to (N, 3, H, W) float32 pixels in LAYOUT."""
  # A view whose strides are channels_last's already: that layout costs no copy.
  nchw = torch.as_tensor(images).permute(0, 3, 1, 2)
  return nchw.float().contiguous(memory_format=LAYOUT)


def _uniform(n: int, bound: float) -> torch.Tensor:
  return (torch.rand(n) * 2 - 1) * bound


def _matrices(a, b, c, d, e, f) -> torch.Tensor:
  """(N, 3, 3) affine matrices [[a, b, c], [d, e, f], [0, 0, 1]] from (N,) entries."""
  zeros, ones = torch.zeros_like(a), torch.ones_like(a)
  return torch.stack([a, b, c, d, e, f, zeros, zeros, ones], 1).view(-1, 3, 3)


def augment(images: torch.Tensor, ranges: dict = rows.AUGMENTATION) -> torch.Tensor:
  """Keras's random rotation, translation, shear, zoom and horizontal flip
  (keras_side._augmentation_layers with `ranges`) as one warp, then the rescale.

  Each matrix maps output to input coordinates, in grid_sample's [-1, 1]
  units (the images are square, so rotations and shears keep their angles),
  and they compose in the Keras layers' order. `images`: (N, 3, H, W) float.
  """
  n = len(images)
  zeros, ones = torch.zeros(n), torch.ones(n)
  angle = _uniform(n, math.radians(ranges['rotation_range']))
  rotation = _matrices(angle.cos(), -angle.sin(), zeros, angle.sin(), angle.cos(), zeros)
  shift = _matrices(ones, zeros, _uniform(n, 2 * ranges['width_shift_range']),
                    zeros, ones, _uniform(n, 2 * ranges['height_shift_range']))
  # RandomShear's slope, as keras_side sets it from the generator's angle.
  slope = _uniform(n, math.sin(math.radians(ranges['shear_range'])))
  shear = _matrices(ones, slope, zeros, zeros, ones, zeros)
  zoom = 1 + _uniform(n, ranges['zoom_range'])
  zoom_y = 1 + _uniform(n, ranges['zoom_range'])  # independent of x, as in Keras
  flip = torch.where(torch.rand(n) < 0.5, -ones, ones) if ranges['horizontal_flip'] else ones
  scale = _matrices(zoom * flip, zeros, zeros, zeros, zoom_y, zeros)
  theta = (rotation @ shift @ shear @ scale)[:, :2]
  grid = F.affine_grid(theta, list(images.shape), align_corners=False)
  padding = {'nearest': 'border', 'constant': 'zeros'}[ranges['fill_mode']]
  warped = F.grid_sample(images, grid, padding_mode=padding, align_corners=False)
  return (warped * (1 / 255)).contiguous(memory_format=LAYOUT)


def _info(compiled: bool, model: nn.Module) -> dict:
  return {'backend': 'torch', 'compiled': compiled, 'layout': str(LAYOUT).split('.')[-1],
          'threads': torch.get_num_threads(), 'parameters': parameters(model)}


def _train_steps(settings: dict, compiled: bool, augmented: bool) -> rows.Task:
  """Steps over in-memory batches of the row's random images, augmented by
  the warp on the batch (Keras's random layers) or with the rescale in the model."""
  torch.manual_seed(settings['seed'])
  batch, size = settings['batch_size'], settings['image_size']
  images, labels = rows.random_images(batch * settings['steps'], size, settings['seed'])
  labels = torch.from_numpy(labels.astype(np.float32))
  model = convnet(size, dropout=0.5 if augmented else 0.0, rescale=not augmented)
  step = trainer(model, compiled)
  warp = torch.compile(augment) if compiled else augment

  def run() -> int:
    for start in range(0, len(images), batch):
      x = to_tensor(images[start:start + batch])
      step(warp(x) if augmented else x, labels[start:start + batch])
    return len(images)

  return rows.Task(run, _info(compiled, model))


def convnet_train_step(settings: dict, compiled: bool = False) -> rows.Task:
  return _train_steps(settings, compiled, augmented=False)


def convnet_train_step_augmented_layers(settings: dict, compiled: bool = False) -> rows.Task:
  return _train_steps(settings, compiled, augmented=True)


class ImageFolder(torch_data.Dataset):
  """flow_from_directory's files and labels: one class a sorted subfolder;
  an item is the image decoded and resized as Keras's load_img does it."""

  def __init__(self, root: str, image_size: int):
    classes = sorted(c for c in os.listdir(root) if os.path.isdir(os.path.join(root, c)))
    self.items = [(os.path.join(root, c, file), np.float32(label))
                  for label, c in enumerate(classes)
                  for file in sorted(os.listdir(os.path.join(root, c)))]
    self.size = (image_size, image_size)

  def __len__(self) -> int:
    return len(self.items)

  def __getitem__(self, i: int) -> tuple[np.ndarray, np.float32]:
    path, label = self.items[i]
    with Image.open(path) as image:
      # load_img's default interpolation (flow_from_directory's too) is nearest.
      return np.array(image.convert('RGB').resize(self.size, Image.Resampling.NEAREST)), label


def epoch_from_jpeg(settings: dict, compiled: bool = False) -> rows.Task:
  """keras_side.epoch_from_jpeg's script: build the model, list the folder, one
  shuffled epoch decoding every batch, augmented by the warp.

  Decoding in the training process (DataLoader's default), as Keras's flow
  does: worker processes would take the cores the step's threads use. Each
  repetition's new model reuses what torch.compile compiled in the warm-up
  (TORCH_LOGS=recompiles shows no recompilation).
  """
  torch.manual_seed(settings['seed'])
  train_dir = os.path.join(settings['data_dir'], 'train')
  size = settings['image_size']
  warp = torch.compile(augment) if compiled else augment

  def run() -> int:
    model = convnet(size, dropout=0.5, rescale=False)
    step = trainer(model, compiled)
    images = ImageFolder(train_dir, size)
    for x, y in torch_data.DataLoader(images, settings['batch_size'], shuffle=True):
      step(warp(to_tensor(x)), y)
    return len(images)

  return rows.Task(run, _info(compiled, convnet(size)))


# The rows bench.worker.TORCH_ROWS names; each takes `compiled`.
TASKS = {
    'convnet_train_step': convnet_train_step,
    'convnet_train_step_augmented_layers': convnet_train_step_augmented_layers,
    'epoch_from_jpeg': epoch_from_jpeg,
}
