"""Sweeps over seeds, folds and settings; their statistics; members trained together."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

import fsv
from fsv import members as members_lib
from fsv import statistics
from fsv import sweeps
from fsv.data import holdout
from fsv.data.decode import Dataset, Split
from fsv.pretrained import layout

from conftest import _two_class_dataset, pretrained_backbone_config
from test_train import _config, _tiny_dataset, _without_seconds

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_axes_give_every_combination_and_the_command_line_overrides_the_file():
  assert sweeps.members({'seed': [0, 1], 'train.learning_rate': [1e-3, 3e-3]}) == [
      {'seed': 0, 'train.learning_rate': 1e-3}, {'seed': 0, 'train.learning_rate': 3e-3},
      {'seed': 1, 'train.learning_rate': 1e-3}, {'seed': 1, 'train.learning_rate': 3e-3}]
  assert sweeps.combine([{'seed': 0, 'model.name': 'vgg16'}], {'seed': [1, 2]}) == [
      {'model.name': 'vgg16', 'seed': 1}, {'model.name': 'vgg16', 'seed': 2}]
  # folds on the command line replace the file's seeds, not multiply them
  assert sweeps.combine({'seed': range(16)}, {'data.fold': [0, 1]}) == [
      {'data.fold': 0}, {'data.fold': 1}]
  assert sweeps.parse_values('0:3') == [0, 1, 2]
  assert sweeps.parse_values('1e-4,3e-4') == [1e-4, 3e-4]
  assert sweeps.parse_values('vgg16,efficientnet_lite0') == ['vgg16', 'efficientnet_lite0']
  assert sweeps.member_name({'train.learning_rate': 0.001, 'seed': 2}) == (
      'seed=2,train.learning_rate=0.001')


def test_interval_is_students_t_over_the_members():
  stat = statistics.interval([0.95, 0.96, 0.97])
  assert stat['mean'] == pytest.approx(0.96) and stat['std'] == pytest.approx(0.01)
  half = 4.302652729911275 * 0.01 / np.sqrt(3)  # t(0.975, 2 degrees of freedom)
  assert stat['ci95'] == pytest.approx([0.96 - half, 0.96 + half])
  assert statistics.interval([0.9])['ci95'] is None


def test_paired_test_tells_a_real_difference_from_noise():
  rng = np.random.default_rng(0)
  truth = rng.random(1000) < 0.9
  noisy = truth.copy()  # as accurate, wrong on 10 other images
  noisy[rng.choice(np.flatnonzero(truth), 10, replace=False)] = False
  noisy[rng.choice(np.flatnonzero(~truth), 10, replace=False)] = True
  better = truth | (rng.random(1000) < 0.5)  # right on half the images truth missed
  same = statistics.paired(truth[None], noisy[None])
  assert not same['distinguishable'] and same['ci95'][0] < 0 < same['ci95'][1]
  apart = statistics.paired(better[None], truth[None])
  assert apart['distinguishable'] and apart['difference'] > 0.03 and apart['p_value'] < 0.01
  assert apart['mcnemar']['only_b_right'] == 0 and apart['mcnemar']['p_value'] < 1e-6


def test_a_sweep_runs_skips_what_is_done_and_summarises(tmp_path, monkeypatch):
  data = _tiny_dataset()
  sweep = {'seed': [0, 1], 'train.learning_rate': [3e-3, 1e-30]}
  summary = sweeps.run(_config(epochs=2), sweep, str(tmp_path), dataset=data)
  assert sorted(os.listdir(tmp_path)) == sorted([
      'seed=0,train.learning_rate=1e-30', 'seed=0,train.learning_rate=0.003',
      'seed=1,train.learning_rate=1e-30', 'seed=1,train.learning_rate=0.003',
      'summary.json', 'summary.md', 'summary.png'])
  assert json.loads((tmp_path / 'summary.json').read_text()) == summary
  learned = summary['settings']['train.learning_rate=0.003']
  frozen = summary['settings']['train.learning_rate=1e-30']
  assert learned['members'] == ['seed=0,train.learning_rate=0.003',
                                'seed=1,train.learning_rate=0.003']
  assert learned['test_accuracy']['n'] == 2 and learned['test_accuracy']['ci95']
  (comparison,) = summary['comparisons']
  assert (comparison['a'], comparison['b']) == ('train.learning_rate=0.003',
                                                'train.learning_rate=1e-30')
  assert comparison['difference'] == pytest.approx(
      learned['test_accuracy']['mean'] - frozen['test_accuracy']['mean'])
  assert '| train.learning_rate=0.003 | 2 |' in (tmp_path / 'summary.md').read_text()

  def no_training(*args, **kwargs):
    raise AssertionError('finished members are not trained again')

  monkeypatch.setattr('fsv.phases.fit', no_training)
  assert sweeps.run(_config(epochs=2), sweep, str(tmp_path), dataset=data) == summary


def test_folds_pool_train_and_validation_stratified_and_disjoint():
  dataset = _two_class_dataset(8, train=9, held_out=3)
  dataset = Dataset(dataset.class_names, {  # file names that say their split
      name: Split(split.images, split.labels, tuple(f'{name}/{f}' for f in split.files))
      for name, split in dataset.splits.items()}, dataset.report)
  pooled = set(dataset.splits['train'].files) | set(dataset.splits['validation'].files)
  seen = []
  for fold in range(4):
    split = holdout.with_fold(dataset, 4, fold, seed=0)
    validation = set(split.splits['validation'].files)
    assert validation | set(split.splits['train'].files) == pooled
    assert not validation & set(split.splits['train'].files)
    assert np.bincount(split.splits['validation'].labels).tolist() in ([3, 3], [2, 2])
    assert split.splits['test'] is dataset.splits['test']
    seen += sorted(validation)
  assert sorted(seen) == sorted(pooled)  # every image validates exactly once
  again = holdout.with_fold(dataset, 4, 1, seed=0).splits['validation'].files
  assert again == holdout.with_fold(dataset, 4, 1, seed=0).splits['validation'].files
  assert again != holdout.with_fold(dataset, 4, 1, seed=1).splits['validation'].files


def test_a_sweep_over_folds_reports_the_cross_validated_accuracy(tmp_path):
  config = _config(epochs=1)
  config.data.folds = 3
  summary = sweeps.run(config, {'data.fold': [0, 1, 2]}, str(tmp_path), dataset=_tiny_dataset())
  (setting,) = summary['settings'].values()
  assert setting['val_accuracy']['n'] == 3 and setting['members'] == [
      'data.fold=0', 'data.fold=1', 'data.fold=2']


def _assert_same_run(alone, together):
  for a, t in zip(_without_seconds(alone.history), _without_seconds(together.history),
                  strict=True):
    assert a.keys() == t.keys() and a['phase'] == t['phase'] and a['epoch'] == t['epoch']
    for key in set(a) - {'phase', 'epoch'}:
      assert t[key] == pytest.approx(a[key], abs=1e-6), key
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6),
                         jax.device_get(alone.params), jax.device_get(together.params))


def test_members_trained_together_are_the_runs_trained_alone(tmp_path):
  data = _tiny_dataset()
  configs = []
  for seed, learning_rate in ((0, 3e-3), (1, 3e-3), (2, 1e-3)):
    config = fsv.validate_config(_config(epochs=3, learning_rate=learning_rate))
    config.seed = seed
    configs.append(config)
  alone = [fsv.fit(c, dataset=data, workdir=str(tmp_path / f'alone{i}'))
           for i, c in enumerate(configs)]
  together = members_lib.fit_members(configs, [str(tmp_path / f'together{i}') for i in range(3)],
                                     dataset=data)
  for a, t in zip(alone, together):
    _assert_same_run(a, t)
    assert json.loads(open(os.path.join(t.workdir, 'results.json')).read())['best_epoch'] == (
        a.results['best_epoch'])


def test_heads_on_one_base_train_together_as_alone(tmp_path):
  data = _two_class_dataset(32, 4, 3)
  config = pretrained_backbone_config('vgg16', 32, str(tmp_path / 'cache'))
  from fsv import models
  model = fsv.build_model(config.model, data.num_classes)
  base = models.init_variables(config.model, model, jax.random.PRNGKey(7), (32, 32, 3))['params']
  layout.write_npz(tmp_path / 'base.npz', {k: v for k, v in base.items() if k != 'head'})
  config.model.weights = str(tmp_path / 'base.npz')  # the same base for every seed
  config.bottleneck.update(epochs=2, batch_size=4, learning_rate=1e-3)
  config.train.epochs = 0
  configs = []
  for seed in (0, 1):
    member = fsv.validate_config(config)
    member.seed = seed
    configs.append(member)
  alone = [fsv.fit(c, dataset=data) for c in configs]
  together = members_lib.fit_members(configs, [str(tmp_path / f'm{i}') for i in range(2)],
                                     dataset=data)
  for a, t in zip(alone, together):
    _assert_same_run(a, t)


def test_what_cannot_train_together_is_named():
  base = fsv.validate_config(_config(epochs=1))
  other = fsv.validate_config(_config(epochs=1, batch_size=4))
  assert "they differ in ['train.batch_size']" in members_lib.cannot_train_together(
      [base, other])
  random_base = fsv.validate_config(pretrained_backbone_config('vgg16', 32, ''))
  random_base.bottleneck.epochs, random_base.train.epochs = 1, 0
  assert 'bases are random' in members_lib.cannot_train_together([random_base, random_base])
  with pytest.raises(fsv.ConfigError, match='cannot train together: they differ in'):
    members_lib.fit_members([base, other], ['a', 'b'])


def test_sweep_command_runs_a_config_files_sweep_with_command_line_axes(tmp_path):
  from PIL import Image
  data = tmp_path / 'data'
  rng = np.random.default_rng(0)
  for split, count in (('train', 6), ('validation', 2), ('test', 2)):
    for name, colour in (('a', (200, 30, 30)), ('b', (30, 30, 200))):
      (data / split / name).mkdir(parents=True)
      for i in range(count):
        pixels = rng.integers(0, 50, (30, 30, 3)) + np.array(colour) * 0.7
        Image.fromarray(pixels.astype(np.uint8)).save(data / split / name / f'{i}.png')
  config_file = tmp_path / 'tiny.py'
  config_file.write_text(
      'from fsv import config as config_lib\n'
      'def get_config():\n'
      '  config = config_lib.base()\n'
      f'  config.data.update(dir={str(data)!r}, image_size=(24, 24), '
      f'cache_dir={str(tmp_path / "cache")!r})\n'
      '  config.model.update(conv_features=(4, 4), dense_units=8)\n'
      '  config.train.update(epochs=1, batch_size=4)\n'
      '  return config\n'
      'def get_sweep():\n'
      '  return {"seed": [0, 1], "train.learning_rate": [1e-3]}\n')
  done = subprocess.run([sys.executable, '-m', 'experiments.sweep', f'--config={config_file}',
                         f'--workdir={tmp_path / "sweep"}', '--sweep.seed=3:5', '--together'],
                        cwd=REPO, capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  assert sorted(os.listdir(tmp_path / 'sweep')) == [
      'seed=3,train.learning_rate=0.001', 'seed=4,train.learning_rate=0.001',
      'summary.json', 'summary.md', 'summary.png']
  assert '(together)' in done.stderr


@pytest.mark.parametrize('name', sorted(f[:-3] for f in os.listdir(os.path.join(REPO, 'configs'))
                                        if f.endswith('.py')))
def test_every_shipped_config_sweeps_seeds_that_validate(name, tmp_path):
  from fsv import config_files
  path, _ = config_files.resolve(name)
  namespace = {}
  exec(compile(open(path).read(), path, 'exec'), namespace)
  members = sweeps.members(namespace['get_sweep']())
  assert len(members) >= 3 and {tuple(m) for m in members} == {('seed',)}
  config = config_files.load(name)
  if config.data.source == 'folder' and not config.data.dir:  # the user's own folder
    config.data.dir = str(tmp_path)
  configs = [sweeps.member_config(config, m) for m in members]
  assert [c.seed for c in configs] == list(range(len(members)))


def test_sweeps_of_two_configs_are_compared_on_the_same_test_images(tmp_path):
  data = _tiny_dataset()
  sweeps.run(_config(epochs=2), {'seed': [0, 1]}, str(tmp_path / 'trained'), dataset=data)
  sweeps.run(_config(epochs=2, learning_rate=1e-30), {'seed': [0, 1]},
             str(tmp_path / 'untrained'), dataset=data)
  done = subprocess.run(
      [sys.executable, '-m', 'experiments.compare',
       f'--sweeps={tmp_path / "trained"},{tmp_path / "untrained"}', f'--out={tmp_path / "both"}'],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-3000:]
  summary = json.loads((tmp_path / 'both' / 'summary.json').read_text())
  assert list(summary['settings']) == ['trained/all', 'untrained/all']
  (comparison,) = summary['comparisons']
  trained = json.loads((tmp_path / 'trained' / 'summary.json').read_text())
  untrained = json.loads((tmp_path / 'untrained' / 'summary.json').read_text())
  assert comparison['difference'] == pytest.approx(
      trained['settings']['all']['test_accuracy']['mean']
      - untrained['settings']['all']['test_accuracy']['mean'])
  assert '| trained/all | untrained/all |' in done.stdout
  missing = subprocess.run([sys.executable, '-m', 'experiments.compare',
                            f'--sweeps={tmp_path / "trained"},{tmp_path / "nothing"}'],
                           cwd=REPO, capture_output=True, text=True, timeout=300)
  assert missing.returncode != 0 and 'Traceback' not in missing.stderr
  assert 'no summary.json' in missing.stderr
