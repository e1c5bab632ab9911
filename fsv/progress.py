"""What a user sees while fsv works: report lines and progress bars.

Under the entry points (absl has parsed the flags) a report line is an
absl INFO log line and a progress bar erases itself when done, so logs stay
readable. In a notebook or a plain script absl's INFO is hidden, so report
lines are printed and bars stay, one per epoch, as Keras shows them.
"""
from __future__ import annotations

from typing import Iterable, TypeVar

from absl import flags
from absl import logging
import tqdm

T = TypeVar('T')


def _under_absl() -> bool:
  return flags.FLAGS.is_parsed()


def report(message: str) -> None:
  """A line worth seeing in any front end: per-epoch metrics, data, results."""
  if _under_absl():
    logging.info('%s', message)
  else:
    tqdm.tqdm.write(message)


def bar(iterable: Iterable[T], description: str, unit: str) -> tqdm.tqdm:
  return tqdm.tqdm(iterable, desc=description, unit=unit, leave=not _under_absl(),
                   dynamic_ncols=True)
