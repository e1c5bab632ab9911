"""Every figure fsv draws: training curves, confusion matrix, top losses, Grad-CAM.

Figures are built with matplotlib's object API (`Figure`, no pyplot), so
drawing one never switches a notebook's backend or touches global state;
each function returns the Figure (a notebook shows it) and `save` writes it
as a PNG through the one atomic writer (local paths or gs:// URLs).
"""
from __future__ import annotations

import io
from typing import Optional, Sequence

import numpy as np

from fsv import files


def _figure(width: float, height: float):
  from matplotlib.figure import Figure  # imported when a figure is drawn, not with fsv
  return Figure(figsize=(width, height))


def save(figure, path, dpi: int = 100) -> None:
  png = io.BytesIO()
  figure.savefig(png, format='png', dpi=dpi, bbox_inches='tight')
  files.write_bytes(path, png.getvalue())


def smooth(points: Sequence[float], factor: float = 0.8) -> np.ndarray:
  """The book's exponential moving average of a noisy curve (DLwP 5.3.1);
  a missing (NaN) point, such as a phase's epoch 0 without training
  metrics, stays missing and leaves the average as it was."""
  smoothed, previous = [], None
  for point in points:
    if np.isnan(point):
      smoothed.append(np.nan)
      continue
    previous = point if previous is None else previous * factor + point * (1 - factor)
    smoothed.append(previous)
  return np.asarray(smoothed, np.float64)


def curves(history: Sequence[dict], best: Optional[dict] = None):
  """Accuracy and loss per epoch, training against validation, as the book
  plots them: each epoch's value as a dot, its smoothed curve as a line;
  `best` (an entry of `history`), the epoch a run keeps, as a star."""
  figure = _figure(11, 4)
  axes = figure.subplots(1, 2)
  epochs = np.arange(1, len(history) + 1)
  for ax, metric in zip(axes, ('accuracy', 'loss')):
    for key, name, colour in ((f'train_{metric}', 'training', 'tab:blue'),
                              (f'val_{metric}', 'validation', 'tab:orange')):
      if not any(key in h for h in history):
        continue
      values = [h.get(key, np.nan) for h in history]
      ax.plot(epochs, values, 'o', ms=3, color=colour, alpha=0.5, label=f'{name} {metric}')
      ax.plot(epochs, smooth(values), '-', color=colour, label=f'{name}, smoothed')
    for boundary in np.flatnonzero([a['phase'] != b['phase']
                                    for a, b in zip(history, history[1:])]):
      ax.axvline(boundary + 1.5, color='grey', ls=':', lw=1)  # a new phase starts
    if best is not None and f'val_{metric}' in best:
      ax.plot(epochs[history.index(best)], best[f'val_{metric}'], '*', ms=12, color='tab:red',
              label=f'kept: {best["phase"]} epoch {best["epoch"]}')
    ax.set_xlabel('epoch (all phases)')
    ax.set_title(metric)
    ax.grid(alpha=.3)
    if history:
      ax.legend()
  figure.tight_layout()
  return figure


def confusion_matrix(counts: np.ndarray, class_names: Sequence[str]):
  """Counts and row-normalised rates (recall on the diagonal), true classes as rows."""
  counts = np.asarray(counts)
  num_classes = len(class_names)
  rates = counts / np.maximum(counts.sum(1, keepdims=True), 1)
  side = min(4 + 0.45 * num_classes, 40)
  figure = _figure(2 * side + 1, side)
  annotate = num_classes <= 20
  for ax, values, title, fmt in zip(figure.subplots(1, 2), (counts, rates),
                                    ('counts', 'row-normalised (recall on the diagonal)'),
                                    ('{:d}', '{:.2f}')):
    image = ax.imshow(values, cmap='Blues', vmin=0)
    figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ticks = np.arange(num_classes)
    ax.set_xticks(ticks, class_names, rotation=90 if num_classes > 6 else 0)
    ax.set_yticks(ticks, class_names)
    ax.set_xlabel('predicted class')
    ax.set_ylabel('true class')
    ax.set_title(title)
    if annotate:
      high = values.max() / 2 if values.size else 0
      for (row, column), value in np.ndenumerate(values):
        ax.text(column, row, fmt.format(value.item()), ha='center', va='center',
                color='white' if value > high else 'black')
  figure.tight_layout()
  return figure


