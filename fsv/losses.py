"""The losses: evaluation's (hard labels) and training's (soft targets,
label smoothing, class weights).

Evaluation and results always use `loss_and_correct`: the plain cross-entropy
of the true labels, so validation losses compare across recipes. Training
minimises `Objective.loss` of the targets the augmentation hands over
(one-hot, or mixed by mixup/cutmix), smoothed and weighted as configured;
with none of those it is the same computation as evaluation's.

Train accuracy under mixed labels counts a prediction as correct when it
agrees with the target's dominant (largest-weight) class.
"""
from __future__ import annotations

import dataclasses
import jax.numpy as jnp
import numpy as np
import optax

from fsv.errors import ConfigError


def loss_and_correct(logits: jnp.ndarray, labels: jnp.ndarray):
  """Per-example loss and 0/1 correctness for sigmoid (1 logit) or softmax heads."""
  logits = logits.astype(jnp.float32)  # bfloat16 logits would round the loss
  if logits.shape[-1] == 1:
    logits = logits[:, 0]
    loss = optax.sigmoid_binary_cross_entropy(logits, labels.astype(jnp.float32))
    correct = (logits > 0) == (labels == 1)
  else:
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    correct = jnp.argmax(logits, -1) == labels
  return loss, correct.astype(jnp.float32)


@dataclasses.dataclass(frozen=True)
class Objective:
  """What a training step minimises, besides the model's outputs.

  `label_smoothing` ε mixes the targets with the uniform distribution, as
  Keras does: y (1 - ε) + ε / classes (for one sigmoid unit, classes = 2).
  `class_weights[c]` multiplies the loss of class c's examples (of a mixed
  target, the mix of its classes' weights); the batch loss stays the sum
  over the batch size, as Keras's `class_weight`.
  """
  num_classes: int = 2
  label_smoothing: float = 0.0
  class_weights: tuple[float, ...] = ()

  @property
  def is_plain(self) -> bool:
    return not self.label_smoothing and not self.class_weights

  def loss(self, logits: jnp.ndarray, targets: jnp.ndarray):
    """(mean loss, mean accuracy) of `targets`, (n, classes) probabilities."""
    logits = logits.astype(jnp.float32)
    classes = targets.shape[-1]
    smoothed = targets * (1 - self.label_smoothing) + self.label_smoothing / classes
    if logits.shape[-1] == 1:
      logit = logits[:, 0]
      losses = optax.sigmoid_binary_cross_entropy(logit, smoothed[:, 1])
      correct = (logit > 0) == (targets[:, 1] > targets[:, 0])
    else:
      losses = optax.softmax_cross_entropy(logits, smoothed)
      correct = jnp.argmax(logits, -1) == jnp.argmax(targets, -1)
    if self.class_weights:
      losses = losses * (targets @ jnp.asarray(self.class_weights, jnp.float32))
    return losses.mean(), correct.astype(jnp.float32).mean()


def class_weights(setting: str, labels: np.ndarray, num_classes: int) -> tuple[float, ...]:
  """The weights `setting` names: '' (none), 'balanced' (as scikit-learn's:
  examples / (classes * the class's examples), from the training labels), or
  one number per class in class order, comma-separated ('1,9')."""
  if not setting:
    return ()
  if setting == 'balanced':
    counts = np.bincount(np.asarray(labels), minlength=num_classes)
    if not counts.all():
      empty = [int(c) for c in np.flatnonzero(counts == 0)]
      raise ConfigError(f"class_weights='balanced': classes {empty} have no training "
                        'example to weigh')
    return tuple(float(w) for w in len(labels) / (num_classes * counts))
  weights = parse_weights(setting)
  if len(weights) != num_classes:
    raise ConfigError(f'class_weights={setting!r}: {len(weights)} weights for '
                      f'{num_classes} classes')
  return weights


def parse_weights(setting: str) -> tuple[float, ...]:
  """The explicit weights of a `class_weights` setting; ConfigError if malformed."""
  try:
    weights = tuple(float(w) for w in setting.split(','))
  except ValueError:
    raise ConfigError(f"class_weights={setting!r}: expected '', 'balanced' or one "
                      "number per class, comma-separated ('1,9')") from None
  if not all(np.isfinite(w) and w >= 0 for w in weights) or not any(weights):
    raise ConfigError(f'class_weights={setting!r}: weights must be finite, >= 0 and '
                      'not all 0')
  return weights
