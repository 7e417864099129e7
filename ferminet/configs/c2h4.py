"""Ethene (C2H4), as the reference's ferminet/configs/c2h4.py.

    ferminet --config ferminet/configs/c2h4.py

The FermiNet 2020 paper's geometry in bohr, the same coordinates in the same order as
the reference's c2h4.py (shipped as ferminet/data/geometries/prr_C2H4.xyz, with its
source); electrons (8, 8) as there. Same as
``--config configs/organic.py --config.system.molecule_name C2H4``.
"""

import ml_collections

from ferminet import config


def get_config() -> ml_collections.ConfigDict:
  cfg = config.default()
  cfg.system.molecule_name = 'C2H4'
  return cfg
