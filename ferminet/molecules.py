"""Named structures selected with ``--config.system.molecule_name NAME``.

Three kinds:
- diatomics, built from a bond length (``--config.system.bond_length`` in
  ``--config.system.units``; default: the FermiNet 2020 paper's value in bohr);
- hydrogen models built from a length and an angle: ``H4`` (four H on a circle of
  radius ``bond_length``, ``angle`` in degrees; 90 is the square) and ``H10`` (a
  linear chain with spacing ``bond_length``);
- fixed geometries shipped as xyz files in ``ferminet/data/geometries`` (units
  and source in each file's comment line).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.resources
import math
from collections.abc import Callable

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


def _h4(radius: float, angle: float) -> list[system_lib.Atom]:
  """Four H at (±R cos(θ/2), ±R sin(θ/2), 0), R in bohr, θ in degrees.

  The sides are 2R sin(θ/2) and 2R cos(θ/2): θ = 90 is the square, other
  angles a rectangle (the H4 study of the FermiNet 2020 paper, after Gasperich,
  Deible & Jordan, J. Chem. Phys. 147, 074106 (2017)).
  """
  half = math.radians(angle) / 2
  x, y = radius * math.cos(half), radius * math.sin(half)
  return [system_lib.Atom('H', (sx * x, sy * y, 0.0)) for sx in (1, -1) for sy in (1, -1)]


def _h10(spacing: float, angle: float | None) -> list[system_lib.Atom]:
  """Ten H on the x axis, ``spacing`` bohr apart, centred at the origin."""
  return [system_lib.Atom('H', ((i - 4.5) * spacing, 0.0, 0.0)) for i in range(10)]


@dataclasses.dataclass(frozen=True)
class Parametric:
  """A structure built from a length (bohr) and optionally an angle (degrees)."""

  make: Callable[[float, float | None], list[system_lib.Atom]]
  length: float  # default of system.bond_length, bohr
  angle: float | None  # default of system.angle, degrees; None: no angle parameter
  length_meaning: str  # what system.bond_length means for this structure
  source: str


# name -> how to build it
PARAMETRIC: dict[str, Parametric] = {
  'H4': Parametric(
    _h4,
    3.2843,  # = 1.738 Å, the radius of DeepMind ferminet/configs/h4.py
    90.0,
    'radius of the circle the four H lie on',
    'FermiNet PRR 2020 H4 study (DeepMind ferminet configs/h4.py: R = 1.738 Å, θ = 90°)',
  ),
  'H10': Parametric(
    _h10,
    1.8,  # bohr, the spacing of the reference energy in ferminet/data/energies.csv
    None,
    'spacing between neighbouring H',
    'linear H10 chain, spacing 1.8 bohr (Motta et al., Phys. Rev. X 7, 031059 (2017))',
  ),
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
  return sorted([*DIATOMICS, *PARAMETRIC, *XYZ], key=str.lower)


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
  if name in PARAMETRIC:
    return PARAMETRIC[name].source
  return dict(_read_shipped(XYZ[name])[1]).get('source', XYZ[name])


def build(
  name: str,
  bond_length: float | None = None,
  angle: float | None = None,
  units: str = 'bohr',
) -> list[system_lib.Atom]:
  """The atoms of a named structure, coordinates in bohr.

  Args:
    name: a key of DIATOMICS, PARAMETRIC or XYZ (case-sensitive; a unique
      case-insensitive match is accepted).
    bond_length: diatomics and PARAMETRIC only; in ``units``. None: the default
      (equilibrium or paper) value.
    angle: in degrees; only for structures with an angle (H4). None: the default.
    units: units of ``bond_length``.
  """
  name = canonical(name)
  length, angle = _parameters(name, bond_length, angle, units)
  if name in DIATOMICS:
    a, b, _, _ = DIATOMICS[name]
    return [system_lib.Atom(a, (0.0, 0.0, 0.0)), system_lib.Atom(b, (length, 0.0, 0.0))]
  if name in PARAMETRIC:
    return PARAMETRIC[name].make(length, angle)
  if bond_length is not None:
    raise errors.ConfigError(
      f'molecule {name!r} has a fixed geometry: system.bond_length does not apply'
    )
  return list(_read_shipped(XYZ[name])[0])


def canonical(name: str) -> str:
  """The known spelling of a molecule name (a unique case-insensitive match)."""
  known = names()
  if name in known:
    return name
  matches = [k for k in known if k.lower() == name.lower()]
  if len(matches) != 1:
    raise errors.ConfigError(f'unknown molecule_name {name!r}; known: {", ".join(known)}')
  return matches[0]


def _parameters(
  name: str, bond_length: float | None, angle: float | None, units: str
) -> tuple[float | None, float | None]:
  """(length in bohr, angle in degrees) of a canonical name, defaults filled in."""
  if name in DIATOMICS:
    default_length, default_angle = DIATOMICS[name][2], None
  elif name in PARAMETRIC:
    default_length, default_angle = PARAMETRIC[name].length, PARAMETRIC[name].angle
  else:
    if bond_length is not None:
      raise errors.ConfigError(
        f'molecule {name!r} has a fixed geometry: system.bond_length does not apply'
      )
    default_length, default_angle = None, None
  if angle is not None and default_angle is None:
    raise errors.ConfigError(f'system.angle is not used by molecule {name!r}')
  length = default_length
  if bond_length is not None:
    length = float(bond_length) * system_lib.unit_scale(units)
    if not length > 0:
      raise errors.ConfigError(f'bond_length must be > 0, got {bond_length}')
  if angle is not None:
    angle = float(angle)
    if not 0 < angle < 180:
      raise errors.ConfigError(f'system.angle must be between 0 and 180 degrees, got {angle}')
  return length, default_angle if angle is None else angle


def label(
  name: str, bond_length: float | None = None, angle: float | None = None, units: str = 'bohr'
) -> str:
  """The system name of a structure: ``name`` at its default geometry, else with the
  parameters appended (e.g. ``'N2 R=2.5 bohr'``, ``'H4 R=3.2843 bohr angle=85'``), so
  that a reference energy is only matched at the geometry it belongs to."""
  name = canonical(name)
  length, angle = _parameters(name, bond_length, angle, units)
  if name in DIATOMICS:
    default = (DIATOMICS[name][2], None)
  elif name in PARAMETRIC:
    default = (PARAMETRIC[name].length, PARAMETRIC[name].angle)
  else:
    return name
  if math.isclose(length, default[0], rel_tol=1e-9) and (
    angle is None or math.isclose(angle, default[1], rel_tol=1e-9)
  ):
    return name
  text = f'{name} R={length:.6g} bohr'
  return text if angle is None else f'{text} angle={angle:.6g}'
