"""Periodic table H–Kr: atomic number and ground-state spin polarisation.

``spin`` is the number of unpaired electrons (n_alpha - n_beta) of the neutral atom
in its ground state (Hund's rules; Cr and Cu follow the experimental 3d5 4s1 and
3d10 4s1 configurations).
"""

import dataclasses

from ferminet import errors


@dataclasses.dataclass(frozen=True)
class Element:
  symbol: str
  atomic_number: int
  spin: int


_TABLE = (
    ('H', 1), ('He', 0), ('Li', 1), ('Be', 0), ('B', 1), ('C', 2), ('N', 3),
    ('O', 2), ('F', 1), ('Ne', 0), ('Na', 1), ('Mg', 0), ('Al', 1), ('Si', 2),
    ('P', 3), ('S', 2), ('Cl', 1), ('Ar', 0), ('K', 1), ('Ca', 0), ('Sc', 1),
    ('Ti', 2), ('V', 3), ('Cr', 6), ('Mn', 5), ('Fe', 4), ('Co', 3), ('Ni', 2),
    ('Cu', 1), ('Zn', 0), ('Ga', 1), ('Ge', 2), ('As', 3), ('Se', 2), ('Br', 1),
    ('Kr', 0),
)  # fmt: skip

ELEMENTS: dict[str, Element] = {
  symbol: Element(symbol, z, spin) for z, (symbol, spin) in enumerate(_TABLE, start=1)
}
_BY_NUMBER = {e.atomic_number: e for e in ELEMENTS.values()}


def get(symbol: str) -> Element:
  """Returns the element with this symbol (case-insensitive), or a clear error."""
  key = symbol.strip().capitalize()
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
