r"""One side of one benchmark row in a process of its own.

  python -m bench.worker --side=fsv|keras-tf|keras-jax|torch|torch-compile \
      --row=NAME --settings=JSON

A process of its own because Keras fixes its backend when it is first
imported (KERAS_BACKEND is set here, before that), and so that its peak RSS
is this side's alone. The torch sides have only TORCH_ROWS: the coordinator
asks `implements` before it starts a worker. Protocol, one JSON object per
line: once set up, the worker writes {"ready": info}; each "run" line is one
repetition, answered {"seconds": s, "images": n}; "stop" is answered
{"peak_rss_mb": m}. A failure is answered {"error": traceback}. The protocol
has the process's original stdout to itself: anything the libraries print
goes to stderr.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import sys
import time
import traceback

from bench import rows

KERAS_BACKENDS = {'keras-tf': 'tensorflow', 'keras-jax': 'jax'}
TORCH_SIDES = ('torch', 'torch-compile')
SIDES = ('fsv',) + tuple(KERAS_BACKENDS) + TORCH_SIDES
# bench.torch_side.TASKS's rows, named here so that the coordinator need not import torch.
TORCH_ROWS = ('convnet_train_step', 'convnet_train_step_augmented_layers', 'epoch_from_jpeg')


def implements(side: str, row: str) -> bool:
  """Whether `side` has a task for the row named `row`."""
  return side not in TORCH_SIDES or row in TORCH_ROWS


def _protocol_stream():
  """The original stdout, for protocol lines only; fd 1 (C and Python prints) -> stderr."""
  stream = os.fdopen(os.dup(1), 'w', buffering=1)
  os.dup2(2, 1)
  sys.stdout = sys.stderr
  return stream


def _tasks(side: str) -> dict:
  """The side's task builders by row name; imports only that side's libraries."""
  if side == 'fsv':
    from bench import fsv_side
    return fsv_side.TASKS
  if side in TORCH_SIDES:
    from bench import torch_side
    compiled = side == 'torch-compile'
    return {row: functools.partial(build, compiled=compiled)
            for row, build in torch_side.TASKS.items()}
  os.environ['KERAS_BACKEND'] = KERAS_BACKENDS[side]
  from bench import keras_side
  return keras_side.TASKS


def peak_rss_mb() -> float:
  """This process's peak resident memory (VmHWM; ru_maxrss where /proc is absent)."""
  try:
    with open('/proc/self/status') as status:
      for line in status:
        if line.startswith('VmHWM:'):
          return int(line.split()[1]) / 1024
  except OSError:
    pass
  kib = 1 / 1024 if sys.platform == 'darwin' else 1  # bytes there, KiB on Linux
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * kib / 1024


def repetition(task: rows.Task) -> dict:
  """The one timing loop of every side: one untimed prepare, one timed run."""
  task.prepare()
  started = time.perf_counter()
  images = task.run()
  return {'seconds': time.perf_counter() - started, 'images': images}


def serve(task: rows.Task, requests, answer) -> None:
  answer({'ready': task.info})
  for line in requests:
    request = line.strip()
    if request == 'run':
      answer(repetition(task))
    elif request == 'stop':
      answer({'peak_rss_mb': peak_rss_mb()})
      return
    else:
      raise ValueError(f'unknown request {request!r}')


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--side', choices=SIDES, required=True)
  parser.add_argument('--row', choices=[r.name for r in rows.ROWS], required=True)
  parser.add_argument('--settings', type=json.loads, required=True)
  args = parser.parse_args(argv)
  protocol = _protocol_stream()
  answer = lambda message: protocol.write(json.dumps(message) + '\n')
  try:
    serve(_tasks(args.side)[args.row](args.settings), sys.stdin, answer)
  except Exception:  # the coordinator shows it with the log's name
    traceback.print_exc()
    answer({'error': traceback.format_exc()})
    sys.exit(1)


if __name__ == '__main__':
  main()
