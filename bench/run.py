r"""Runs the benchmark rows, fsv against its peers; prints a table, writes JSON.

  python -m bench.run --json=bench.json                    # every row, the Keras peers
  python -m bench.run --json=bench.json --rows=1,4 --reps=7
  python -m bench.run --json=bench.json --rows=1,2b,3 \
      --peers=keras-tf,keras-jax,torch,torch-compile     # PyTorch beside them
  python -m bench.run --json=smoke.json --rows=1 --reps=1 --warmup=0 --steps=1 \
      --image_size=48 --peers=                             # fsv alone, seconds

Needs `pip install -e '.[bench]'` for the Keras peers and
`pip install -e '.[bench-torch]'` for the torch ones. Each row's figures are
written to --json as soon as the row is done. See bench/__init__.py for the
method.
"""
from __future__ import annotations

import collections
import datetime
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from typing import Callable, Optional

from absl import app
from absl import flags

from bench import rows as rows_lib
from bench import worker as worker_lib

# The JSON name of each side's figures, every side that bench.worker knows.
COLUMNS = {'fsv': 'fsv', 'keras-tf': 'keras_tf', 'keras-jax': 'keras_jax', 'torch': 'torch',
           'torch-compile': 'torch_compile'}
PEERS = tuple(side for side in COLUMNS if side != 'fsv')
PACKAGES = ('jax', 'jaxlib', 'flax', 'optax', 'numpy', 'keras', 'tensorflow-cpu',
            'tensorflow', 'torch', 'scipy', 'pillow')

_JSON = flags.DEFINE_string('json', None, 'Where the rows go (a JSON list).')
_ROWS = flags.DEFINE_list('rows', [r.id for r in rows_lib.ROWS],
                          'Row ids; a bare number takes its variants (2: 2a, 2b).')
_REPS = flags.DEFINE_integer('reps', 5, 'Timed repetitions of each side per row.',
                             lower_bound=1)
_WARMUP = flags.DEFINE_integer('warmup', 1, 'Untimed repetitions first (compiles, caches).',
                               lower_bound=0)
_PEERS = flags.DEFINE_list('peers', ['keras-tf', 'keras-jax'],
                           f'Sides to run beside fsv, of {",".join(PEERS)}; empty for '
                           'fsv alone. The torch sides have rows 1, 2b and 3 only.')
_STEPS = flags.DEFINE_integer('steps', 0, 'Batches per repetition for every row but '
                              'epoch_from_jpeg (0: each row\'s own, ~5-10 s a repetition).',
                              lower_bound=0)
_BATCH = flags.DEFINE_integer('batch_size', 32, 'Images per batch.', lower_bound=1)
_SIZE = flags.DEFINE_integer('image_size', 150, 'Square image side in pixels.',
                             lower_bound=1)
_DATA_DIR = flags.DEFINE_string(
    'data_dir',
    os.path.join(os.path.dirname(rows_lib.ROOT), 'shared', 'data', 'cats_vs_dogs_small'),
    'epoch_from_jpeg: the folder whose train/<class>/ JPEGs make the epoch.')
_JIT = flags.DEFINE_enum('keras_jit_compile', 'auto', ['auto', 'true', 'false'],
                         "Keras's compile(jit_compile=...).")
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the random images.')
_DTYPE = flags.DEFINE_enum('dtype', 'float32', ['float32', 'bfloat16', 'float16'],
                           "fsv's config.dtype; the peers compute in float32.")
_LOG_DIR = flags.DEFINE_string('worker_logs', '', "Workers' stderr, a file per row and "
                               'side (default: a new temporary folder).')
flags.mark_flags_as_required(['json'])


class WorkerError(RuntimeError):
  """A worker failed or died; the message holds its error and log file."""


