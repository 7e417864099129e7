"""A linear chain of hydrogen atoms, as the reference's ferminet/configs/hn.py.

    ferminet --config ferminet/configs/hn.py                           # H2, 1.4 bohr
    ferminet --config configs/hn.py --config.system.natoms 10 --config.system.bond_length 1.8

``system.natoms`` H atoms (default 2) on the x axis, centred at the origin,
``system.bond_length`` apart (in ``system.units``, default bohr; default 1.4 bohr).
Electrons: the lowest spin (an odd chain has one more alpha than beta electron; the
reference gives the extra electron to beta, the same energy). Ten atoms at 1.8 bohr is
the H10 chain of configs/h10.py.
"""

import ml_collections

from ferminet import config


def get_config() -> ml_collections.ConfigDict:
  cfg = config.default()
  cfg.system.molecule_name = 'Hn'
  cfg.system.natoms = 2
  cfg.system.bond_length = 1.4
  return cfg
