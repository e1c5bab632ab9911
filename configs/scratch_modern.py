r"""The book's small convnet from scratch, trained with today's recipe.

  python -m experiments.run --config=configs/scratch_modern.py \
      --config.data.dir=../shared/data/cats_vs_dogs_small --workdir=workdirs/scratch_modern

Its 4 seeds, trained together (one vmapped step):

  python -m experiments.sweep --config=configs/scratch_modern.py --together \
      --config.data.dir=../shared/data/cats_vs_dogs_small --workdir=workdirs/scratch_modern_seeds

`--config=configs/scratch_modern.py:smoke` runs the pipeline on generated images.

The architecture of configs/scratch_aug.py (conv 32-64-128-128, Dropout 0.5,
Dense 512, 150x150), unchanged; what changes is how it is trained: the
book's ImageDataGenerator augmentation (fsv/augment/), AdamW under a
one-cycle schedule, label smoothing, and the moving average of the weights
as the model that is validated and kept. The goal is 90% test
(configs/scratch_aug.py: 84.7%).

Measured with 107 epochs, its 4 seeds (2026-12-04, an NVIDIA H200 lent for
15 minutes, jax 0.11.2, fsv c2b7380; the sweep above, beside two others):
85.55% +- 0.44 test [84.84, 86.26], 86.40% +- 0.63 validation (best epochs
98-107); 8 minutes for the 4 seeds. The validation accuracy, averaged over
the seeds, was 81.2% at epoch 50, 85.4% at 75, 86.2% at 100 and at 107:
it flattens as the one-cycle rate anneals. Beside it, with mixup added
(`--config.augment.ops='keras|mixup(alpha=0.2)'`) 84.82% +- 0.68 test,
86.00% +- 0.22 validation, and configs/scratch_aug.py's recipe for the same
107 epochs 84.67% +- 1.28 test, 86.40% +- 0.71 validation; chosen on
validation (a tie with scratch_aug's recipe, broken by the lower validation
loss, 0.317 against 0.329), this recipe stays. On the test images none of
the three is distinguishable from another (README, results, footnote 16).
107 epochs is what fit that lease; on this project's 2-core CPU they take
about 2.5 hours a seed. The goal of 90% is not met, by about 4.5 points.
The config trained 60 epochs before: 107 validated 5 points higher (86.4%
over 4 seeds against 81.1%, one run, below), so it trains 107 now.

Earlier, on the CPU, with 60 epochs or fewer: measured (2026-12-02, the
2-core VM, CPU model not recorded) at a peak rate of 2e-3 with
`--config.augment.ops='keras|mixup(alpha=0.2)' --config.train.epochs=40`,
it did not learn: the training loss stayed at 0.69, the best validation
accuracy was 54.7% (epoch 9) and its test 54.3%, in 99 minutes. Its
learning-rate finder (`experiments.lr_find`) put the steepest descent at
3.3e-4, and Adam at 5e-4 is what trains this model in
configs/scratch_aug.py, so the peak rate is now 5e-4. Measured at 5e-4
(2026-12-03, Intel Xeon model 167, fsv 6989988): best validation accuracy
80.4% (epoch 58), test 76.7%, epochs of about 60 s; still improving at epoch
60 (training accuracy 77%), so it underfits: below configs/scratch_aug.py
and short of the 90% goal. That run's op list added colour jitter and mixup,
`'keras|colour_jitter(brightness=0.3,contrast=0.3,saturation=0.3)|mixup(alpha=0.2)'`;
with the warp alone, `ops='keras'`, the same 60 epochs otherwise unchanged
(2026-12-03, AMD EPYC family 23 model 1, fsv 946984e): best validation accuracy
81.1% (epoch 53), test 78.6%, epochs of 77-100 s alone. Chosen on validation
(81.1% against 80.4%, one run each), `'keras'` is now the op list.
These runs predate the moving average's debiasing (fsv/steps.py): their
validation sat at chance for the first epochs, while the average still held
the random initial weights; by the end of 60 epochs (3,780 steps) those
weights' share was 0.999^3780, about 2%, so the figures at the end stand.
"""
from fsv import config as config_lib


def get_config(arg: str = ''):
  _, smoke = config_lib.arguments(arg)
  config = config_lib.base('small_convnet')
  config_lib.cats_vs_dogs(config)
  config.augment.update(dict(
      ops='keras',
      rotation_range=40.0, width_shift_range=0.2, height_shift_range=0.2,
      shear_range=0.2, zoom_range=0.2, horizontal_flip=True))
  config.model.flatten_dropout = 0.5
  config.train.epochs = 107
  config.train.batch_size = 32
  config.train.optimizer = 'adamw'
  config.train.learning_rate = 5e-4
  config.train.weight_decay = 0.01
  config.train.schedule = 'one_cycle'
  config.train.label_smoothing = 0.1
  config.train.ema_decay = 0.999
  return config_lib.smoke(config) if smoke else config


def get_sweep(arg: str = ''):
  """The seeds `python -m experiments.sweep` runs of this config (README: Ablations)."""
  del arg
  return {'seed': range(4)}
