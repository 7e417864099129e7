"""Molecules with fixed, shipped geometries (sources in ferminet/data/geometries).

    ferminet --config configs/organic.py --config.system.molecule_name CH4
    ferminet --config configs/organic.py --config.system.molecule_name bicbut

Names: CH4, NH3, C2H4, methylamine, O3, ethanol, bicyclobutane (2020 paper
geometry) and the reaction structures bicbut, con_TS, dis_TS, g-but, gt-TS,
t-but, cycbut-ground, cycbut-trans. An own geometry: --config.system.xyz FILE
with --config.system.molecule_name ''.
"""

from ferminet import config


def get_config():
  cfg = config.default()
  cfg.system.molecule_name = 'CH4'
  return cfg