class Worker:
  """A side's worker process for one row (see bench/worker.py for the protocol)."""

  def __init__(self, side: str, row: rows_lib.Row, settings: dict, log_dir: str):
    self.side = side
    self.log_path = os.path.join(log_dir, f'{row.id}_{row.name}_{side}.log')
    with open(self.log_path, 'w') as log:
      self._process = subprocess.Popen(
          [sys.executable, '-m', 'bench.worker', f'--side={side}', f'--row={row.name}',
           f'--settings={json.dumps(settings)}'],
          stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True,
          cwd=rows_lib.ROOT)

  def ready(self) -> dict:
    return self._answer()['ready']

  def run(self) -> dict:
    return self._request('run')

  def stop(self) -> float:
    peak = self._request('stop')['peak_rss_mb']
    self._process.wait()
    return peak

  def kill(self) -> None:
    if self._process.poll() is None:
      self._process.kill()
      self._process.wait()

  def _request(self, request: str) -> dict:
    self._process.stdin.write(request + '\n')
    self._process.stdin.flush()
    return self._answer()

  def _answer(self) -> dict:
    line = self._process.stdout.readline()
    if not line:
      self._process.wait()
      raise WorkerError(f'the {self.side} worker exited ({self._process.returncode}); '
                        f'its log {self.log_path} ends:\n{_tail(self.log_path)}')
    answer = json.loads(line)
    if 'error' in answer:
      raise WorkerError(f'the {self.side} worker failed (log {self.log_path}):\n'
                        f'{answer["error"]}')
    return answer


def _tail(path: str, lines: int = 20) -> str:
  with open(path) as f:
    return ''.join(collections.deque(f, lines))


def order(sides: list, repetition: int) -> list:
  """The sides in repetition `repetition`: rotated by one each time, so that
  every side follows every other and none always goes first."""
  shift = repetition % len(sides)
  return sides[shift:] + sides[:shift]


def alternate(run: Callable[[str], dict], sides: list, warmup: int,
              reps: int) -> dict[str, list[float]]:
  """Images/s of each side's timed repetitions; `run(side)` does one repetition.

  Repetitions alternate between the sides, so slow drifts of the machine
  (other load, heat, memory) fall on every side alike.
  """
  rates = {side: [] for side in sides}
  for repetition in range(warmup + reps):
    for side in order(sides, repetition):
      answer = run(side)
      if repetition >= warmup:
        rates[side].append(answer['images'] / answer['seconds'])
  return rates


def summarize(rates: dict[str, list[float]], peak_rss: dict[str, float],
              info: dict[str, dict]) -> dict:
  """The medians, fsv's ratio to each peer (None for a side that did not run
  the row) and the details; every side's keys are there."""
  row = {}
  for side, column in COLUMNS.items():
    measured = side in rates
    row[f'{column}_images_per_s'] = statistics.median(rates[side]) if measured else None
    row[f'{column}_images_per_s_reps'] = rates.get(side)
    row[f'{column}_peak_rss_mb'] = peak_rss.get(side)
    row[f'{column}_info'] = info.get(side)
  fsv = row['fsv_images_per_s']
  for peer in PEERS:
    other = row[f'{COLUMNS[peer]}_images_per_s']
    row[f'ratio_{COLUMNS[peer]}'] = fsv / other if fsv and other else None
  return row


def measure_row(row: rows_lib.Row, sides: list, settings: dict, warmup: int, reps: int,
                log_dir: str) -> dict:
  """Fresh workers for the row (set up side by side), alternated repetitions, stop."""
  workers = {}
  try:
    for side in sides:
      workers[side] = Worker(side, row, settings, log_dir)
    info = {side: w.ready() for side, w in workers.items()}
    rates = alternate(lambda side: workers[side].run(), sides, warmup, reps)
    peak_rss = {side: w.stop() for side, w in workers.items()}
  finally:
    for w in workers.values():
      w.kill()
  return summarize(rates, peak_rss, info)


