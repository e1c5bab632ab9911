"""Config files, by path or by the name of a shipped one, with an argument.

    fsv.load_config('configs/finetune.py')            # a path
    fsv.load_config('efficientnet_finetune:efficientnet_lite2,smoke')  # a shipped name

`NAME_OR_PATH[:ARG]` means the same here as `--config=` on the command line:
the file's `get_config(ARG)` (or `get_config()` without one). Shipped
configs are the files in the source checkout's `configs/` folder.
"""
from __future__ import annotations

import importlib.util
import os
import pathlib

import ml_collections

from fsv.errors import ConfigError

SHIPPED = pathlib.Path(__file__).resolve().parent.parent / 'configs'


def shipped() -> list[str]:
  """Names of the shipped configs."""
  return sorted(p.stem for p in SHIPPED.glob('*.py')) if SHIPPED.is_dir() else []


def resolve(spec: str) -> tuple[str, str]:
  """(path of the file, its argument) of `NAME_OR_PATH[:ARG]`."""
  name, _, arg = str(spec).partition(':')
  if os.path.isfile(name):
    return name, arg
  candidate = SHIPPED / f'{name}.py'
  if os.sep not in name and not name.endswith('.py') and candidate.is_file():
    return str(candidate), arg
  raise ConfigError(f'no config file {name!r}: give the path of a .py file with a '
                    f'get_config(), or the name of a shipped config: {shipped()}')


def load(spec: str) -> ml_collections.ConfigDict:
  """The config of `NAME_OR_PATH[:ARG]`, to change and `fit`."""
  path, arg = resolve(spec)
  module_spec = importlib.util.spec_from_file_location('fsv_config_file', path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  if not hasattr(module, 'get_config'):
    raise ConfigError(f'{path}: a config file defines get_config()')
  return module.get_config(arg) if arg else module.get_config()
