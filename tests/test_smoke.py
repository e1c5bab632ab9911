"""Every shipped config's `:smoke` variant runs its whole pipeline: generated
images decoded from JPEG files, each phase for an epoch, checkpoints,
evaluation, and the run loads back. Without cached ImageNet weights the
smoke variant trains random ones (said in the log), so this runs offline."""
import json
import os

import pytest

import fsv
from fsv import config_files

CONFIGS = [name for name in config_files.shipped()]


def test_every_shipped_config_is_covered():
  assert set(CONFIGS) == {'bottleneck', 'bottleneck_224', 'dog_breeds_scratch',
                          'dog_breeds_xception', 'efficientnet_feature_extraction',
                          'efficientnet_finetune', 'fast',
                          'feature_extraction', 'finetune', 'finetune_block3', 'finetune_tpu',
                          'scratch', 'scratch_aug', 'scratch_blog', 'scratch_modern',
                          'scratch_two_blocks'}


@pytest.mark.parametrize('name', CONFIGS)
def test_smoke_variant_runs_the_whole_pipeline(name, tmp_path):
  # Each config's default variant: the EfficientNet ones then share their
  # random Lite0 draws through the compilation cache (a Lite1 variant cost
  # 30 s more); test_cli checks that variants load.
  config = fsv.load_config(f'{name}:smoke')
  config.data.cache_dir = str(tmp_path / 'cache')
  workdir = str(tmp_path / 'work')
  run = fsv.fit(config, workdir=workdir)
  phases = [h['phase'] for h in run.history if h['epoch']]  # not the train phase's start
  expected = [p for p in ('bottleneck', 'train') if fsv.load_config(name)[p].epochs]
  assert phases == expected
  assert 0 <= run.results['test_accuracy'] <= 1
  assert json.load(open(os.path.join(workdir, 'evaluation', 'test', 'metrics.json')))[
      'examples'] == 16
  loaded = fsv.load_run(workdir)
  assert loaded.predict(run.dataset.splits['test'].images[:2]).shape == (2, 2)
