"""The benchmark harness (bench/): the coordinator end to end with the fsv side
alone, tiny; the alternation, medians and ratio; the worker protocol.
None of it needs TensorFlow, and nothing here is timed."""
import json
import os
import subprocess
import sys

import pytest

from bench import rows
from bench import run as bench_run
from bench import worker

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_fsv_side_alone_end_to_end(tmp_path):
  out = tmp_path / 'bench.json'
  subprocess.run(
      [sys.executable, '-m', 'bench.run', f'--json={out}', '--rows=1', '--reps=1',
       '--warmup=0', '--steps=1', '--batch_size=4', '--image_size=48', '--peers=',
       f'--worker_logs={tmp_path / "logs"}'],
      cwd=ROOT, check=True, capture_output=True, text=True)
  [row] = json.loads(out.read_text())
  assert row['name'] == 'convnet_train_step'
  assert row['fsv_images_per_s'] > 0
  assert len(row['fsv_images_per_s_reps']) == 1
  assert row['fsv_peak_rss_mb'] > 0
  assert row['fsv_info']['backend'] == 'jax'
  assert row['peer_images_per_s'] is None and row['keras_jax_images_per_s'] is None
  assert row['ratio'] is None
  assert (row['reps'], row['steps'], row['batch_size'], row['image_size']) == (1, 1, 4, 48)
  assert row['machine']['cores'] >= 1 and row['date']
  assert row['versions']['jax']
  assert os.listdir(tmp_path / 'logs') == ['1_convnet_train_step_fsv.log']


def test_coordinator_and_fsv_side_import_no_peer_framework():
  subprocess.run(
      [sys.executable, '-c', 'import sys, bench.run, bench.fsv_side; '
       'loaded = [m for m in ("tensorflow", "keras") if m in sys.modules]; '
       'assert not loaded, loaded'],
      cwd=ROOT, check=True)


def test_repetitions_alternate_in_rotated_order_after_the_warmup():
  calls = []

  def run(side):
    calls.append(side)
    return {'images': 10, 'seconds': len(calls)}  # every call slower than the last

  rates = bench_run.alternate(run, ['fsv', 'keras-tf', 'keras-jax'], warmup=1, reps=2)
  assert calls == ['fsv', 'keras-tf', 'keras-jax',   # warm-up, not counted
                   'keras-tf', 'keras-jax', 'fsv',
                   'keras-jax', 'fsv', 'keras-tf']
  assert rates == {'fsv': [10 / 6, 10 / 8], 'keras-tf': [10 / 4, 10 / 9],
                   'keras-jax': [10 / 5, 10 / 7]}


def test_summary_has_medians_and_the_ratio_against_keras_tensorflow():
  row = bench_run.summarize({'fsv': [3.0, 9.0, 4.0], 'keras-tf': [2.0, 1.0, 8.0]},
                            {'fsv': 100.0, 'keras-tf': 200.0}, {'fsv': {'backend': 'jax'}})
  assert row['fsv_images_per_s'] == 4.0 and row['peer_images_per_s'] == 2.0
  assert row['ratio'] == 2.0
  assert row['fsv_peak_rss_mb'] == 100.0 and row['peer_peak_rss_mb'] == 200.0
  assert row['keras_jax_images_per_s'] is None and row['keras_jax_peak_rss_mb'] is None
  assert bench_run.summarize({'fsv': [1.0]}, {}, {})['ratio'] is None


def test_rows_are_selected_by_id_or_number():
  assert [r.id for r in rows.select(['2', '5'])] == ['2a', '2b', '5']
  assert [r.id for r in rows.select(['2b'])] == ['2b']
  with pytest.raises(ValueError, match='unknown rows'):
    rows.select(['7'])


def test_worker_answers_ready_each_repetition_and_peak_memory():
  prepared = []
  task = rows.Task(run=lambda: 5, info={'backend': 'test'},
                   prepare=lambda: prepared.append(True))
  answers = []
  worker.serve(task, ['run\n', 'run\n', 'stop\n', 'run\n'], answers.append)
  assert answers[0] == {'ready': {'backend': 'test'}}
  assert [a['images'] for a in answers[1:3]] == [5, 5]
  assert all(a['seconds'] >= 0 for a in answers[1:3]) and len(prepared) == 2
  assert answers[3]['peak_rss_mb'] > 0 and len(answers) == 4  # nothing after stop
