r"""Sweeps a config's learning rate, as fastai's `lr_find`, and suggests one.

  python -m experiments.lr_find --config=configs/scratch_aug.py \
      --config.data.dir=../shared/data/cats_vs_dogs_small --out=lr_find/scratch_aug
  python -m experiments.lr_find --config=finetune --phase=bottleneck --out=lr_find/head

Trains from the config's starting point (pretrained weights, `init_from`)
for --steps steps while the learning rate grows exponentially from
--start_lr to --end_lr, stopping once the loss blows up. Prints the
suggested rates and writes lr_find.json and lr_find.png to --out. No
workdir is opened; the run's own settings are the config's (the sweep
replaces only its learning rate), so the suggestion is for that run.
"""
from absl import app
from absl import flags
from ml_collections import config_flags

import fsv
from fsv import cli

# No default file: config_flags would parse a default, and the --config.*
# overrides with it, while this module is imported, before errors are caught.
_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config (a path or a shipped '
                                          'name) of the run whose learning rate to find.')
_OUT = flags.DEFINE_string('out', None, 'Folder to write lr_find.json and lr_find.png to.')
_STEPS = flags.DEFINE_integer('steps', 100, 'Training steps of the sweep (at least 10).')
_START_LR = flags.DEFINE_float('start_lr', 1e-7, 'Learning rate of the first step.')
_END_LR = flags.DEFINE_float('end_lr', 10.0, 'Learning rate of the last step.')
_PHASE = flags.DEFINE_enum('phase', None, ['train', 'bottleneck'],
                           "Phase to sweep (default: 'train' if config.train.epochs, "
                           "else 'bottleneck').")
flags.mark_flags_as_required(['config', 'out'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  name = config_flags.get_config_filename(flags.FLAGS['config'])
  finding = fsv.lr_find(_CONFIG.value, phase=_PHASE.value, steps=_STEPS.value,
                        start_lr=_START_LR.value, end_lr=_END_LR.value, out_dir=_OUT.value,
                        config_name=name)
  taken = len(finding.learning_rates)
  print(f'{finding.phase} phase: {taken} steps from {finding.start_lr:.2e} to '
        f'{finding.learning_rates[-1]:.2e}'
        + (', stopped when the loss diverged' if finding.diverged else ''))
  for suggestion, rate in finding.suggestions.items():
    label = 'minimum / 10' if suggestion == 'minimum' else suggestion
    print(f'{label}: ' + (f'{rate:.2e}' if rate is not None
                          else 'none (the loss diverged too early; lower --start_lr)'))
  for path in finding.written:
    print(f'wrote {path}')


if __name__ == '__main__':
  cli.run(main)
