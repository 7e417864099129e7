"""A single atom at the origin (the reference's ferminet/configs/atom.py keys).

    ferminet --config ferminet/configs/atom.py --config.system.atom Li
    ferminet --config configs/atom.py --config.system.atom O --config.system.charge 1
    ferminet --config configs/atom.py --config.system.atom C --config.system.spin_polarisation 0
    ferminet --config configs/atom.py --config.system.atom Li --config.system.delta_charge 0.1

Electrons are derived from the element, ``system.charge`` (in e) and
``system.spin_polarisation`` (n_alpha - n_beta; default: the ground-state spin of
the neutral atom with as many electrons). ``system.delta_charge`` (in e, default 0)
is added to the nuclear charge only: Li with 0.1 has Z = 3.1 and still 3 electrons.
Default atom: Li (the reference's atom.py has none).
"""

import ml_collections

from ferminet import config


def get_config() -> ml_collections.ConfigDict:
  cfg = config.default()
  cfg.system.atom = 'Li'
  return cfg
