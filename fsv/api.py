"""Small conveniences for notebooks that the entry points do not need."""
from __future__ import annotations

import importlib.util
from typing import Any, Optional, Union

import numpy as np

from fsv import workdir as workdir_lib
from fsv.run import Run


def load_config(path: str):
  """The ConfigDict of a config file (its `get_config()`), to change and `fit`."""
  spec = importlib.util.spec_from_file_location('fsv_config_file', path)
  if spec is None:
    raise FileNotFoundError(f'no config file at {path!r}')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def predict(run: Union[Run, str], x: Any, tta: bool = False,
            batch_size: Optional[int] = None) -> np.ndarray:
  """`run.predict(x)` for a `Run` or the workdir of a finished run."""
  if not isinstance(run, Run):
    run = workdir_lib.load_run(run)
  return run.predict(x, tta=tta, batch_size=batch_size)
