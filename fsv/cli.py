"""What the entry points share: absl's app, quiet orbax, one-line errors, the flags
of commands that use a trained run."""
import logging as py_logging  # absl's WARNING is a verbosity, not a record level
import sys
from typing import Callable

from absl import app
from absl import flags
from absl import logging

import fsv
from fsv import config_files


def _quiet_checkpointer_info(record) -> bool:
  """Orbax logs a dozen INFO lines per save or restore; keep its warnings and errors."""
  return record.levelno >= py_logging.WARNING or '/orbax/' not in record.pathname


def _config_arguments(argv: list) -> list:
  """`--config=NAME_OR_PATH[:ARG]` with NAME resolved to its file, so that a
  shipped config works by name; a missing file, or an argument its
  get_config() refuses, is named here before absl parses anything."""
  resolved = []
  for arg in argv:
    if arg.startswith('--config='):
      spec = arg[len('--config='):]
      path, config_arg = config_files.resolve(spec)
      config_files.load(spec)
      arg = f'--config={path}' + (f':{config_arg}' if config_arg else '')
    resolved.append(arg)
  return resolved


def _flag_error(error: Exception, argv: list) -> str:
  """One line for a flag that cannot be parsed. ml_collections reports an
  unknown key as an AttributeError holding a KeyError's text: the key on
  its first line, a suggestion on the next."""
  message = str(error.args[0] if error.args else error)
  if not isinstance(error, (AttributeError, KeyError)):
    return message.replace('\n', ' ')
  key, _, suggestion = str(message).strip('\'"').replace('\\n', '\n').partition('\n')
  key = key.strip('\\\'"')
  flags_named = [a.split('=')[0] for a in argv[1:]
                 if a.startswith('--config.') and f'.{key}.' in a.split('=')[0] + '.']
  return (f'{", ".join(flags_named) or "--config"}: unknown config key {key!r}'
          + (f' ({suggestion.strip()})' if suggestion.strip() else ''))


def _parse_flags(argv: list) -> list:
  try:
    argv = _config_arguments(list(argv))
    return flags.FLAGS(argv)
  except fsv.Error as e:
    sys.exit(f'error: {e}')
  # absl's flag errors, and what ml_collections raises for a config override
  # that does not fit the config (unknown key, wrong type).
  except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
    sys.exit(f'error: {_flag_error(e, argv)}')


def run(main: Callable[[list], None]) -> None:
  """`app.run(main)`, where flag and config mistakes and every `fsv.Error` end
  the program as one `error: ...` line: their messages name the problem, and
  a traceback would not help."""
  def wrapped(argv):
    logging.get_absl_handler().addFilter(_quiet_checkpointer_info)
    try:
      main(argv)
    except fsv.Error as e:
      sys.exit(f'error: {e}')

  app.run(wrapped, flags_parser=_parse_flags)


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
