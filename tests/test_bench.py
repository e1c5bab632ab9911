"""The benchmark harness (bench/): the coordinator end to end with the fsv side
alone, tiny; the alternation, medians and ratios; the worker protocol; the
torch side's model, step and warp. None of it needs TensorFlow, the torch
tests skip without torch, and nothing here is timed."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from bench import rows
from bench import run as bench_run
from bench import worker

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _bench(tmp_path, rows: str, peers: str, reps: int = 1) -> list:
  """The rows of `python -m bench.run` at its smallest: one step of 4 images,
  48x48; the workers log what JAX compiles."""
  out = tmp_path / 'bench.json'
  subprocess.run(
      [sys.executable, '-m', 'bench.run', f'--json={out}', f'--rows={rows}', f'--reps={reps}',
       '--warmup=0', '--steps=1', '--batch_size=4', '--image_size=48', f'--peers={peers}',
       f'--worker_logs={tmp_path / "logs"}'],
      cwd=ROOT, check=True, capture_output=True, text=True,
      env=dict(os.environ, JAX_LOG_COMPILES='1'))
  return json.loads(out.read_text())


def test_fsv_side_alone_end_to_end(tmp_path):
  [row] = _bench(tmp_path, rows='1', peers='', reps=2)
  assert row['name'] == 'convnet_train_step'
  assert row['fsv_images_per_s'] > 0
  assert len(row['fsv_images_per_s_reps']) == 2
  assert row['fsv_peak_rss_mb'] > 0
  assert row['fsv_info']['backend'] == 'jax'
  assert row['keras_tf_images_per_s'] is None and row['keras_jax_images_per_s'] is None
  assert row['torch_images_per_s'] is None and row['torch_compile_images_per_s'] is None
  assert row['ratio_keras_tf'] is None and row['ratio_torch'] is None
  assert (row['reps'], row['steps'], row['batch_size'], row['image_size']) == (2, 1, 4, 48)
  assert row['machine']['cores'] >= 1 and row['date']
  assert row['versions']['jax']
  assert os.listdir(tmp_path / 'logs') == ['1_convnet_train_step_fsv.log']
  # Compiled once: the second repetition (its one step) is timed, not compiled.
  log = (tmp_path / 'logs' / '1_convnet_train_step_fsv.log').read_text()
  assert log.count('Compiling jit(train_step)') == 1


def _book_convnet_train_flops(size: int, batch: int) -> int:
  """A training step's multiply-adds x 2 by hand: forward, input gradient and
  kernel gradient of every layer, except the first convolution's input gradient."""
  first = rest = 0
  channels = 3
  for width in (32, 64, 128, 128):
    size -= 2
    macs = size * size * width * 9 * channels
    first, rest = (macs, rest) if channels == 3 else (first, rest + macs)
    size //= 2
    channels = width
  rest += size * size * channels * 512 + 512
  return 2 * batch * (2 * first + 3 * rest)


def test_mfu_counts_the_models_flops_whatever_the_convolution_algorithm(monkeypatch):
  from bench import mfu

  # A GPU's compiler turns convolutions into cuDNN calls that XLA's count of
  # the compiled step leaves out, so the count must not need compiling.
  def not_compiled(*args, **kwargs):
    raise AssertionError('the FLOP count compiled the step')
  monkeypatch.setattr(jax.stages.Lowered, 'compile', not_compiled)
  settings = {'batch_size': 4, 'image_size': 48, 'dtype': 'float32', 'steps': 1, 'seed': 0}
  figures = mfu.measure(os.path.join(ROOT, 'configs', 'scratch.py'), settings, peak_tflops=2.0)
  # On CPU this step trains by Winograd (XLA counts about 0.6x the model's
  # FLOPs then); the count is the model's, plus the elementwise work.
  by_hand = _book_convnet_train_flops(48, 4) / 1e9
  assert by_hand <= figures['model_gflop_per_step'] <= 1.3 * by_hand
  assert figures['images_per_s'] == pytest.approx(4 / figures['step_seconds'])
  assert figures['achieved_tflops'] == pytest.approx(
      figures['model_gflop_per_step'] / 1e3 / figures['step_seconds'])
  assert figures['mfu'] == pytest.approx(figures['achieved_tflops'] / 2.0)


