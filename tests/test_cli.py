"""Every entry point ends a user's mistake with one `error: ...` line, never a
traceback; configs load by name from anywhere, with the command line's syntax."""
import os
import socket
import subprocess
import sys

import pytest

import fsv

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args, cwd=REPO):
  return subprocess.run([sys.executable, '-m', *args], cwd=cwd, capture_output=True,
                        text=True, timeout=300)


MISTAKES = {
    'unknown key': (['experiments.run', '--config=scratch', '--config.train.epoch=3'],
                    'error: --config.train.epoch: unknown config key \'epoch\' (Did you mean '
                    '"epochs" instead of "epoch"?)'),
    'wrong type': (['experiments.run', '--config=scratch', '--config.train.epochs=abc'],
                   "error: flag --config.train.epochs=abc: invalid literal for int() with "
                   "base 10: 'abc'"),
    'infinite value': (['experiments.run', '--config=scratch',
                        '--config.augment.rotation_range=inf'],
                       'error: config.augment.rotation_range=inf: must be a finite number'),
    'negative seed': (['experiments.run', '--config=scratch', '--config.seed=-1'],
                      'error: config.seed=-1: must be an integer in [0, 2**32)'),
    'absurd image size': (['experiments.run', '--config=scratch',
                           '--config.data.image_size=(100000,100000)'],
                          'error: config.data.image_size=(100000, 100000): must be (height, '
                          'width) in pixels, each at most 4096'),
    'missing config file': (['experiments.run', '--config=configs/nope.py'],
                            "error: no config file 'configs/nope.py': give the path of a .py "
                            'file with a get_config(), or the name of a shipped config: '),
    'bad config argument': (['experiments.run', '--config=scratch:tiny'],
                            "error: config argument 'tiny': expected 'smoke'"),
    'missing data folder': (['experiments.run', '--config=scratch',
                             '--config.data.dir=/nonexistent/cats'],
                            "error: data.dir '/nonexistent/cats' is not a directory"),
    'missing init_from': (['experiments.run', '--config=scratch:smoke',
                           '--config.init_from=/nonexistent/run'],
                          "error: config.init_from='/nonexistent/run': not a workdir with a "
                          'best checkpoint'),
    'make_split without source': (['experiments.make_split', '--src=/nonexistent',
                                   '--dst=/tmp/fsv-never-written'],
                                  'error: /nonexistent: not a directory'),
    'preview of a missing image': (['experiments.preview_augment', '--image=/nonexistent.jpg'],
                                   'error: /nonexistent.jpg: FileNotFoundError'),
    'preview with an unknown key': (['experiments.preview_augment', '--image=x.jpg', '--config=scratch_aug',
                                     '--config.augment.rotation=3'],
                                    "error: --config.augment.rotation: unknown config key "
                                    "'rotation'"),
    'lr_find with too few steps': (['experiments.lr_find', '--config=scratch', '--out=/tmp/x',
                                    '--steps=5'],
                                   'error: steps=5: must be an integer >= 10'),
    'lr_find from above its end': (['experiments.lr_find', '--config=scratch', '--out=/tmp/x',
                                    '--start_lr=1', '--end_lr=0.1'],
                                   'error: start_lr=1.0 must be below end_lr=0.1'),
    'ensemble of a bare folder': (['experiments.ensemble', '--workdirs=/tmp'],
                                  'error: /tmp: no predictions.npz'),
    'sweep over a misspelt key': (['experiments.sweep', '--config=scratch', '--workdir=/nonexistent',
                                   '--sweep.train.epoch=1,2'],
                                  "error: sweep axis 'train.epoch' is not a config key (did you "
                                  "mean 'train.epochs'?)"),
    'comparing an unfinished sweep': (['experiments.compare', '--sweeps=/tmp'],
                                      'error: /tmp: no summary.json'),
    'weights from a missing file': (['fsv.pretrained', 'fetch', 'vgg16',
                                     '--source=/nonexistent.h5'],
                                    'error: weights file /nonexistent.h5 does not exist'),
}


