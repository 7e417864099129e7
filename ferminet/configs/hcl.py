"""HCl, all-electron, at the geometry of the reference's ferminet/configs/hcl.py.

    ferminet --config ferminet/configs/hcl.py

H at the origin and Cl at z = 1.2799799 Å (the G3 bond length, as in configs/diatomic.py),
electrons (9, 9): all 18 electrons. Not supported yet: the reference's config runs Cl
with a pseudopotential (system.use_pp, ccECP: 8 electrons in all) and three excited
states (system.states = 3); here it is the ground state with every electron, so its
energy is not comparable with the reference's. Pretraining: 10,000 iterations, as there.
"""

import ml_collections

from ferminet import config
from ferminet import system as system_lib


def get_config() -> ml_collections.ConfigDict:
  cfg = config.default()
  cfg.system.molecule = [
    system_lib.Atom('H', (0.0, 0.0, 0.0), units='angstrom'),
    system_lib.Atom('Cl', (0.0, 0.0, 1.2799799), units='angstrom'),
  ]
  cfg.pretrain.iterations = 10_000
  return cfg
