"""Molecules with fixed, shipped geometries (sources in ferminet/data/geometries).

    ferminet --config configs/organic.py --config.system.molecule_name CH4
    ferminet --config ferminet/configs/organic.py --config.system.molecule_name bicbut

Names: CH4, NH3, C2H4, methylamine, O3, ethanol, bicyclobutane (2020 paper
geometry) and the reaction structures bicbut, con_TS, dis_TS, g-but, gt-TS,
t-but, cycbut-ground, cycbut-trans (the reference's organic.py names, with its
geometries). Every other ``system.molecule_name`` of ferminet/molecules.py works here
too, lengths in bohr (e.g. a diatomic formula: see configs/diatomic.py). An own
geometry: --config.system.xyz FILE with --config.system.molecule_name ''.
"""

import ml_collections

from ferminet import config


def get_config() -> ml_collections.ConfigDict:
  cfg = config.default()
  cfg.system.molecule_name = 'CH4'
  return cfg
