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


class AnalysisError(FermiNetError, ValueError):
  """A run folder cannot be analysed (no statistics file, too few rows, unknown name)."""
