"""What the entry points share: absl's app, quiet orbax, one-line errors, the flags
of commands that use a trained run."""
import logging as py_logging  # absl's WARNING is a verbosity, not a record level
import sys
from typing import Callable

from absl import app
from absl import flags
from absl import logging

import fsv


def _quiet_checkpointer_info(record) -> bool:
  """Orbax logs a dozen INFO lines per save or restore; keep its warnings and errors."""
  return record.levelno >= py_logging.WARNING or '/orbax/' not in record.pathname


def run(main: Callable[[list], None]) -> None:
  """`app.run(main)`; an `fsv.Error` ends the program as one `error: ...` line,
  since its message names the problem and a traceback would not help."""
  def wrapped(argv):
    logging.get_absl_handler().addFilter(_quiet_checkpointer_info)
    try:
      main(argv)
    except fsv.Error as e:
      sys.exit(f'error: {e}')

  app.run(wrapped)


class TrainedRunFlags:
  """--workdir, --checkpoint and --batch_size: the run a command uses, and how."""

  def __init__(self):
    self._workdir = flags.DEFINE_string('workdir', None, 'Workdir of a finished run.',
                                        required=True)
    self._checkpoint = flags.DEFINE_enum('checkpoint', 'best', ['best', 'last'],
                                         'Which checkpoint of the run.')
    self._batch_size = flags.DEFINE_integer('batch_size', 0,
                                            "Images per batch (0: the run's).")

  @property
  def workdir(self) -> str:
    return self._workdir.value

  @property
  def batch_size(self):
    return self._batch_size.value or None

  def load(self) -> fsv.Run:
    return fsv.load_run(self._workdir.value, self._checkpoint.value)


def define_images_flag():
  return flags.DEFINE_multi_string('images', [], 'Image files or folders; more may follow '
                                   'as arguments.')


def image_paths(images_flag, argv: list) -> list:
  """--images and the arguments after them (a shell expands `--images=a b c`)."""
  paths = images_flag.value + argv[1:]
  if not paths:
    raise app.UsageError('give image files or folders: --images=PATH [PATH ...]')
  return paths
