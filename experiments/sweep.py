r"""Runs a config's sweep: every member in its own workdir, then the summary.

  python -m experiments.sweep --config=configs/bottleneck.py --workdir=workdirs/bottleneck_seeds \
      --sweep.seed=0:5 [--sweep.bottleneck.learning_rate=1e-4,3e-4] [--together]

Members come from the config file's get_sweep() (if it has one) and the
--sweep.KEY=v1,v2,... axes (a:b is the integers a to b-1); every
combination runs in WORKDIR/<member name>/, resumable, skipped once
finished. WORKDIR/summary.{json,md,png} give each setting's mean, standard
deviation and 95% interval over seeds (or folds) and paired tests between
settings on the test images (fsv/sweeps.py).
"""
import importlib.util
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

from fsv import cli
from fsv import config_files
from fsv import sweeps as sweep_lib

_CONFIG = config_flags.DEFINE_config_file('config', None, 'A config file or shipped name.',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'The sweep folder.', required=True)
_TOGETHER = flags.DEFINE_bool(
    'together', False, 'Train members that differ only in seed and learning rates in one '
    'vmapped step (fsv/members.py).')
flags.mark_flags_as_required(['config'])
# --sweep.KEY=VALUES axes are taken out of argv before absl sees them.
_AXES = {}


def _file_sweep():
  path, arg = config_files.resolve(flags.FLAGS['config'].config_filename)
  spec = importlib.util.spec_from_file_location('fsv_config_file', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  get_sweep = getattr(module, 'get_sweep', None)
  return (get_sweep(arg) if arg else get_sweep()) if get_sweep else None


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  members = sweep_lib.combine(_file_sweep(), _AXES)
  summary = sweep_lib.run(_CONFIG.value, members, _WORKDIR.value, _TOGETHER.value)
  print(sweep_lib.markdown(summary))
  print(f'wrote {_WORKDIR.value}/summary.json, summary.md, summary.png')


if __name__ == '__main__':
  for arg in [a for a in sys.argv[1:] if a.startswith('--sweep.')]:
    key, _, values = arg[len('--sweep.'):].partition('=')
    _AXES[key] = sweep_lib.parse_values(values)
    sys.argv.remove(arg)
  cli.run(main)
