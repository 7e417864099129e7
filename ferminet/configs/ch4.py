"""Methane (CH4), as the reference's ferminet/configs/ch4.py.

    ferminet --config ferminet/configs/ch4.py

The FermiNet 2020 paper's geometry in bohr, the same coordinates in the same order as
the reference's ch4.py (shipped as ferminet/data/geometries/prr_CH4.xyz, with its
source); electrons (5, 5) as there. Same as
``--config configs/organic.py --config.system.molecule_name CH4``.
"""

import ml_collections

from ferminet import config


def get_config() -> ml_collections.ConfigDict:
  cfg = config.default()
  cfg.system.molecule_name = 'CH4'
  return cfg
