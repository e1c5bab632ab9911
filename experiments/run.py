r"""Trains and evaluates one run described by a config file.

  python -m experiments.run --config=configs/scratch_aug.py --workdir=workdirs/scratch_aug
  python -m experiments.run --config=configs/scratch.py --config.train.epochs=5

Rerunning with the same --workdir resumes from the last complete epoch; it
must be the same run (--allow_changes=train.epochs to train on for longer).
Runs on all devices; with several hosts (a TPU pod slice), start it on every
host with --distributed.
"""
import os

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

import jax

import fsv
from fsv import cli

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Path to a config file.',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string(
    'workdir', None, 'Where checkpoints, history and results go '
    '(default: workdirs/<config file name>).')
_DISTRIBUTED = flags.DEFINE_bool(
    'distributed', False, 'Several hosts: call jax.distributed.initialize() first '
    '(it finds the other hosts itself on Cloud TPU, SLURM, Open MPI and Kubernetes).')
_ALLOW_CHANGES = flags.DEFINE_list(
    'allow_changes', [], 'Config keys that may differ from the run the workdir holds '
    '(e.g. train.epochs to train on); recorded in its history.')
flags.mark_flags_as_required(['config'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if _DISTRIBUTED.value:
    jax.distributed.initialize()  # before any computation, as JAX requires
  workdir = _WORKDIR.value or os.path.join(
      'workdirs', os.path.splitext(os.path.basename(config_flags.get_config_filename(
          flags.FLAGS['config'])))[0])
  logging.info('workdir: %s', workdir)
  fsv.fit(_CONFIG.value, workdir=workdir, allow_changes=_ALLOW_CHANGES.value)


if __name__ == '__main__':
  cli.run(main)
