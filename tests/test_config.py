"""Configs: unknown keys, wrong types and impossible values fail with the key named."""
import subprocess
import sys

import pytest

import fsv
from fsv import config as config_lib
from fsv.data import decode


def _folder_config(**train):
  return {'data': {'dir': '/some/dir'}, 'train': train}


def test_defaults_validate():
  config = config_lib.validate(_folder_config())
  assert config.train.optimizer == 'rmsprop' and config.data.image_size == (150, 150)


def test_base_config_is_locked_against_typos():
  config = fsv.base_config()
  with pytest.raises(AttributeError, match='epoch'):
    config.train.epoch = 3


@pytest.mark.parametrize('bad,match', [
    ({'train': {'epoch': 3}}, "unknown config key 'train.epoch'"),
    ({'trian': {}}, "unknown config key 'trian'"),
    ({'data': {'dir': 'x', 'colour': 1}}, "'data.colour'"),
    ({'train': {'epochs': 'many'}}, 'epochs'),
    ({'train': {'epochs': -1}}, 'train.epochs=-1'),
    ({'train': {'batch_size': 0}}, 'train.batch_size=0'),
    ({'train': {'accumulation_steps': 0}}, 'train.accumulation_steps=0'),
    ({'bottleneck': {'batch_size': 10, 'accumulation_steps': 4}},
     'bottleneck.batch_size=10: must divide into bottleneck.accumulation_steps=4'),
    ({'train': {'optimizer': 'adagrad'}}, 'train.optimizer'),
    ({'augment': {'fill_mode': 'mirror'}}, 'augment.fill_mode'),
    ({'augment': {'zoom_range': 1.5}}, 'augment.zoom_range'),
    ({'augment': {'ops': 'keras|mixupp'}}, "unknown op 'mixupp'; did you mean 'mixup'"),
    ({'augment': {'ops': 'cutmix|flip_lr'}}, 'cutmix mixes labels, so it must come after'),
    ({'augment': {'ops': 'random_erasing(p=2)'}}, r'random_erasing\(p=2.0\): p must be in'),
    ({'augment': {'brightness_range': (1.5, 0.5)}}, 'augment.brightness_range'),
    ({'augment': {'channel_shift_range': -1.0}}, 'augment.channel_shift_range=-1.0'),
    ({'augment': {'ops': 'randaugment', 'rotation_range': 10.0}},
     'augment.rotation_range=10.0: only the keras op reads it'),
    ({'data': {'image_size': (30, 30)}}, 'at least 46x46'),
    ({'model': {'name': 'vgg16'}, 'data': {'image_size': (224, 31)}}, 'at least 32x32'),
    ({'train': {'on_nonfinite_loss': 'skip'}}, 'train.on_nonfinite_loss'),
    ({'bottleneck': {'on_nonfinite_loss': 'warn'}}, 'bottleneck.on_nonfinite_loss'),
    ({'data': {'dir': ''}}, 'data.dir'),
    ({'data': {'source': 'tfds'}}, 'data.name'),
    ({'model': {'name': 'resnet9000'}}, 'resnet9000'),
    ({'model': {'num_classes': 1}}, 'num_classes'),
    ({'model': {'flatten_dropout': 1.0}}, 'flatten_dropout'),
])
def test_bad_configs_name_the_key(bad, match):
  config = {'data': {'dir': '/some/dir'}}
  for group, values in bad.items():
    config.setdefault(group, {}).update(values)
  with pytest.raises(config_lib.ConfigError, match=match):
    config_lib.validate(config)


@pytest.mark.parametrize('dtype', ['float64', 'bf16'])
def test_unknown_dtype_names_the_key(dtype):
  with pytest.raises(config_lib.ConfigError, match=(
      rf"^config\.dtype='{dtype}': must be one of \('float32', 'bfloat16', 'float16'\)$")):
    config_lib.validate({'data': {'dir': '/some/dir'}, 'dtype': dtype})


@pytest.mark.parametrize('change,match', [
    pytest.param({'train': {'trainable': ('block5_.*',)}},
                 "'block5_.*' matches no parameter", id='trainable'),
    pytest.param({'train': {'group_learning_rates': (('dense/.*', 1e-5),
                                                     ('fc1/.*', 1e-5))}},
                 "'fc1/.*' matches no parameter", id='group_learning_rates'),
    pytest.param({'model': {'num_classes': 3}},
                 r"num_classes=3 but the data has 2 classes \['cats'", id='num_classes'),
])
def test_fit_refuses_before_decoding_an_image(make_image_folder, monkeypatch, tmp_path,
                                              change, match):
  config = {'data': {'dir': str(make_image_folder({'train': {'cats': 1, 'dogs': 1}})),
                     'cache_dir': str(tmp_path / 'cache')}, **change}
  monkeypatch.setattr(decode, 'decode_file',
                      lambda path, *_: pytest.fail(f'decoded {path}'))
  with pytest.raises(config_lib.ConfigError, match=match):
    fsv.fit(config)


@pytest.mark.parametrize('path', ['configs/scratch.py', 'configs/scratch_aug.py',
                                  'configs/finetune_tpu.py'])
def test_shipped_configs_validate(path):
  config_lib.validate(fsv.load_config(path))


def test_tpu_config_changes_only_what_a_tpu_pod_needs():
  tpu, gpu = (fsv.load_config(f'configs/{name}.py').to_dict()
              for name in ('finetune_tpu', 'finetune'))
  changed = {(group, key) for group in gpu if isinstance(gpu[group], dict)
             for key in gpu[group] if tpu[group][key] != gpu[group][key]}
  assert changed == {('data', 'source')} | {
      (phase, key) for phase in ('bottleneck', 'train')
      for key in ('batch_size', 'eval_batch_size', 'learning_rate')}
  assert tpu['dtype'] == 'bfloat16'
  for phase in ('bottleneck', 'train'):
    assert all(tpu[phase]['batch_size'] % devices == 0 for devices in (8, 16, 32, 64))


def test_entry_point_rejects_unknown_override_by_name(tmp_path):
  proc = subprocess.run(
      [sys.executable, '-m', 'experiments.run', '--config=configs/scratch.py',
       '--config.train.epoch=5', f'--workdir={tmp_path}'],
      capture_output=True, text=True, timeout=120)
  assert proc.returncode != 0
  assert 'epoch' in proc.stderr and 'Did you mean "epochs"' in proc.stderr
