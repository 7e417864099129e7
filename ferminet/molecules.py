"""Named structures selected with ``--config.system.molecule_name NAME``.

Two kinds:
- diatomics, built from a bond length (``--config.system.bond_length`` in
  ``--config.system.units``; default: the FermiNet 2020 paper's value in bohr);
- fixed geometries shipped as xyz files in ``ferminet/data/geometries`` (units
  and source in each file's comment line).
"""

from __future__ import annotations

import functools
import importlib.resources

from ferminet import errors
from ferminet import system as system_lib

# name -> (symbol A, symbol B, equilibrium bond length in bohr, source)
DIATOMICS: dict[str, tuple[str, str, float, str]] = {
  'H2': ('H', 'H', 1.4, 'Kolos & Wolniewicz equilibrium, 1.4 bohr'),
  'LiH': ('Li', 'H', 3.015, 'FermiNet PRR 2020 Table II'),
  'Li2': ('Li', 'Li', 5.051, 'FermiNet PRR 2020 Table II'),
  'N2': ('N', 'N', 2.068, 'FermiNet PRR 2020 Table II'),
  'CO': ('C', 'O', 2.173, 'FermiNet PRR 2020 Table II'),
}

# name -> xyz file in ferminet/data/geometries
XYZ: dict[str, str] = {
  'CH4': 'prr_CH4.xyz',
  'NH3': 'prr_NH3.xyz',
  'C2H4': 'prr_C2H4.xyz',
  'methylamine': 'prr_methylamine.xyz',
  'O3': 'prr_O3.xyz',
  'ethanol': 'prr_ethanol.xyz',
  'bicyclobutane': 'prr_bicbut.xyz',
  'bicbut': 'bicbut.xyz',
  'con_TS': 'con_TS.xyz',
  'dis_TS': 'dis_TS.xyz',
  'g-but': 'g-but.xyz',
  'gt-TS': 'gt-TS.xyz',
  't-but': 't-but.xyz',
  'cycbut-ground': 'cycbut-ground.xyz',
  'cycbut-trans': 'cycbut-trans.xyz',
}


def names() -> list[str]:
  """Every known molecule name."""
  return sorted([*DIATOMICS, *XYZ], key=str.lower)


def geometry_path(filename: str):
  """Path (a Traversable) of a shipped geometry file."""
  return importlib.resources.files('ferminet') / 'data' / 'geometries' / filename


@functools.cache
def _read_shipped(filename: str) -> tuple[tuple[system_lib.Atom, ...], tuple[tuple[str, str], ...]]:
  with importlib.resources.as_file(geometry_path(filename)) as path:
    atoms, meta = system_lib.read_xyz(path)
  return tuple(atoms), tuple(meta.items())


def source(name: str) -> str:
  """Where the geometry of ``name`` comes from."""
  if name in DIATOMICS:
    return DIATOMICS[name][3]
  return dict(_read_shipped(XYZ[name])[1]).get('source', XYZ[name])


def build(
  name: str,
  bond_length: float | None = None,
  angle: float | None = None,
  units: str = 'bohr',
) -> list[system_lib.Atom]:
  """The atoms of a named structure, coordinates in bohr.

  Args:
    name: a key of DIATOMICS or XYZ (case-sensitive; a unique case-insensitive
      match is accepted).
    bond_length: diatomics only; in ``units``. None: the equilibrium value.
    angle: reserved for parametrised structures; must be None here.
    units: units of ``bond_length``.
  """
  known = names()
  if name not in known:
    matches = [k for k in known if k.lower() == name.lower()]
    if len(matches) != 1:
      raise errors.ConfigError(f'unknown molecule_name {name!r}; known: {", ".join(known)}')
    name = matches[0]
  if angle is not None:
    raise errors.ConfigError(f'system.angle is not used by molecule {name!r}')
  if name in DIATOMICS:
    a, b, r_eq, _ = DIATOMICS[name]
    r = r_eq if bond_length is None else float(bond_length) * system_lib.unit_scale(units)
    if r <= 0:
      raise errors.ConfigError(f'bond_length must be > 0, got {bond_length}')
    return [system_lib.Atom(a, (0.0, 0.0, 0.0)), system_lib.Atom(b, (r, 0.0, 0.0))]
  if bond_length is not None:
    raise errors.ConfigError(
      f'molecule {name!r} has a fixed geometry: system.bond_length does not apply'
    )
  return list(_read_shipped(XYZ[name])[0])
