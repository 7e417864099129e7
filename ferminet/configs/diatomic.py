"""Diatomic molecules: H2, LiH, Li2, N2, CO.

    ferminet --config configs/diatomic.py --config.system.molecule_name N2
    ferminet --config configs/diatomic.py --config.system.molecule_name N2 \
        --config.system.bond_length 2.068 --config.system.units bohr

Without ``bond_length`` the FermiNet 2020 paper's bond length (bohr) is used;
``system.units`` gives the units of ``bond_length``.
"""

from ferminet import config


def get_config():
  cfg = config.default()
  cfg.system.molecule_name = 'LiH'
  return cfg
