"""The reference FermiNet's ``ferminet.base_config``, backed by :mod:`ferminet.config`.

A config file written for DeepMind's FermiNet runs unchanged::

    from ferminet import base_config
    from ferminet.utils import system

    def get_config():
      cfg = base_config.default()
      cfg.system.update({'bond_length': 1.4, 'natoms': 2})  # keys of its own
      with cfg.ignore_type():
        cfg.system.set_molecule = make_chain  # cfg -> cfg, sets system.molecule
      return cfg

:func:`default` is :func:`ferminet.config.default` (every key of the reference's
default is there, see ``config.REFERENCE_ONLY`` for those accepted only at their
default), unlocked so that the file may add keys. The ``ferminet`` command locks the
config once ``get_config()`` returns, before it applies ``--config.KEY`` overrides,
so a misspelled flag is still an error; in Python, call ``cfg.lock()`` for the same
protection. :func:`resolve` calls ``system.set_molecule``, builds and checks the
system and locks the config (lengths then in bohr).
"""

from __future__ import annotations

import ml_collections

from ferminet import config as _config

SystemType = _config.SystemType


def default() -> ml_collections.ConfigDict:
  """ferminet's default config, unlocked: a config file may add keys of its own.

  ``system.units`` is 'bohr', the reference's default, which its config files read
  (``system.Atom(..., units=cfg.system.units)``); :func:`ferminet.config.default`
  leaves it unset so that an xyz file without a units comment is read in angstrom.
  """
  cfg = _config.default()
  cfg.system.units = 'bohr'
  cfg.unlock()
  return cfg


def resolve(cfg: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Calls ``cfg.system.set_molecule`` if set, then resolves and locks the config.

  The same as :func:`ferminet.config.resolve`; returns the config to use.

  Raises:
    errors.FermiNetError: on any inconsistency, with a one-line message.
  """
  return _config.resolve(cfg)
