"""How well a run classifies a labelled split, and where it goes wrong.

`evaluation(...)` computes, from the model's probabilities and per-example
losses: accuracy, log loss (the training loss, so the test split gives
results.json's `test_loss`), per-class precision, recall, F1 and support,
their macro and support-weighted averages, top-5 accuracy (more than 5
classes), the expected calibration error and the confusion matrix.
`Evaluation.write(folder)` leaves `metrics.json`, `confusion_matrix.png`
(counts and row-normalised), `top_losses.png` (the most confidently wrong
images, as fastai's `plot_top_losses`) and `mistakes.csv`.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import os
from typing import Sequence

import numpy as np

from fsv import files
from fsv import plots

# Equal-width confidence bins of the expected calibration error (Guo et al. 2017).
CALIBRATION_BINS = 15
TOP_LOSSES = 16


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray,
                               bins: int = CALIBRATION_BINS) -> float:
  """Mean |accuracy - confidence| over confidence bins, weighted by their size."""
  confidence = probabilities.max(-1)
  if not np.isfinite(confidence).all():  # a diverged model's NaN probabilities
    return float('nan')
  correct = probabilities.argmax(-1) == labels
  # Bin b holds confidences in (b/bins, (b+1)/bins]; a confidence of 0 joins bin 0.
  index = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
  error = 0.0
  for b in range(bins):
    members = index == b
    if members.any():
      error += members.mean() * abs(correct[members].mean() - confidence[members].mean())
  return float(error)


def _per_class(confusion: np.ndarray, class_names: Sequence[str]) -> dict:
  true_positives = np.diag(confusion).astype(np.float64)
  support = confusion.sum(1)
  predicted = confusion.sum(0)
  # A class never predicted (or absent) has precision (recall) 0, as scikit-learn's
  # zero_division=0: no evidence of being right is not evidence of being right.
  precision = np.divide(true_positives, predicted, out=np.zeros_like(true_positives),
                        where=predicted > 0)
  recall = np.divide(true_positives, support, out=np.zeros_like(true_positives),
                     where=support > 0)
  both = precision + recall
  f1 = np.divide(2 * precision * recall, both, out=np.zeros_like(both), where=both > 0)
  per_class = {name: {'precision': float(p), 'recall': float(r), 'f1': float(f),
                      'support': int(s)}
               for name, p, r, f, s in zip(class_names, precision, recall, f1, support)}
  weights = support / max(support.sum(), 1)
  averages = {
      'macro': {'precision': float(precision.mean()), 'recall': float(recall.mean()),
                'f1': float(f1.mean()), 'support': int(support.sum())},
      'weighted': {'precision': float(weights @ precision), 'recall': float(weights @ recall),
                   'f1': float(weights @ f1), 'support': int(support.sum())}}
  return per_class, averages


@dataclasses.dataclass(frozen=True, eq=False)
class Evaluation:
  metrics: dict
  class_names: tuple[str, ...]
  probabilities: np.ndarray      # (n, num_classes)
  labels: np.ndarray             # (n,)
  losses: np.ndarray             # (n,) per-example loss
  files: tuple[str, ...]
  images: np.ndarray             # (n, H, W, 3) uint8, as the model saw them

  @property
  def mistakes(self) -> np.ndarray:
    """Rows the model got wrong, highest loss first."""
    wrong = np.flatnonzero(self.probabilities.argmax(-1) != self.labels)
    return wrong[np.argsort(-self.losses[wrong], kind='stable')]

  def summary(self, max_classes: int = 30) -> str:
    """The headline metrics and a per-class table, for a console."""
    m = self.metrics
    lines = [f'{m["examples"]} images: accuracy {m["accuracy"]:.4f}, log loss '
             f'{m["log_loss"]:.4f}, expected calibration error '
             f'{m["expected_calibration_error"]:.4f}'
             + (f', top-5 accuracy {m["top5_accuracy"]:.4f}' if 'top5_accuracy' in m else '')
             + f'; {len(self.mistakes)} mistakes']
    width = max(12, *map(len, self.class_names[:max_classes]))
    lines.append(f'{"class":<{width}}  precision  recall     f1  support')
    rows = [*list(m['per_class'].items())[:max_classes],
            ('macro avg', m['macro_avg']), ('weighted avg', m['weighted_avg'])]
    for name, values in rows:
      lines.append(f'{name:<{width}}  {values["precision"]:9.4f}  {values["recall"]:6.4f}  '
                   f'{values["f1"]:.4f}  {values["support"]:7d}')
    return '\n'.join(lines)

  def confusion_figure(self):
    return plots.confusion_matrix(np.asarray(self.metrics['confusion_matrix']),
                                  self.class_names)

  def top_losses_figure(self, count: int = TOP_LOSSES):
    rows = self.mistakes[:count]
    predicted = self.probabilities.argmax(-1)
    titles = [f'{os.path.basename(self.files[i])}\ntrue {self.class_names[self.labels[i]]}, '
              f'predicted {self.class_names[predicted[i]]}\n'
              f'p={self.probabilities[i, predicted[i]]:.3f}  loss {self.losses[i]:.2f}'
              for i in rows]
    return plots.image_grid(self.images[rows], titles, empty_message='no mistakes')

  def mistakes_csv(self) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(['file', 'true_class', 'predicted_class', 'predicted_probability',
                     'true_probability', 'loss'])
    predicted = self.probabilities.argmax(-1)
    for i in self.mistakes:
      writer.writerow([self.files[i], self.class_names[self.labels[i]],
                       self.class_names[predicted[i]],
                       f'{self.probabilities[i, predicted[i]]:.6f}',
                       f'{self.probabilities[i, self.labels[i]]:.6f}', f'{self.losses[i]:.6f}'])
    return out.getvalue()

  def write(self, folder: str) -> None:
    """metrics.json, confusion_matrix.png, top_losses.png and mistakes.csv in `folder`."""
    root = files.as_path(folder)
    files.write_json(root / 'metrics.json', self.metrics)
    plots.save(self.confusion_figure(), root / 'confusion_matrix.png')
    plots.save(self.top_losses_figure(), root / 'top_losses.png', dpi=80)
    files.write_bytes(root / 'mistakes.csv', self.mistakes_csv().encode())


def evaluation(probabilities: np.ndarray, labels: np.ndarray, losses: np.ndarray,
               class_names: Sequence[str], files_: Sequence[str],
               images: np.ndarray) -> Evaluation:
  """The metrics of `probabilities` against `labels` (see the module docstring)."""
  num_classes = len(class_names)
  labels = np.asarray(labels)
  predicted = probabilities.argmax(-1)
  confusion = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(confusion, (labels, predicted), 1)
  per_class, averages = _per_class(confusion, class_names)
  metrics = {
      'examples': int(len(labels)),
      'accuracy': float(np.mean(predicted == labels)),
      'log_loss': float(np.mean(losses, dtype=np.float64)),
      'expected_calibration_error': expected_calibration_error(probabilities, labels),
      'per_class': per_class,
      'macro_avg': averages['macro'],
      'weighted_avg': averages['weighted'],
      'confusion_matrix': confusion.tolist(),
      'class_names': list(class_names),
  }
  if num_classes > 5:
    top5 = np.argsort(-probabilities, axis=-1)[:, :5]
    metrics['top5_accuracy'] = float(np.mean((top5 == labels[:, None]).any(-1)))
  return Evaluation(metrics=metrics, class_names=tuple(class_names),
                    probabilities=probabilities, labels=labels, losses=np.asarray(losses),
                    files=tuple(files_), images=images)