def machine() -> dict:
  """The CPU as /proc/cpuinfo names it; family and model tell apart VMs whose
  model name is a generic "Intel(R) Xeon(R) Processor"."""
  fields = {}
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        key, _, value = line.partition(':')
        fields.setdefault(key.strip(), value.strip())
  except OSError:
    pass
  usable = os.sched_getaffinity(0) if hasattr(os, 'sched_getaffinity') else ()
  return {'cpu': fields.get('model name', platform.processor()),
          'cpu_family_model': f"{fields.get('cpu family', '?')}/{fields.get('model', '?')}",
          'cores': os.cpu_count(), 'usable_cores': len(usable) or None,
          'system': platform.platform()}


def versions() -> dict:
  found = {'python': platform.python_version(), 'fsv_commit': _commit()}
  for package in PACKAGES:
    try:
      found[package] = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
      pass
  return found


def _commit() -> Optional[str]:
  try:
    return subprocess.run(['git', 'describe', '--always', '--dirty'], cwd=rows_lib.ROOT,
                          text=True, capture_output=True, check=True).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return None


def table(sides: list) -> list[tuple[str, str, str]]:
  """The printed columns for `sides` (fsv first) as (header, JSON key, format):
  images/s of each side, then fsv's ratio to each peer. The peak memory, a
  column a side, is in the JSON only: with every peer the line would not fit."""
  columns = [('row', 'row', '{}'), ('name', 'name', '{}')]
  columns += [(f'{side} img/s', f'{COLUMNS[side]}_images_per_s', '{:.1f}') for side in sides]
  columns += [(f'fsv/{side}', f'ratio_{COLUMNS[side]}', '{:.2f}') for side in sides[1:]]
  return columns


LEFT = {'row': 4, 'name': 48}  # the widths of the text columns; a figure's is its header's


def table_line(columns: list, cells) -> str:
  return ' '.join(f'{c:<{LEFT[key]}}' if key in LEFT else f'{c:>{len(header)}}'
                  for (header, key, _), c in zip(columns, cells))


def table_row(columns: list, row: dict) -> str:
  return table_line(columns, ['-' if row[key] is None else form.format(row[key])
                              for _, key, form in columns])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  unknown = sorted(set(_PEERS.value) - set(PEERS))
  if unknown:
    raise app.UsageError(f'unknown peers {unknown}; peers are {list(PEERS)}')
  try:
    selected = rows_lib.select(_ROWS.value)
  except ValueError as e:
    raise app.UsageError(str(e))
  log_dir = _LOG_DIR.value or tempfile.mkdtemp(prefix='fsv-bench-logs-')
  os.makedirs(log_dir, exist_ok=True)
  sides = ['fsv'] + [p for p in COLUMNS if p in _PEERS.value]
  common = dict(reps=_REPS.value, warmup=_WARMUP.value, batch_size=_BATCH.value,
                image_size=_SIZE.value, keras_jit_compile=_JIT.value, dtype=_DTYPE.value,
                machine=machine(),
                date=datetime.datetime.now().astimezone().isoformat(timespec='seconds'),
                versions=versions())
  columns = table(sides)
  print(f'worker logs: {log_dir}\n{table_line(columns, [c[0] for c in columns])}',
        flush=True)
  results = []
  for row in selected:
    settings = dict(batch_size=_BATCH.value, image_size=_SIZE.value,
                    steps=_STEPS.value or row.steps, seed=_SEED.value,
                    data_dir=os.path.abspath(_DATA_DIR.value), keras_jit_compile=_JIT.value,
                    dtype=_DTYPE.value)
    try:
      measured = measure_row(row, [s for s in sides if worker_lib.implements(s, row.name)],
                             settings, _WARMUP.value, _REPS.value, log_dir)
    except WorkerError as e:
      sys.exit(f'error in row {row.id} {row.name}: {e}')
    results.append({'row': row.id, 'name': row.name, **measured,
                    'steps': settings['steps'] if row.steps else None, **common})
    print(table_row(columns, results[-1]), flush=True)
    with open(_JSON.value, 'w') as f:
      json.dump(results, f, indent=1)


if __name__ == '__main__':
  app.run(main)
