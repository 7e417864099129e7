"""A single atom at the origin.

    ferminet --config configs/atom.py --config.system.atom Li
    ferminet --config configs/atom.py --config.system.atom O --config.system.charge 1
    ferminet --config configs/atom.py --config.system.atom C --config.system.spin_polarisation 0

Electrons are derived from the element, ``system.charge`` and
``system.spin_polarisation`` (default: the atom's ground-state spin).
"""

from ferminet import config


def get_config():
  cfg = config.default()
  cfg.system.atom = 'Li'
  return cfg
