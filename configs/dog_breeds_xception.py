r"""Dog breeds (133 classes) with a Dense head on a frozen Xception, as the
Udacity dog-breed project does, top-1 and top-5 reported.

  python -m experiments.run --config=configs/dog_breeds_xception.py \
      --config.data.dir=dogImages --workdir=workdirs/dog_breeds

dogImages is the project's archive (dogImages.zip, 8,351 images: 6,680
train, 835 valid, 836 test, folders `train/`, `valid/`, `test/` of
`NNN.Breed_name/` classes), read as it is: `valid/` is the validation split.
Needs the Xception ImageNet weights (downloaded on first use, or
`python -m fsv.pretrained fetch xception --source=PATH` with a copy of
xception_weights_tf_dim_ordering_tf_kernels_notop.h5). Neither the data nor
the weights can be had on the machine this was written on, so it is not
measured; `--config=configs/dog_breeds_xception.py:smoke` runs the pipeline
on generated images.

The project: bottleneck features of Xception (299x299), then
GlobalAveragePooling2D and Dense(133, softmax), RMSprop, categorical
cross-entropy, 20 epochs: 81.9% test. Here the head is fsv's (pooling,
dropout 0.2, Dense) trained on the cached features with RMSprop 1e-3;
no fine-tuning phase.
"""
from fsv import config as config_lib


def get_config(arg: str = ''):
  _, smoke = config_lib.arguments(arg)
  config = config_lib.base('xception')
  config.data.update(source='folder')
  config.model.weights = 'imagenet'
  config.bottleneck.epochs = 20
  config.bottleneck.batch_size = 20
  config.bottleneck.optimizer = 'rmsprop'
  config.bottleneck.learning_rate = 1e-3
  config.train.epochs = 0
  return config_lib.smoke(config) if smoke else config


def get_sweep(arg: str = ''):
  """The seeds `python -m experiments.sweep` runs of this config (README: Ablations)."""
  del arg  # the same seeds for every variant
  return {'seed': range(3)}
