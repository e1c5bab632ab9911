"""fsv's errors: one base class, one subclass per kind of mistake.

Every message names what to fix (the config key, the file, the workdir), so
the entry points print it as one `error: ...` line instead of a traceback,
and a notebook can catch `fsv.Error` for all of them.
"""


class Error(Exception):
  """Base of every error fsv raises on purpose; the message says what to fix."""


class ConfigError(Error, ValueError):
  """A config that cannot describe a run; the message names the key."""


class DataError(Error):
  """Data that cannot be loaded as asked; the message names the path."""


class WeightsError(Error, ValueError):
  """Weights that cannot be loaded or fetched; the message names the file or layer."""


class WorkdirError(Error):
  """A workdir that cannot be written or read back; the message names the path."""


class ExportError(Error):
  """An export that cannot be made or does not agree with fsv; says which."""


class NonFiniteLossError(Error):
  """A NaN or inf training loss; the message names the phase, epoch and step."""