@pytest.mark.parametrize('mistake', sorted(MISTAKES))
def test_every_entry_point_names_a_mistake_in_one_line(mistake, tmp_path):
  args, expected = MISTAKES[mistake]
  if args[0] == 'experiments.run':
    args = [*args, f'--workdir={tmp_path / "work"}', f'--config.data.cache_dir={tmp_path}']
  done = _run(*args)
  output = done.stdout + done.stderr
  assert done.returncode == 1, output[-2000:]
  assert 'Traceback' not in output
  assert done.stderr.strip().splitlines()[-1].startswith(expected), done.stderr[-2000:]


def test_the_used_by_config_offline_says_both_ways_out(tmp_path, monkeypatch):
  # The cats-vs-dogs configs' default data, not prepared, on a machine whose
  # network is down (TFDS's real builder; the connection is what fails).
  def offline(address, *args, **kwargs):
    raise OSError(f'[Errno -2] Name or service not known: {address[0]}')

  monkeypatch.setattr(socket, 'create_connection', offline)
  config = fsv.load_config('finetune')
  config.data.tfds_data_dir = str(tmp_path / 'tfds')
  with pytest.raises(fsv.DataError) as raised:
    fsv.fit(config, workdir=str(tmp_path / 'work'))
  message = str(raised.value)
  assert message.startswith("TFDS dataset 'cats_vs_dogs' is not prepared in ")
  assert 'cannot be downloaded (no network? download.microsoft.com' in message
  assert '--config.data.dir=DIR' in message and 'experiments.make_split' in message
  assert '--config.data.tfds_data_dir' in message


def test_configs_load_by_name_or_path_with_an_argument_from_anywhere(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  by_name = fsv.load_config('efficientnet_finetune:efficientnet_lite2')
  by_path = fsv.load_config(os.path.join(REPO, 'configs', 'efficientnet_finetune.py') +
                            ':efficientnet_lite2')
  assert by_name.to_dict() == by_path.to_dict()
  assert by_name.model.name == 'efficientnet_lite2' and by_name.data.image_size == (260, 260)
  smoke = fsv.load_config('efficientnet_finetune:efficientnet_lite2,smoke')
  assert smoke.model.name == 'efficientnet_lite2' and smoke.data.source == 'synthetic'
  with pytest.raises(fsv.ConfigError, match="no config file 'nope'"):
    fsv.load_config('nope')
  with pytest.raises(fsv.ConfigError, match="config argument 'lite9'"):
    fsv.load_config('efficientnet_finetune:lite9')


def test_the_cats_vs_dogs_configs_default_to_tfds_and_take_a_folder():
  for name in ('scratch', 'scratch_aug', 'bottleneck', 'feature_extraction', 'finetune',
               'efficientnet_feature_extraction', 'efficientnet_finetune'):
    config = fsv.validate_config(fsv.load_config(name))
    assert (config.data.source, config.data.name, config.data.dir) == (
        'auto', 'cats_vs_dogs', ''), name
    assert config.data.download and dict(config.data.per_class) == dict(
        train=1000, validation=500, test=500)
  config = fsv.load_config('finetune')
  config.data.dir = 'photos'
  assert fsv.data.source_of(config.data) == 'folder'


def test_import_fsv_leaves_tfds_orbax_and_matplotlib_unimported():
  done = subprocess.run(
      [sys.executable, '-c', 'import sys, fsv\n'
       'print(sorted(m for m in ("tensorflow_datasets", "orbax.checkpoint", "matplotlib",'
       ' "tensorboardX") if m in sys.modules))'], capture_output=True, text=True, timeout=120)
  assert done.stdout.strip() == '[]', done.stderr[-2000:]


def test_a_notebook_sees_every_epoch_and_the_results(tmp_path):
  # A plain Python process, as a notebook kernel is: absl never parses flags.
  script = ('import fsv\n'
            'config = fsv.load_config("scratch:smoke")\n'
            f'config.data.cache_dir = {str(tmp_path)!r}\n'
            'config.train.epochs = 2\n'
            'fsv.fit(config)\n')
  done = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                        timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
  shown = done.stdout + done.stderr
  for line in ('train: 64 images (discs 32, squares 32)', 'train epoch 1/2  train_loss=',
               'train epoch 2/2  train_loss=', 'results: phase=train'):
    assert line in shown, shown[-3000:]
