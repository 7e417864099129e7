"""User-facing error types.

Anything a user can get wrong (a config key, an element symbol, an inconsistent
electron count, a missing file) raises a subclass of :class:`FermiNetError`. The
CLI turns these into one clear line and exit status 2; any other exception is a
bug in ferminet and keeps its traceback.
"""


class FermiNetError(Exception):
  """Base class of errors caused by user input, reported as one line."""


class ConfigError(FermiNetError, ValueError):
  """A config value or key is missing, misspelled, of the wrong type or inconsistent."""


class InvalidSystemError(FermiNetError, ValueError):
  """The physical system (atoms, charges, electrons, units) is inconsistent."""


class OutputError(FermiNetError, OSError):
  """A checkpoint or statistics file could not be written (disk full, permissions)."""


class NonFiniteError(FermiNetError, ArithmeticError):
  """Too many consecutive iterations gave non-finite energies or parameters."""


class Interrupted(FermiNetError):
  """The run stopped on SIGTERM or SIGINT after saving its state.

  Attributes:
    signum: the signal number; the CLI exits with 128 + signum, the shell convention.
  """

  def __init__(self, message: str, signum: int):
    super().__init__(message)
    self.signum = signum


class AnalysisError(FermiNetError, ValueError):
  """A run folder cannot be analysed (no statistics file, too few rows, unknown name)."""
