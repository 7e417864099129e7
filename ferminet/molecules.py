"""Named structures selected with ``--config.system.molecule_name NAME``.

Four kinds:
- diatomics by formula, read as DeepMind FermiNet's ``configs/diatomic.py`` reads them:
  ``A2`` (homonuclear, e.g. ``N2``, ``F2``, ``O2``) or ``AB`` (e.g. ``HCl``, ``CN``,
  ``LiH``). The nuclei lie on the x axis at -R/2 (A) and +R/2 (B), R being
  ``system.bond_length`` (in ``system.units``) times ``system.bond_length_multiple``.
  Without a bond length, the reference's default, in angstrom: BOND_LENGTHS_ANGSTROM (G3).
  Default spin: DIATOMIC_SPIN (the triplets O2, B2, NH, AlN), else 0 or 1;
- the FermiNet 2020 paper's diatomic geometries (DIATOMICS, bohr) are the same formulas
  with their bond length given, e.g. ``N2`` with ``bond_length=2.068, units='bohr'``;
  only at those lengths is a diatomic labelled by its bare formula (the rows of
  ``ferminet/data/energies.csv`` belong to those geometries);
- hydrogen models built from lengths and counts: ``H4`` (four H on a circle of radius
  ``bond_length``, ``angle`` in degrees; 90 is the square), ``Hn`` (a linear chain of
  ``natoms`` H with spacing ``bond_length``) and ``H10`` (that chain with ten atoms);
- fixed geometries shipped as xyz files in ``ferminet/data/geometries`` (units
  and source in each file's comment line).

Every length returned is in bohr.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.resources
import math
import re
from collections.abc import Callable

from ferminet import elements, errors
from ferminet import system as system_lib

# Default bond lengths in angstrom of DeepMind FermiNet's ferminet/configs/diatomic.py
# (the same table is in its ferminet/utils/system.py): the G3 geometries (Curtiss,
# Redfern, Raghavachari & Pople, J. Chem. Phys. 109, 42 (1998);
# http://www.cse.anl.gov/OldCHMwebsiteContent/compmat/comptherm.htm), except the four
# marked, which are not in G3 (experimental values, NIST CCCBDB,
# https://cccbdb.nist.gov/diatomicexpbondx.asp, as the reference's utils/system.py says).
BOND_LENGTHS_ANGSTROM: dict[str, float] = {
  'AlH': 1.648,  # not in G3
  'AlN': 1.786,  # not in G3
  'BeH': 1.348263,
  'BH': 1.2324,  # not in G3
  'ClF': 1.659091,
  'CN': 1.134797,
  'CO': 1.150338,
  'F2': 1.420604,
  'H2': 0.737164,
  'HCl': 1.2799799,
  'Li2': 2.77306,
  'LiH': 1.639999,
  'N2': 1.129978,
  'NH': 1.039428,
  'PN': 1.491,  # not in G3
}

# Default spin polarisation (n_alpha - n_beta) of the diatomics DeepMind FermiNet's
# configs/diatomic.py lists as not the lowest spin (its SPIN_POLARISATION): triplet ground
# states. Every other neutral diatomic: 0 (even electron count) or 1 (odd).
DIATOMIC_SPIN: dict[str, int] = {'AlN': 2, 'B2': 2, 'NH': 2, 'O2': 2}

# The FermiNet 2020 paper's diatomic geometries: name -> (symbol A, symbol B, bond length
# in bohr, source). Selected as the formula with this bond length (units bohr); only
# then is the label the bare formula, which names a row of ferminet/data/energies.csv.
DIATOMICS: dict[str, tuple[str, str, float, str]] = {
  'H2': ('H', 'H', 1.4, 'Kolos & Wolniewicz equilibrium, 1.4 bohr'),
  'LiH': ('Li', 'H', 3.015, 'FermiNet PRR 2020 Table II'),
  'Li2': ('Li', 'Li', 5.051, 'FermiNet PRR 2020 Table II'),
  'N2': ('N', 'N', 2.068, 'FermiNet PRR 2020 Table II'),
  'CO': ('C', 'O', 2.173, 'FermiNet PRR 2020 Table II'),
}

_FORMULA = re.compile(r'([A-Z][a-z]?)(2|[A-Z][a-z]?)')


def diatomic_symbols(name: str) -> tuple[str, str] | None:
  """The two element symbols of a diatomic formula ('N2' -> ('N', 'N'), 'HCl' -> ('H',
  'Cl')), or None when ``name`` is not ``A2`` or ``AB`` of known elements."""
  match = _FORMULA.fullmatch(name)
  if match is None:
    return None
  a, b = match.group(1), match.group(2)
  b = a if b == '2' else b
  if a not in elements.ELEMENTS or b not in elements.ELEMENTS:
    return None
  return a, b


def _h4(radius: float, angle: float, natoms: int | None) -> list[system_lib.Atom]:
  """Four H at (±R cos(θ/2), ±R sin(θ/2), 0), R in bohr, θ in degrees.

  The sides are 2R sin(θ/2) and 2R cos(θ/2): θ = 90 is the square, other
  angles a rectangle (the H4 study of the FermiNet 2020 paper, after Gasperich,
  Deible & Jordan, J. Chem. Phys. 147, 074106 (2017)).
  """
  half = math.radians(angle) / 2
  x, y = radius * math.cos(half), radius * math.sin(half)
  return [system_lib.Atom('H', (sx * x, sy * y, 0.0)) for sx in (1, -1) for sy in (1, -1)]


def _chain(spacing: float, angle: float | None, natoms: int) -> list[system_lib.Atom]:
  """``natoms`` H on the x axis, ``spacing`` bohr apart, centred at the origin."""
  return [system_lib.Atom('H', ((i - (natoms - 1) / 2) * spacing, 0.0, 0.0)) for i in range(natoms)]


@dataclasses.dataclass(frozen=True)
class Parametric:
  """A structure built from a length (bohr), an angle (degrees) and an atom count."""

  make: Callable[[float, float | None, int | None], list[system_lib.Atom]]
  length: float  # default of system.bond_length, bohr
  angle: float | None  # default of system.angle, degrees; None: no angle parameter
  natoms: int | None  # default of system.natoms; None: not a parameter
  length_meaning: str  # what system.bond_length means for this structure
  source: str


# name -> how to build it
PARAMETRIC: dict[str, Parametric] = {
  'H4': Parametric(
    _h4,
    1.738 * system_lib.BOHR_PER_ANGSTROM,  # the radius of DeepMind ferminet/configs/h4.py
    90.0,
    None,
    'radius of the circle the four H lie on',
    'FermiNet PRR 2020 H4 study (DeepMind ferminet configs/h4.py: R = 1.738 Å, θ = 90°)',
  ),
  'Hn': Parametric(
    _chain,
    1.4,  # bohr: the defaults of DeepMind ferminet/configs/hn.py (bond_length 1.4, natoms 2)
    None,
    2,
    'spacing between neighbouring H',
    'linear H chain of system.natoms atoms (DeepMind ferminet configs/hn.py)',
  ),
  'H10': Parametric(
    lambda spacing, angle, natoms: _chain(spacing, angle, 10),
    1.8,  # bohr, the spacing of the reference energy in ferminet/data/energies.csv
    None,
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
  """Every molecule name that builds without parameters (any other diatomic formula
  builds with ``bond_length``)."""
  return sorted({*BOND_LENGTHS_ANGSTROM, *DIATOMICS, *PARAMETRIC, *XYZ}, key=str.lower)


def geometry_path(filename: str):
  """Path (a Traversable) of a shipped geometry file."""
  return importlib.resources.files('ferminet') / 'data' / 'geometries' / filename


@functools.cache
def _read_shipped(filename: str) -> tuple[tuple[system_lib.Atom, ...], tuple[tuple[str, str], ...]]:
  with importlib.resources.as_file(geometry_path(filename)) as path:
    atoms, meta = system_lib.read_xyz(path)
  return tuple(atoms), tuple(meta.items())


def source(name: str) -> str:
  """Where the default geometry of ``name`` comes from."""
  name = canonical(name)
  if name in PARAMETRIC:
    return PARAMETRIC[name].source
  if name in XYZ:
    return dict(_read_shipped(XYZ[name])[1]).get('source', XYZ[name])
  if name in BOND_LENGTHS_ANGSTROM:
    return (
      f'{BOND_LENGTHS_ANGSTROM[name]} Å, DeepMind ferminet configs/diatomic.py (G3 geometries, '
      'Curtiss et al., J. Chem. Phys. 109, 42 (1998), unless marked in molecules.py)'
    )
  return 'system.bond_length (no default bond length)'


def spin_polarisation(name: str) -> int | None:
  """The default n_alpha - n_beta of the neutral structure ``name``; None: the lowest."""
  return DIATOMIC_SPIN.get(canonical(name))


def canonical(name: str) -> str:
  """The known spelling of a molecule name: a known name, a diatomic formula (e.g.
  'NaCl'), else a unique case-insensitive match of a known name."""
  known = names()
  if name in known or diatomic_symbols(name):
    return name
  matches = [k for k in known if k.lower() == name.lower()]
  if len(matches) != 1:
    raise errors.ConfigError(
      f'unknown molecule_name {name!r}; known: {", ".join(known)}; or any diatomic formula '
      "A2 or AB (e.g. 'NaCl') with system.bond_length"
    )
  return matches[0]


@dataclasses.dataclass(frozen=True)
class _Geometry:
  length: float | None  # bohr
  angle: float | None  # degrees
  natoms: int | None


def _geometry(
  name: str,
  bond_length: float | None,
  angle: float | None,
  units: str,
  bond_length_multiple: float,
  natoms: int | None,
) -> _Geometry:
  """The parameters of a canonical name, defaults filled in and checked."""
  diatomic = name not in PARAMETRIC and name not in XYZ
  if not bond_length_multiple > 0:
    raise errors.ConfigError(f'system.bond_length_multiple must be > 0, got {bond_length_multiple}')
  if bond_length_multiple != 1.0 and not diatomic:
    raise errors.ConfigError(
      f'system.bond_length_multiple scales the bond of a diatomic; molecule {name!r} is none'
    )
  parametric = PARAMETRIC.get(name)
  if natoms is not None and (parametric is None or parametric.natoms is None):
    raise errors.ConfigError(
      f"system.natoms is the length of the H chain 'Hn' (configs/hn.py), not of {name!r}"
    )
  if angle is not None and (parametric is None or parametric.angle is None):
    raise errors.ConfigError(f'system.angle is not used by molecule {name!r}')
  if name in XYZ:
    if bond_length is not None:
      raise errors.ConfigError(
        f'molecule {name!r} has a fixed geometry: system.bond_length does not apply'
      )
    return _Geometry(None, None, None)
  if bond_length is not None:
    length = float(bond_length) * system_lib.unit_scale(units)
    if not length > 0:
      raise errors.ConfigError(f'bond_length must be > 0, got {bond_length}')
  elif parametric is not None:
    length = parametric.length
  elif name in BOND_LENGTHS_ANGSTROM:
    length = BOND_LENGTHS_ANGSTROM[name] * system_lib.BOHR_PER_ANGSTROM
  else:
    raise errors.ConfigError(
      f'no default bond length for {name!r} (defaults: {", ".join(BOND_LENGTHS_ANGSTROM)}): '
      'set --config.system.bond_length (in system.units)'
    )
  if parametric is None:
    return _Geometry(length * bond_length_multiple, None, None)
  if angle is not None:
    angle = float(angle)
    if not 0 < angle < 180:
      raise errors.ConfigError(f'system.angle must be between 0 and 180 degrees, got {angle}')
  if natoms is not None and not (int(natoms) == natoms and natoms >= 1):
    raise errors.ConfigError(f'system.natoms must be a whole number >= 1, got {natoms}')
  return _Geometry(
    length,
    parametric.angle if angle is None else angle,
    parametric.natoms if natoms is None else int(natoms),
  )


def build(
  name: str,
  bond_length: float | None = None,
  angle: float | None = None,
  units: str = 'bohr',
  bond_length_multiple: float = 1.0,
  natoms: int | None = None,
) -> list[system_lib.Atom]:
  """The atoms of a named structure, coordinates in bohr.

  Args:
    name: a diatomic formula, a key of PARAMETRIC or of XYZ (case-sensitive; a unique
      case-insensitive match of a known name is accepted).
    bond_length: diatomics: the bond; H4: the circle's radius; Hn and H10: the
      spacing. In ``units``. None: the default (see the module docstring).
    angle: in degrees; only for structures with an angle (H4). None: the default.
    units: units of ``bond_length`` ('bohr' or 'angstrom').
    bond_length_multiple: diatomics only: the bond is ``bond_length`` times this.
    natoms: Hn only: the number of H atoms (default 2).
  """
  name = canonical(name)
  g = _geometry(name, bond_length, angle, units, bond_length_multiple, natoms)
  if name in XYZ:
    return list(_read_shipped(XYZ[name])[0])
  if name in PARAMETRIC:
    return PARAMETRIC[name].make(g.length, g.angle, g.natoms)
  a, b = diatomic_symbols(name)
  half = g.length / 2
  return [system_lib.Atom(a, (-half, 0.0, 0.0)), system_lib.Atom(b, (half, 0.0, 0.0))]


def label(
  name: str,
  bond_length: float | None = None,
  angle: float | None = None,
  units: str = 'bohr',
  bond_length_multiple: float = 1.0,
  natoms: int | None = None,
) -> str:
  """The system name of a structure, for the reference energy table.

  A diatomic is its bare formula only at the FermiNet 2020 paper's bond length
  (DIATOMICS), the geometry of its row in ``ferminet/data/energies.csv``; at any other
  length, its default (G3) one included, the bond is appended: ``'N2 R=2.13534 bohr'``.
  Other structures: ``name`` at the default geometry, else with the parameters appended
  (``'H4 R=3.28434 bohr angle=85'``, ``'H6 chain R=1.4 bohr'``), so that a reference
  energy is only matched at the geometry it belongs to.
  """
  name = canonical(name)
  g = _geometry(name, bond_length, angle, units, bond_length_multiple, natoms)
  if name in XYZ:
    return name
  if name == 'Hn':  # the chain under the name of the same structure, if it has one
    if g.natoms == 1:
      return 'H'
    if g.natoms in (2, 10):
      return label('H2' if g.natoms == 2 else 'H10', g.length)
    return f'H{g.natoms} chain R={g.length:.6g} bohr'
  if name in PARAMETRIC:
    p = PARAMETRIC[name]
    if math.isclose(g.length, p.length, rel_tol=1e-9) and (
      g.angle is None or math.isclose(g.angle, p.angle, rel_tol=1e-9)
    ):
      return name
    text = f'{name} R={g.length:.6g} bohr'
    return text if g.angle is None else f'{text} angle={g.angle:.6g}'
  if name in DIATOMICS and math.isclose(g.length, DIATOMICS[name][2], rel_tol=1e-9):
    return name
  return f'{name} R={g.length:.6g} bohr'
