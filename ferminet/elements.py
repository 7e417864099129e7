"""The periodic table: atomic number, period, group and ground-state spin polarisation.

``PERIODIC_TABLE`` holds every element (H–Og); ferminet computes with H–Kr
(``ELEMENTS``, what :func:`get` accepts), the range its basis sets and tests cover.

``spin`` is the number of unpaired electrons (n_alpha - n_beta) of the neutral atom
in its ground state: for main-group elements from the group (Hund's rules), for the
3d and 4d transition metals the experimental ground states (Cr 3d5 4s1 and Cu 3d10
4s1 included; Nb, Mo, Ru, Rh, Pd and Ag likewise), and None (unknown here) for the
5d and 6d metals, lanthanides and actinides.
"""

from __future__ import annotations

import dataclasses

from ferminet import errors

# First atomic number of each period (1-7).
_PERIOD_STARTS = (1, 3, 11, 19, 37, 55, 87)
_LAST_SUPPORTED = 36  # Kr
# Unpaired electrons of the neutral atom by main group.
_MAIN_GROUP_SPIN = {1: 1, 2: 0, 13: 1, 14: 2, 15: 3, 16: 2, 17: 1, 18: 0}

_SYMBOLS = (
  'H He '
  'Li Be B C N O F Ne '
  'Na Mg Al Si P S Cl Ar '
  'K Ca Sc Ti V Cr Mn Fe Co Ni Cu Zn Ga Ge As Se Br Kr '
  'Rb Sr Y Zr Nb Mo Tc Ru Rh Pd Ag Cd In Sn Sb Te I Xe '
  'Cs Ba La Ce Pr Nd Pm Sm Eu Gd Tb Dy Ho Er Tm Yb Lu Hf Ta W Re Os Ir Pt Au Hg Tl Pb Bi '
  'Po At Rn '
  'Fr Ra Ac Th Pa U Np Pu Am Cm Bk Cf Es Fm Md No Lr Rf Db Sg Bh Hs Mt Ds Rg Cn Nh Fl Mc '
  'Lv Ts Og'
).split()

# Ground-state unpaired electrons of the 3d and 4d transition metals (groups 3-12).
_D_BLOCK_SPIN = {
  'Sc': 1, 'Ti': 2, 'V': 3, 'Cr': 6, 'Mn': 5, 'Fe': 4, 'Co': 3, 'Ni': 2, 'Cu': 1, 'Zn': 0,
  'Y': 1, 'Zr': 2, 'Nb': 5, 'Mo': 6, 'Tc': 5, 'Ru': 4, 'Rh': 3, 'Pd': 0, 'Ag': 1, 'Cd': 0,
}  # fmt: skip


def _period(z: int) -> int:
  return sum(start <= z for start in _PERIOD_STARTS)


def _group(z: int, period: int) -> int:
  """IUPAC group 1-18, or -1 for the lanthanides Ce–Lu and actinides Th–Lr."""
  if 58 <= z <= 71 or 90 <= z <= 103:
    return -1
  if z == 2:
    return 18  # He: the first shell is full
  position = z - _PERIOD_STARTS[period - 1] + 1
  if period in (2, 3) and position > 2:
    return position + 10  # no d block before period 4
  if period >= 6 and position > 3:
    return position - 14  # the f block sits between groups 3 and 4
  return position


@dataclasses.dataclass(frozen=True)
class Element:
  """A chemical element.

  Attributes:
    symbol: IUPAC symbol.
    atomic_number: Z.
    period: row of the periodic table (1-7).
    spin: unpaired electrons (n_alpha - n_beta) of the neutral ground-state atom;
      None where not known here (see the module docstring).
  """

  symbol: str
  atomic_number: int
  period: int
  spin: int | None = None

  @property
  def group(self) -> int:
    """IUPAC group 1-18; -1 for the lanthanides (Ce–Lu) and actinides (Th–Lr)."""
    return _group(self.atomic_number, self.period)

  @property
  def spin_config(self) -> int:
    """``spin``, PySCF's number of unpaired electrons (the reference FermiNet's name).

    Raises:
      NotImplementedError: for elements whose ground-state spin is not known here.
    """
    if self.spin is None:
      raise NotImplementedError(f'ground-state spin of {self.symbol} is not known to ferminet')
    return self.spin

  @property
  def nalpha(self) -> int:
    """Spin-up electrons of the neutral ground-state atom (n_alpha >= n_beta)."""
    return (self.atomic_number + self.spin_config) // 2

  @property
  def nbeta(self) -> int:
    """Spin-down electrons of the neutral ground-state atom."""
    return (self.atomic_number - self.spin_config) // 2


def _make(z: int, symbol: str) -> Element:
  period = _period(z)
  spin = _D_BLOCK_SPIN.get(symbol, _MAIN_GROUP_SPIN.get(_group(z, period)))
  return Element(symbol, z, period, spin)


PERIODIC_TABLE: dict[str, Element] = {
  symbol: _make(z, symbol) for z, symbol in enumerate(_SYMBOLS, start=1)
}
# The elements ferminet computes with: H–Kr.
ELEMENTS: dict[str, Element] = {
  s: e for s, e in PERIODIC_TABLE.items() if e.atomic_number <= _LAST_SUPPORTED
}
_BY_NUMBER = {e.atomic_number: e for e in ELEMENTS.values()}


def get(symbol: str) -> Element:
  """Returns the element with this symbol (case-insensitive), or a clear error."""
  key = symbol.strip().capitalize()
  if key in PERIODIC_TABLE and key not in ELEMENTS:
    raise errors.InvalidSystemError(
      f'element {key} (Z = {PERIODIC_TABLE[key].atomic_number}) is not supported: ferminet '
      'computes with H to Kr'
    )
  if key not in ELEMENTS:
    raise errors.InvalidSystemError(
      f'unknown element symbol {symbol!r}: ferminet knows H to Kr ({", ".join(ELEMENTS)})'
    )
  return ELEMENTS[key]


def by_number(z: int) -> Element:
  """Returns the element with atomic number ``z`` (1–36)."""
  if z not in _BY_NUMBER:
    raise errors.InvalidSystemError(f'no element with atomic number {z} (1–36 supported)')
  return _BY_NUMBER[z]
