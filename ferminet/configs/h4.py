"""H4: four hydrogen atoms on a circle (the FermiNet 2020 paper's H4 study).

    ferminet --config configs/h4.py
    ferminet --config configs/h4.py --config.system.angle 85
    ferminet --config configs/h4.py --config.system.bond_length 1.738 \
        --config.system.units angstrom --config.system.angle 95

The nuclei are at (±R cos(θ/2), ±R sin(θ/2), 0): ``system.bond_length`` is the
radius R of the circle (in ``system.units``, default bohr; default R = 3.2843
bohr = 1.738 Å) and ``system.angle`` is θ in degrees (default 90, the square;
other angles give a rectangle with sides 2R sin(θ/2) and 2R cos(θ/2)).
Source: DeepMind ferminet configs/h4.py; Gasperich, Deible & Jordan, J. Chem.
Phys. 147, 074106 (2017).
"""

from ferminet import config


def get_config():
  cfg = config.default()
  cfg.system.molecule_name = 'H4'
  return cfg
