"""H4: four hydrogen atoms on a circle, as the reference's ferminet/configs/h4.py.

    ferminet --config ferminet/configs/h4.py
    ferminet --config configs/h4.py --config.system.angle 85
    ferminet --config configs/h4.py --config.system.radius 3.5 --config.system.units bohr

The nuclei are at (±R cos(θ/2), ±R sin(θ/2), 0): ``system.radius`` is R (in
``system.units``, angstrom here, as in the reference; default 1.738 Å) and
``system.angle`` is θ in degrees (default 90, the square; other angles give a rectangle
with sides 2R sin(θ/2) and 2R cos(θ/2)). Electrons (2, 2). Source: DeepMind ferminet
configs/h4.py; the FermiNet 2020 paper's H4 study, after Gasperich, Deible & Jordan,
J. Chem. Phys. 147, 074106 (2017).
"""

import ml_collections

from ferminet import config


def get_config() -> ml_collections.ConfigDict:
  cfg = config.default()
  cfg.system.molecule_name = 'H4'
  cfg.system.radius = 1.738
  cfg.system.angle = 90.0
  cfg.system.units = 'angstrom'
  return cfg
