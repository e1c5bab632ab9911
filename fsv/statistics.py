"""Honest numbers from several runs: intervals over seeds, paired tests on images.

`interval(values)`: mean, standard deviation and the 95% confidence
interval of the mean (Student's t with n - 1 degrees of freedom: few seeds
give wide intervals, as they should).

`paired(correct_a, correct_b)`: is setting A's test accuracy different from
B's? Both were evaluated on the same test images, so the comparison is
paired per image. Each setting's per-image correctness is averaged over its
members (seeds, folds); the test resamples the images (a paired bootstrap,
`BOOTSTRAP` times) and reports the accuracy difference with its 95%
interval and a two-sided p-value; a difference is called distinguishable
from noise when the interval excludes 0. With one member per setting it
also gives McNemar's exact test on the images one run got right and the
other wrong.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

BOOTSTRAP = 10_000
CONFIDENCE = 0.95


def _scipy_stats():
  # Imported when needed: at the top it added 1.5-2 s to every `import fsv`
  # (each command-line start), for the sweep summaries alone.
  from scipy import stats  # pylint: disable=import-outside-toplevel
  return stats


def interval(values: Sequence[float]) -> dict:
  """{'n', 'mean', 'std', 'ci95': [low, high], 'values'}; one value has no interval."""
  values = np.asarray(values, np.float64)
  n, mean = len(values), float(np.mean(values))
  if n < 2:
    return {'n': n, 'mean': mean, 'std': None, 'ci95': None, 'values': values.tolist()}
  std = float(np.std(values, ddof=1))
  half = float(_scipy_stats().t.ppf((1 + CONFIDENCE) / 2, n - 1)) * std / math.sqrt(n)
  return {'n': n, 'mean': mean, 'std': std, 'ci95': [mean - half, mean + half],
          'values': values.tolist()}


def paired(correct_a: np.ndarray, correct_b: np.ndarray, seed: int = 0) -> dict:
  """Accuracy of A minus B on the same images; `correct_x` is (members, images) 0/1."""
  a = np.asarray(correct_a, np.float64).mean(0)  # per image, over the members
  b = np.asarray(correct_b, np.float64).mean(0)
  if a.shape != b.shape:
    raise ValueError(f'paired settings must be evaluated on the same images: '
                     f'{a.shape[0]} against {b.shape[0]}')
  difference = a - b
  rng = np.random.default_rng(seed)
  resampled = difference[rng.integers(0, len(difference), (BOOTSTRAP, len(difference)))].mean(1)
  low, high = np.quantile(resampled, [(1 - CONFIDENCE) / 2, (1 + CONFIDENCE) / 2])
  p_value = min(1.0, 2 * min(np.mean(resampled <= 0), np.mean(resampled >= 0)))
  result = {'difference': float(difference.mean()), 'ci95': [float(low), float(high)],
            'p_value': float(p_value), 'distinguishable': bool(low > 0 or high < 0),
            'test': f'paired bootstrap over {len(difference)} images, {BOOTSTRAP} resamples'}
  if len(correct_a) == 1 and len(correct_b) == 1:
    only_a = int(np.sum((correct_a[0] == 1) & (correct_b[0] == 0)))
    only_b = int(np.sum((correct_a[0] == 0) & (correct_b[0] == 1)))
    result['mcnemar'] = {
        'only_a_right': only_a, 'only_b_right': only_b,
        'p_value': (float(_scipy_stats().binomtest(only_a, only_a + only_b, 0.5).pvalue)
                    if only_a + only_b else 1.0)}
  return result
