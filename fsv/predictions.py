"""Class predictions for new images, row for row with the inputs: `Run.classify`.

Every input keeps its row: an item that could not be decoded has NaN
probabilities and its reason, so a CSV or table built from this never
shifts a file onto another file's prediction.
"""
from __future__ import annotations

import csv
import dataclasses
import io

import numpy as np


@dataclasses.dataclass(frozen=True, eq=False)
class Predictions:
  names: tuple[str, ...]
  probabilities: np.ndarray   # (n, num_classes); NaN rows for `errors`
  errors: dict                # row -> why the item could not be decoded
  class_names: tuple[str, ...]

  def predicted(self, row: int) -> tuple[str, float]:
    best = int(self.probabilities[row].argmax())
    return self.class_names[best], float(self.probabilities[row, best])

  def csv(self) -> str:
    """file, predicted_class, probability, one column per class, error."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(['file', 'predicted_class', 'probability', *self.class_names, 'error'])
    for row, name in enumerate(self.names):
      if row in self.errors:
        writer.writerow([name, '', '', *[''] * len(self.class_names), self.errors[row]])
      else:
        predicted, probability = self.predicted(row)
        writer.writerow([name, predicted, f'{probability:.6f}',
                         *(f'{p:.6f}' for p in self.probabilities[row]), ''])
    return out.getvalue()

  def table(self, max_rows: int = 20) -> str:
    """The first `max_rows` rows, every undecodable item and a count per class."""
    width = min(max(map(len, self.names)), 60)
    lines = [f'{"file":<{width}}  {"predicted":<14} probability']
    for row, name in enumerate(self.names[:max_rows]):
      if row in self.errors:
        lines.append(f'{name[-width:]:<{width}}  not decoded: {self.errors[row]}')
      else:
        predicted, probability = self.predicted(row)
        lines.append(f'{name[-width:]:<{width}}  {predicted:<14} {probability:.4f}')
    if len(self.names) > max_rows:
      lines.append(f'... and {len(self.names) - max_rows} more')
    lines += [f'not decoded: {self.names[row]}: {reason}'
              for row, reason in self.errors.items() if row >= max_rows]
    decoded = [row for row in range(len(self.names)) if row not in self.errors]
    counts = np.bincount(self.probabilities[decoded].argmax(-1).astype(int),
                         minlength=len(self.class_names))
    lines.append(f'{len(decoded)} image(s) classified ('
                 + ', '.join(f'{n} {c}' for n, c in zip(self.class_names, counts))
                 + f'), {len(self.errors)} not decoded')
    return '\n'.join(lines)
