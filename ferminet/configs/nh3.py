"""Ammonia (NH3), as the reference's ferminet/configs/nh3.py.

    ferminet --config ferminet/configs/nh3.py

The FermiNet 2020 paper's geometry in bohr, the same coordinates in the same order as
the reference's nh3.py (shipped as ferminet/data/geometries/prr_NH3.xyz, with its
source); electrons (5, 5) as there. Same as
``--config configs/organic.py --config.system.molecule_name NH3``.
"""

import ml_collections

from ferminet import config


def get_config() -> ml_collections.ConfigDict:
  cfg = config.default()
  cfg.system.molecule_name = 'NH3'
  return cfg
