"""HCl with a ccECP pseudopotential on Cl, after the reference's ferminet/configs/hcl.py.

    ferminet --config ferminet/configs/hcl.py

H at the origin and Cl at z = 1.2799799 Å (the G3 bond length, as in configs/diatomic.py).
As there, system.electrons counts every electron, (9, 9), and the 10 core electrons of
Cl's ccECP are removed: 8 valence electrons, (4, 4), with Cl's effective charge 7.
HF pretraining uses cc-pVDZ on H and ccecp-cc-pVDZ (system.pp.basis) on Cl; 10,000
pretraining iterations, as there.

Differs from the reference's file: it asks for three excited states (system.states = 3),
which ferminet does not implement, so this is the ground state; and it builds its PySCF
Mole from the atoms' bohr coordinates with mol.unit 'angstrom', which stretches the
molecule to 2.419 Å (the reference then uses the Mole's nuclei). ferminet accepts that
file too, with a warning naming the difference; this one runs the G3 geometry.
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
  cfg.system.electrons = (9, 9)  # all electrons; the core ones go with the pseudopotential
  cfg.system.use_pp = True
  cfg.system.pp.symbols = ['Cl']
  cfg.pretrain.iterations = 10_000
  return cfg
