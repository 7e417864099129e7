"""H10: a linear chain of ten hydrogen atoms.

    ferminet --config configs/h10.py
    ferminet --config configs/h10.py --config.system.bond_length 2.4

``system.bond_length`` is the spacing between neighbouring atoms (in
``system.units``, default bohr; default 1.8 bohr, the geometry of the reference
energy, Motta et al., Phys. Rev. X 7, 031059 (2017)). The chain lies on the x
axis, centred at the origin. The same chain as ``configs/hn.py`` with
``--config.system.natoms 10 --config.system.bond_length 1.8``.
"""

import ml_collections

from ferminet import config


def get_config() -> ml_collections.ConfigDict:
  cfg = config.default()
  cfg.system.molecule_name = 'H10'
  return cfg
