"""The learning-rate finder: the sweep's rates, its curve on a toy task (falls,
then blows up), fastai's suggestions, determinism, its files and no workdir,
the bottleneck phase, and the command."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import fsv
from fsv import steps as steps_lib
from fsv.data.decode import Dataset, Split, SplitReport
from fsv.lr_find import learning_rates, smooth, suggest, valley

from conftest import _two_class_dataset, pretrained_backbone_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 24
STEPS = 100


def _toy_dataset(per_class=16):
  """Two classes told apart by their bright colour channel: separable in a few steps."""
  rng = np.random.default_rng(0)

  def split(n):
    labels = np.repeat([0, 1], n).astype(np.int32)
    images = rng.integers(0, 60, (len(labels), SIZE, SIZE, 3)).astype(np.uint8)
    images[np.arange(len(labels)), :, :, labels] += 180
    return Split(images=images, labels=labels, files=tuple(map(str, range(len(labels)))))

  splits = {'train': split(per_class), 'validation': split(2), 'test': split(2)}
  return Dataset(class_names=('a', 'b'), splits=splits,
                 report={k: SplitReport(len(v.labels), (), 0) for k, v in splits.items()})


def _config():
  # SGD with label smoothing: on separable data plain cross-entropy reaches
  # exactly 0 once the classes are apart, its gradients vanish and even huge
  # rates change nothing; smoothed targets keep an optimum above 0, so large
  # steps overshoot and the loss blows up, as on real data.
  config = fsv.base_config()
  config.data.dir = 'unused-when-a-dataset-is-passed'
  config.data.image_size = (SIZE, SIZE)
  config.model.conv_features = (8, 8)
  config.model.dense_units = 16
  config.model.flatten_dropout = 0.0
  config.train.update(epochs=3, batch_size=8, optimizer='sgd', momentum=0.9,
                      learning_rate=1e-3, label_smoothing=0.1,
                      schedule='one_cycle')  # the sweep replaces the schedule
  return config


SWEEP = dict(steps=STEPS, start_lr=1e-4, end_lr=1e3)


@pytest.fixture(scope='module')
def toy(tmp_path_factory):
  """One sweep on the toy task, run from an empty folder, with the jitted
  step it trained with: (finding, out dir, the folder's contents, step)."""
  cwd = tmp_path_factory.mktemp('cwd')
  made = []

  def recording(*args, **kwargs):
    made.append(make_train_step(*args, **kwargs))
    return made[-1]

  make_train_step = steps_lib.make_train_step
  previous = os.getcwd()
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(steps_lib, 'make_train_step', recording)
    os.chdir(cwd)
    try:
      finding = fsv.lr_find(_config(), _toy_dataset(), **SWEEP, out_dir='out',
                            config_name='toy')
    finally:
      os.chdir(previous)
  return finding, cwd / 'out', sorted(os.listdir(cwd)), made


def test_learning_rates_grow_exponentially_from_start_to_end(toy):
  finding = toy[0]
  rates = learning_rates(1e-4, 1e3, STEPS)
  assert rates[0] == pytest.approx(1e-4) and rates[-1] == pytest.approx(1e3)
  np.testing.assert_allclose(np.diff(np.log(rates)), np.log(1e7) / (STEPS - 1))
  taken = len(finding.learning_rates)
  assert 10 < taken <= STEPS
  np.testing.assert_array_equal(finding.learning_rates, rates[:taken])
  assert len(finding.losses) == len(finding.smoothed) == taken


def test_one_step_function_compiled_once(toy):
  made = toy[3]
  assert len(made) == 1
  assert made[0]._cache_size() == 1  # lr_scale changes every step, the program does not


def test_loss_falls_then_blows_up_and_suggestions_lie_below_the_blow_up(toy):
  finding = toy[0]
  smoothed, rates = finding.smoothed, finding.learning_rates
  assert finding.diverged and len(rates) < 0.8 * STEPS  # well before end_lr
  low = int(np.nanargmin(smoothed))
  assert smoothed[low] < 0.8 * smoothed[0]  # it learned
  assert smoothed[-1] > 4 * smoothed[low] or not np.isfinite(smoothed[-1])
  assert finding.losses[-1] > 10 * finding.losses[low] or not np.isfinite(finding.losses[-1])
  for name in ('valley', 'steepest', 'minimum'):
    assert 1e-4 < finding.suggestions[name] < 1e3, name
  for name in ('valley', 'steepest'):
    # on the falling part: below the lowest loss's rate, far below the blow-up
    assert finding.suggestions[name] <= rates[low] < rates[-1], name
    assert smoothed[finding.suggestion_steps[name]] < smoothed[0], name
  # fastai reads the curve without its first tenth and last 5 steps
  at = finding.suggestion_steps['minimum']
  assert at == STEPS // 10 + np.argmin(smoothed[STEPS // 10:-5])
  assert finding.suggestions['minimum'] == pytest.approx(rates[at] / 10)


def test_writes_json_and_png_to_out_and_no_workdir(toy):
  finding, out, cwd_contents, _ = toy
  assert cwd_contents == ['out']
  assert sorted(os.listdir(out)) == ['lr_find.json', 'lr_find.png']
  assert [os.path.basename(p) for p in finding.written] == ['lr_find.json', 'lr_find.png']
  assert (out / 'lr_find.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  stored = json.loads((out / 'lr_find.json').read_text())
  assert stored['config'] == 'toy' and stored['phase'] == 'train'
  assert stored['steps'] == STEPS and stored['steps_taken'] == len(finding.learning_rates)
  np.testing.assert_allclose(stored['learning_rates'], finding.learning_rates)
  np.testing.assert_allclose(stored['losses'], finding.losses)
  np.testing.assert_allclose(stored['smoothed_losses'], finding.smoothed)
  assert stored['suggestions'] == pytest.approx(finding.suggestions)
  assert stored['config_learning_rate'] == 1e-3


def test_same_seed_same_curve(toy):
  again = fsv.lr_find(_config(), _toy_dataset(), **SWEEP)
  np.testing.assert_array_equal(again.losses, toy[0].losses)
  assert again.suggestions == toy[0].suggestions and not again.written


def test_bottleneck_phase_sweeps_the_head_on_cached_features(tmp_path):
  config = pretrained_backbone_config('vgg16', 32, str(tmp_path / 'cache'))
  config.train.epochs = 0  # so the bottleneck phase is the one to sweep
  config.bottleneck.update(batch_size=4, optimizer='adam')
  finding = fsv.lr_find(config, _two_class_dataset(32, train=4, held_out=1), steps=12,
                        end_lr=1.0)
  assert finding.phase == 'bottleneck'
  assert 0 < len(finding.losses) <= 12 and np.isfinite(finding.losses[0])
  np.testing.assert_allclose(finding.learning_rates, learning_rates(1e-7, 1.0, 12)[
      :len(finding.losses)])


@pytest.mark.parametrize('kwargs, message', [
    (dict(steps=5), 'steps=5: must be an integer >= 10'),
    (dict(start_lr=1.0, end_lr=0.1), 'start_lr=1.0 must be below end_lr=0.1'),
    (dict(start_lr=1e-3, end_lr=1e-3), 'must be below end_lr'),
    (dict(start_lr=0.0), 'start_lr=0.0: must be a finite number > 0'),
    (dict(end_lr=float('inf')), 'end_lr=inf: must be a finite number > 0'),
    (dict(phase='head'), "phase='head': must be one of"),
    (dict(phase='bottleneck'), "the model 'small_convnet' has no separate head"),
])
def test_bad_sweep_settings_are_config_errors_before_any_work(kwargs, message):
  with pytest.raises(fsv.ConfigError, match=message.replace('(', r'\(').replace(')', r'\)')):
    fsv.lr_find(_config(), **kwargs)  # no data: the check comes first


def test_smoothing_is_fastais_debiased_average():
  np.testing.assert_allclose(smooth([2.0, 2.0, 2.0]), 2.0)
  second = (0.98 * 0.02 * 1.0 + 0.02 * 3.0) / (1 - 0.98**2)
  np.testing.assert_allclose(smooth([1.0, 3.0]), [1.0, second])


def test_suggestions_as_fastai_reads_them():
  # Down for six points, then up: fastai's valley is index 2 of the longest
  # valley's (its start, -1, + int(6/3) + int(2/2)); steepest, 0.7 -> 0.4.
  curve = np.array([1.0, 0.9, 0.7, 0.4, 0.2, 0.1, 0.3, 0.8, 2.0])
  assert valley(None, curve) == 2
  lrs = np.geomspace(1e-4, 1e-2, 20)
  losses = np.concatenate([[1.0, 1.0], curve, [3.0, 4, 5, 6, 7, 8, 9, 9, 9]])
  rates, at = suggest(lrs, losses, 20)  # skips the first 2 and the last 5
  assert at == {'valley': 4, 'steepest': 4, 'minimum': 7}
  assert rates == pytest.approx({'valley': lrs[4], 'steepest': lrs[4], 'minimum': lrs[7] / 10})
  rates, at = suggest(lrs, np.where(np.arange(20) > 5, np.nan, losses), 20)
  assert at['minimum'] == 5  # read only up to the first NaN
  rates, _ = suggest(lrs[:7], losses[:7], 20)  # diverged too early to read
  assert rates == {'valley': None, 'steepest': None, 'minimum': None}


def test_command_prints_suggestions_and_the_files_it_wrote(tmp_path, make_image_folder):
  classes = lambda n: {'cats': n, 'dogs': n}
  data = make_image_folder({'train': classes(4), 'validation': classes(1), 'test': classes(1)})
  done = subprocess.run(
      [sys.executable, '-m', 'experiments.lr_find', '--config=scratch', f'--config.data.dir={data}',
       f'--config.data.cache_dir={tmp_path / "cache"}', '--config.data.image_size=(24,24)',
       '--config.model.conv_features=(4,4)', '--config.model.dense_units=8',
       '--config.train.batch_size=4', '--steps=10', f'--out={tmp_path / "out"}'],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-3000:]
  lines = done.stdout.strip().splitlines()
  assert lines[0].startswith('train phase: ')
  assert [line.split(':')[0] for line in lines[1:4]] == ['valley', 'steepest', 'minimum / 10']
  assert lines[4:] == [f'wrote {tmp_path / "out" / "lr_find.json"}',
                       f'wrote {tmp_path / "out" / "lr_find.png"}']
  assert sorted(os.listdir(tmp_path)) == ['cache', 'data', 'out']
  assert 'scratch.py' in json.loads((tmp_path / 'out' / 'lr_find.json').read_text())['config']