def test_coordinator_and_fsv_side_import_no_peer_framework():
  subprocess.run(
      [sys.executable, '-c', 'import sys, bench.run, bench.fsv_side; '
       'loaded = [m for m in ("tensorflow", "keras", "torch") if m in sys.modules]; '
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


def test_summary_has_medians_and_a_ratio_against_every_peer():
  row = bench_run.summarize(
      {'fsv': [3.0, 9.0, 4.0], 'keras-tf': [2.0, 1.0, 8.0], 'torch': [8.0, 8.0, 1.0]},
      {'fsv': 100.0, 'keras-tf': 200.0}, {'fsv': {'backend': 'jax'}})
  assert row['fsv_images_per_s'] == 4.0 and row['keras_tf_images_per_s'] == 2.0
  assert row['torch_images_per_s'] == 8.0
  assert row['ratio_keras_tf'] == 2.0 and row['ratio_torch'] == 0.5
  # Peers that did not run the row (not asked for, or without it: torch-compile).
  assert row['ratio_keras_jax'] is None and row['ratio_torch_compile'] is None
  assert row['fsv_peak_rss_mb'] == 100.0 and row['keras_tf_peak_rss_mb'] == 200.0
  assert row['keras_jax_images_per_s'] is None and row['keras_jax_peak_rss_mb'] is None
  assert 'ratio' not in row and not any(key.startswith('peer_') for key in row)
  alone = bench_run.summarize({'fsv': [1.0]}, {}, {})
  assert [alone[f'ratio_{c}'] for c in ('keras_tf', 'keras_jax', 'torch', 'torch_compile')] \
      == [None] * 4


def test_table_shows_the_sides_that_ran_and_a_dash_for_a_skipped_row():
  columns = bench_run.table(['fsv', 'torch'])
  assert [c[0] for c in columns] == ['row', 'name', 'fsv img/s', 'torch img/s', 'fsv/torch']
  row = bench_run.summarize({'fsv': [2.0]}, {}, {})
  line = bench_run.table_row(columns, dict(row, row='4', name='vgg16_forward'))
  assert line.split() == ['4', 'vgg16_forward', '2.0', '-', '-']


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


def test_torch_sides_have_the_convnet_rows_only():
  assert worker.implements('torch', 'convnet_train_step')
  assert worker.implements('torch-compile', 'epoch_from_jpeg')
  assert not worker.implements('torch', 'vgg16_forward')
  assert not worker.implements('torch-compile', 'convnet_train_step_augmented_imagedatagenerator')
  assert all(worker.implements(side, r.name) for side in ('fsv', 'keras-tf') for r in rows.ROWS)
  torch_side = pytest.importorskip('bench.torch_side')
  assert sorted(torch_side.TASKS) == sorted(worker.TORCH_ROWS)


def test_torch_convnet_has_the_parameters_of_fsv_and_keras():
  torch_side = pytest.importorskip('bench.torch_side')
  import jax
  from bench import fsv_side
  from fsv import models

  settings = dict(image_size=48, batch_size=4, dtype='float32')
  config = fsv_side.config_for('scratch', settings)
  model = models.build(config.model, 2)
  variables = jax.eval_shape(
      lambda key: models.init_variables(config.model, model, key, (48, 48, 3)),
      jax.random.PRNGKey(0))
  fsv_count = sum(leaf.size for leaf in jax.tree.leaves(variables['params']))
  assert torch_side.parameters(torch_side.convnet(48)) == fsv_count
  # Keras's model.summary() of the book's convnet at 150x150 (listing 5.5);
  # dropout and the rescale add none.
  assert torch_side.parameters(torch_side.convnet(150, dropout=0.5, rescale=False)) \
      == 3_453_121


def test_torch_train_steps_lower_the_loss_on_a_fixed_batch():
  torch = pytest.importorskip('torch')
  from bench import torch_side

  torch.manual_seed(0)
  images, labels = rows.random_images(8, 48, seed=0)
  step = torch_side.trainer(torch_side.convnet(48), compiled=False)
  x, y = torch_side.to_tensor(images), torch.from_numpy(labels.astype(np.float32))
  losses = [step(x, y) for _ in range(6)]
  assert losses[-1] < losses[0]


def test_torch_warp_is_the_identity_without_ranges_and_flips_when_asked():
  torch = pytest.importorskip('torch')
  from bench import torch_side

  torch.manual_seed(0)
  x = torch_side.to_tensor(rows.random_images(16, 48, seed=0)[0])
  still = dict(rows.AUGMENTATION, rotation_range=0.0, width_shift_range=0.0,
               height_shift_range=0.0, shear_range=0.0, zoom_range=0.0,
               horizontal_flip=False)
  torch.testing.assert_close(torch_side.augment(x, still) * 255, x, atol=1e-2, rtol=0)
  out = torch_side.augment(x, dict(still, horizontal_flip=True)) * 255
  flipped = [bool(torch.allclose(o, i.flip(-1), atol=1e-2)) for o, i in zip(out, x)]
  unchanged = [bool(torch.allclose(o, i, atol=1e-2)) for o, i in zip(out, x)]
  assert all(f != u for f, u in zip(flipped, unchanged))  # each image one or the other
  assert any(flipped) and any(unchanged)
  warped = torch_side.augment(x)  # the book's ranges: pixels moved, rescaled, same shape
  assert warped.shape == x.shape and not torch.allclose(warped * 255, x, atol=1)
  assert 0 <= warped.min() and warped.max() <= 1


def test_torch_epoch_trains_on_every_image_of_the_folder(make_image_folder):
  pytest.importorskip('torch')
  from bench import torch_side

  root = make_image_folder({'train': {'cats': 3, 'dogs': 2}})
  task = torch_side.epoch_from_jpeg(
      dict(data_dir=str(root), image_size=48, batch_size=2, seed=0))
  assert task.info['parameters'] == torch_side.parameters(torch_side.convnet(48))
  assert task.run() == 5


def test_torch_peer_skips_the_rows_it_lacks(tmp_path):
  pytest.importorskip('torch')
  first, vgg = _bench(tmp_path, rows='1,4', peers='torch')
  assert first['torch_images_per_s'] > 0 and first['ratio_torch'] > 0
  assert first['torch_info']['parameters'] == 307_393  # the book's convnet at 48x48
  assert first['ratio_keras_tf'] is None and first['torch_compile_images_per_s'] is None
  assert vgg['name'] == 'vgg16_forward' and vgg['fsv_images_per_s'] > 0
  assert vgg['torch_images_per_s'] is None and vgg['ratio_torch'] is None
  assert first['versions']['torch']
  assert sorted(os.listdir(tmp_path / 'logs')) == [
      '1_convnet_train_step_fsv.log', '1_convnet_train_step_torch.log',
      '4_vgg16_forward_fsv.log']