def image_grid(images: Sequence[np.ndarray], titles: Sequence[str], columns: int = 4,
               empty_message: str = 'nothing to show'):
  """uint8 images in a grid, each with its title (fastai's `plot_top_losses` look)."""
  if not len(images):
    figure = _figure(4, 1)
    figure.text(0.5, 0.5, empty_message, ha='center', va='center')
    return figure
  columns = min(columns, len(images))
  rows = -(-len(images) // columns)
  figure = _figure(3.2 * columns, 3.6 * rows)
  axes = np.atleast_1d(figure.subplots(rows, columns)).ravel()
  for ax in axes:
    ax.axis('off')
  for ax, image, title in zip(axes, images, titles):
    ax.imshow(image)
    ax.set_title(title, fontsize=9)
  figure.tight_layout()
  return figure


def heatmap_overlay(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.4) -> np.ndarray:
  """uint8 image with a [0, 1] heatmap laid over it in the jet colours (DLwP's look)."""
  from matplotlib import colormaps
  colours = colormaps['jet'](np.clip(heatmap, 0, 1))[..., :3] * 255
  return np.clip(image * (1 - alpha) + colours * alpha, 0, 255).astype(np.uint8)


def gradcam(image: np.ndarray, heatmap: np.ndarray, title: str):
  """The image, its Grad-CAM heatmap and the overlay, side by side."""
  figure = _figure(10, 3.8)
  axes = figure.subplots(1, 3)
  axes[0].imshow(image)
  axes[0].set_title('input (as the model sees it)', fontsize=9)
  shown = axes[1].imshow(heatmap, cmap='jet', vmin=0, vmax=1)
  figure.colorbar(shown, ax=axes[1], fraction=0.046, pad=0.04)
  axes[1].set_title('Grad-CAM', fontsize=9)
  axes[2].imshow(heatmap_overlay(image, heatmap))
  axes[2].set_title('overlay', fontsize=9)
  for ax in axes:
    ax.axis('off')
  figure.suptitle(title, fontsize=10)
  figure.tight_layout()
  return figure


def sweep(settings: dict):
  """Per setting, every member's test and validation accuracy as dots and the
  mean with its 95% interval as a bar (fsv/sweeps.py)."""
  names = list(settings)
  figure = _figure(max(5, 1.6 * len(names) + 2), 4)
  ax = figure.subplots()
  for offset, metric, colour in ((-0.12, 'test_accuracy', 'tab:blue'),
                                 (0.12, 'val_accuracy', 'tab:orange')):
    for i, name in enumerate(names):
      stat = settings[name].get(metric)
      if not stat:
        continue
      ax.plot(np.full(stat['n'], i + offset), stat['values'], 'o', ms=4, alpha=0.5,
              color=colour, label=metric.replace('_', ' ') if i == 0 else None)
      if stat['ci95']:
        ax.errorbar(i + offset, stat['mean'], color=colour, capsize=4, fmt='_', ms=14,
                    yerr=[[stat['mean'] - stat['ci95'][0]], [stat['ci95'][1] - stat['mean']]])
  ax.set_xticks(range(len(names)), names, rotation=20 if len(names) > 3 else 0, ha='right')
  ax.set_ylabel('accuracy')
  ax.set_title('members (dots), mean and 95% interval (bars)')
  ax.grid(alpha=.3)
  ax.legend()
  figure.tight_layout()
  return figure


def lr_find(finding, divergence: float):
  """A learning-rate finder's curve (an `fsv.lr_find.LRFinding`), fastai's
  look: loss against learning rate (log axis), each step's loss as a dot,
  the smoothed loss as a line, each suggestion marked on it."""
  figure = _figure(7, 4.5)
  ax = figure.subplots()
  ax.plot(finding.learning_rates, finding.losses, '.', ms=3, color='tab:blue', alpha=0.35,
          label='loss per step')
  ax.plot(finding.learning_rates, finding.smoothed, '-', color='tab:blue',
          label='smoothed loss')
  for name, colour in zip(('valley', 'steepest', 'minimum'),
                          ('tab:red', 'tab:green', 'tab:purple')):
    step = finding.suggestion_steps.get(name)
    if step is None:
      continue
    label = (f'minimum: {finding.learning_rates[step]:.2e}, / 10: '
             f'{finding.suggestions[name]:.2e}' if name == 'minimum'
             else f'{name}: {finding.suggestions[name]:.2e}')
    ax.plot(finding.learning_rates[step], finding.smoothed[step], 'o', ms=8, color=colour,
            label=label)
    if name == 'minimum':
      ax.axvline(finding.suggestions[name], color=colour, ls=':', lw=1)
  ax.set_xscale('log')
  ax.set_xlabel('learning rate')
  ax.set_ylabel('training loss')
  ax.set_title(f'learning-rate finder, {finding.phase} phase'
               + (f' ({finding.config_name})' if finding.config_name else ''))
  ax.set_ylim(*_loss_limits(finding.losses, finding.smoothed, divergence))
  ax.grid(alpha=.3, which='both')
  ax.legend()
  figure.tight_layout()
  return figure


def _loss_limits(losses: np.ndarray, smoothed: np.ndarray, divergence: float
                 ) -> tuple[float, float]:
  """The loss axis: from the lowest loss to the start or the divergence
  threshold, whichever is higher; the blow-up's huge losses would flatten
  the rest of the curve."""
  finite = np.concatenate([losses[np.isfinite(losses)], smoothed[np.isfinite(smoothed)]])
  if not finite.size:
    return 0.0, 1.0
  good = smoothed[np.isfinite(smoothed)]
  low = float(finite.min())
  high = min(float(finite.max()), max(float(good[0]), divergence * float(good.min())))
  margin = 0.05 * max(high - low, 1e-6)
  return low - margin, high + margin
