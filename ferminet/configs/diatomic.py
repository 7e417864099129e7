"""Any diatomic molecule by formula, as the reference's ferminet/configs/diatomic.py.

    ferminet --config ferminet/configs/diatomic.py                      # N2, G3 geometry
    ferminet --config configs/diatomic.py --config.system.molecule_name O2   # triplet
    ferminet --config configs/diatomic.py --config.system.molecule_name HCl \
        --config.system.bond_length_multiple 1.2
    ferminet --config configs/diatomic.py --config.system.molecule_name NaCl \
        --config.system.bond_length 2.36

``system.molecule_name`` is ``A2`` or ``AB`` (default N2). The nuclei lie on the x
axis at ±R/2 with R = ``system.bond_length`` × ``system.bond_length_multiple``;
``system.bond_length`` is in ``system.units`` (angstrom here, as in the reference).
Without it, the reference's default bond length in angstrom (G3 geometries, Curtiss et
al., J. Chem. Phys. 109, 42 (1998)) for AlH, AlN, BeH, BH, ClF, CN, CO, F2, H2, HCl, Li2,
LiH, N2, NH, PN (see ferminet/molecules.py); other formulas need ``bond_length``.
Default spin: triplet for O2, B2, NH and AlN, else the lowest (0 or 1).

The FermiNet 2020 paper's geometries are the same formulas at its bond lengths in bohr,
e.g. ``--config.system.molecule_name N2 --config.system.bond_length 2.068
--config.system.units bohr`` (also LiH 3.015, Li2 5.051, CO 2.173; H2 1.4); only those
are labelled by the bare formula and matched to ferminet/data/energies.csv.
"""

import ml_collections

from ferminet import config


def get_config() -> ml_collections.ConfigDict:
  cfg = config.default()
  cfg.system.molecule_name = 'N2'
  cfg.system.units = 'angstrom'
  cfg.system.bond_length_multiple = 1.0
  return cfg
