"""A trained run as an object: what `fsv.fit` returns and `fsv.load_run` loads.

    run = fsv.load_run('workdirs/finetune')           # or: run = fsv.fit(config)
    run.predict(['cat.jpg', 'photos/'], tta=True)     # (n, num_classes) probabilities
    run.evaluate('data/cats_vs_dogs_small', split='test').metrics
    run.explain(['cat.jpg']).write('gradcam/')        # Grad-CAM PNGs

A `Run` holds the config, the class names, the Flax module and its
variables, and knows how the training data was decoded (input size,
interpolation) and preprocessed, so new images go through exactly the same
steps. Every method runs the model through fsv/inference.py.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

import flax.linen as nn
import jax
import ml_collections
import numpy as np

from fsv import data as data_lib
from fsv import evaluate as evaluate_lib
from fsv import explain as explain_lib
from fsv import export as export_lib
from fsv import inference
from fsv import models
from fsv import parallel
from fsv import predictions as predictions_lib
from fsv.data import decode
from fsv.data import folder as folder_lib
from fsv.data import holdout
from fsv.data import inputs as inputs_lib
from fsv.errors import DataError, ExportError


@dataclasses.dataclass
class Run:
  config: ml_collections.ConfigDict   # validated, as config.json holds it
  class_names: tuple[str, ...]
  model: nn.Module
  variables: dict                     # {'params': ..., 'batch_stats': ...}
  history: list = dataclasses.field(default_factory=list)
  results: dict = dataclasses.field(default_factory=dict)
  workdir: Optional[str] = None
  checkpoint: str = 'best'            # which epoch `variables` are: 'best', 'last', 'initial'
  dataset: Optional[decode.Dataset] = None  # the data `fsv.fit` trained on
  mesh: Optional[jax.sharding.Mesh] = None  # default: all devices

  @property
  def params(self) -> Any:
    return self.variables['params']

  @property
  def batch_stats(self) -> Any:
    return self.variables.get('batch_stats', {})

  @property
  def num_classes(self) -> int:
    return len(self.class_names)

  @property
  def image_size(self) -> tuple[int, int]:
    """(height, width) every image is resized to."""
    return tuple(self.config.data.image_size)

  @property
  def preprocessing(self) -> str:
    """What happens to pixels between decoding and the first layer, in words."""
    model_part = models.preprocessing(self.config.model.name)
    return (f'decoded to RGB (EXIF orientation applied), resized to '
            f'{self.image_size[0]}x{self.image_size[1]} ({self.config.data.interpolation}), '
            f'times {self.config.augment.rescale:g}'
            + (f', then the model\'s {model_part}' if model_part else ''))

  @property
  def batch_size(self) -> int:
    """The batch the run evaluated with: the same batch gives the same numbers."""
    group = self.config[self.results.get('phase') or 'train']
    return group.eval_batch_size or group.batch_size

  def _mesh(self) -> jax.sharding.Mesh:
    if self.mesh is None:
      self.mesh = parallel.make_mesh()
    return self.mesh

  def logits(self, images: np.ndarray, batch_size: Optional[int] = None,
             flip: bool = False) -> np.ndarray:
    """(n, outputs) logits of uint8 images already at `image_size`."""
    return inference.logits(self.model, self.variables, images, batch_size or self.batch_size,
                            self._mesh(), self.config.augment.rescale, flip)

  def read_images(self, x: Any) -> inputs_lib.Inputs:
    """Files, folders (recursively), PIL images or uint8 arrays of any size,
    decoded and resized as the training data was; items that cannot be
    decoded keep their row and are listed in `errors`. The methods below
    take the result (or its `.valid()` rows) as `x` too."""
    return inputs_lib.read(x, self.image_size, self.config.data.interpolation)

  def probabilities(self, images: np.ndarray, tta: bool = False,
                    batch_size: Optional[int] = None) -> np.ndarray:
    """(n, num_classes) of uint8 images already at `image_size`; `tta` averages
    them with those of the mirrored images."""
    probabilities = inference.probabilities(self.logits(images, batch_size))
    if tta:
      mirrored = inference.probabilities(self.logits(images, batch_size, flip=True))
      probabilities = (probabilities + mirrored) / 2
    return probabilities

  def predict(self, x: Any, tta: bool = False,
              batch_size: Optional[int] = None) -> np.ndarray:
    """(n, num_classes) class probabilities of `x` (see `read_images`), in its
    order; `tta` averages them with those of the mirrored images. An item
    that cannot be decoded is a DataError naming it."""
    inputs = self.read_images(x)
    inputs.check()
    return self.probabilities(inputs.images, tta, batch_size)

  def classify(self, x: Any, tta: bool = False,
               batch_size: Optional[int] = None) -> predictions_lib.Predictions:
    """Like `predict`, but an item that cannot be decoded keeps its row (NaN
    probabilities) and its reason instead of failing the batch."""
    inputs = self.read_images(x)
    probabilities = np.full((len(inputs.names), self.num_classes), np.nan, np.float32)
    decoded = [row for row in range(len(inputs.names)) if row not in inputs.errors]
    if decoded:
      probabilities[decoded] = self.probabilities(inputs.images[decoded], tta, batch_size)
    return predictions_lib.Predictions(inputs.names, probabilities, dict(inputs.errors),
                                       self.class_names)

  def evaluate(self, data: Any, split: str = 'test', tta: bool = False,
               batch_size: Optional[int] = None) -> evaluate_lib.Evaluation:
    """Metrics and plots of the run on labelled data: a folder
    (DATA/<split>/<class>/... or DATA/<class>/..., the run's classes) or a
    `Split`. `.write(folder)` saves them."""
    if isinstance(data, decode.Split):
      split_data = data
    else:
      split_data, _ = folder_lib.load_labelled(data, split, self.class_names,
                                               self.config.data)
    images, labels = split_data.images, split_data.labels
    if tta:
      probabilities = self.probabilities(images, True, batch_size)
      picked = probabilities[np.arange(len(labels)), labels]
      losses = -np.log(np.clip(picked, 1e-7, 1))
    else:
      logits = self.logits(images, batch_size)
      probabilities = inference.probabilities(logits)
      losses, _ = inference.losses(logits, labels)
    return evaluate_lib.evaluation(probabilities, labels, losses, self.class_names,
                                   split_data.files, images)

  def validation_images(self) -> np.ndarray:
    """The run's validation images: the fitted dataset's, or its data read
    (and cached) again as `config.data` describes it."""
    try:
      dataset = self.dataset or data_lib.load(self.config.data)
    except DataError as e:
      raise ExportError(f"cannot read the run's validation images ({e}); name the images "
                        'to verify on instead') from None
    if not self.dataset:  # as the run arranged it: held out, or a fold
      dataset = holdout.for_run(dataset, self.config.data, self.config.seed)
    if 'validation' not in dataset.splits:
      raise ExportError("the run's data has no validation split; name the images to verify "
                        'on instead')
    return dataset.splits['validation'].images

  def export(self, format_: str, out: str, images: Any = None, overwrite: bool = False,
             tflite_batch: int = 1) -> dict:
    """Writes the model in `format_` ('jax', 'onnx', 'tflite') into the folder
    `out` and verifies it in its own runtime against `probabilities`, on
    `images` (anything `read_images` takes) or the validation images;
    returns what model.json says (fsv/export.py)."""
    if images is None:
      pixels, source = self.validation_images(), "the run's validation split"
    else:
      inputs = self.read_images(images)
      inputs.check()
      pixels, source = inputs.images, f'{len(inputs.names)} given images'
    return export_lib.export(self, format_, out, pixels, source, overwrite, tflite_batch)

  def explain(self, x: Any, class_name: Optional[str] = None,
              batch_size: Optional[int] = None) -> explain_lib.Explanation:
    """Grad-CAM heatmaps of `x` for `class_name`, or for each image's predicted class."""
    if class_name is not None and class_name not in self.class_names:
      raise DataError(f'class {class_name!r} is not one of the run\'s classes '
                      f'{list(self.class_names)}')
    inputs = self.read_images(x)
    inputs.check()
    return explain_lib.explanation(
        self.model, self.variables, inputs.names, inputs.images, self.class_names,
        models.gradcam_layer(self.config.model.name), self.config.augment.rescale,
        batch_size or self.batch_size,
        None if class_name is None else self.class_names.index(class_name), self._mesh())
