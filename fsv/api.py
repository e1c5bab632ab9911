"""Small conveniences for notebooks that the entry points do not need."""
from __future__ import annotations

from typing import Any, Optional, Union

import numpy as np

from fsv import workdir as workdir_lib
from fsv.run import Run


def predict(run: Union[Run, str], x: Any, tta: bool = False,
            batch_size: Optional[int] = None) -> np.ndarray:
  """`run.predict(x)` for a `Run` or the workdir of a finished run."""
  if not isinstance(run, Run):
    run = workdir_lib.load_run(run)
  return run.predict(x, tta=tta, batch_size=batch_size)
