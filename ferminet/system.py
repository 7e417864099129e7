"""Physical systems: atoms, molecules, electrons and units.

Everything inside ferminet is in atomic units (bohr, hartree). Units are
converted exactly once, here, when an :class:`Atom` is made.
"""

from __future__ import annotations

import dataclasses
import itertools
import pathlib
import warnings
from collections.abc import Sequence

import numpy as np

from ferminet import elements, errors

# 1 Å = 1/0.52917721092 bohr (CODATA 2010, the value PySCF uses).
BOHR_PER_ANGSTROM = 1.0 / 0.52917721092
_UNITS = {'bohr': 1.0, 'angstrom': BOHR_PER_ANGSTROM}
# The atomic unit of electric dipole moment, e·a0 = 8.478 353 6255e-30 C m (CODATA 2018,
# NIST "atomic unit of electric dipole mom."), and the debye, 1 D = 1e-21 / c C m with
# c = 299 792 458 m/s exact (so 1 D = 3.335 640 952e-30 C m): 1 e·bohr = 2.541 746 D.
DEBYE_PER_AU = 8.4783536255e-30 / (1e-21 / 299792458.0)


def unit_scale(units: str) -> float:
  """Factor that converts a length in ``units`` ('bohr' or 'angstrom') to bohr."""
  key = str(units).strip().lower()
  if key in ('a', 'ang', 'angstroms'):
    key = 'angstrom'
  if key not in _UNITS:
    raise errors.InvalidSystemError(
      f"unknown units {units!r}: use 'bohr' or 'angstrom' (--config.system.units)"
    )
  return _UNITS[key]


@dataclasses.dataclass(frozen=True)
class Atom:
  """One nucleus.

  The same class is ``ferminet.utils.system.Atom``, with the reference FermiNet's
  fields in its order, so that its config files' ``system.Atom('H', (0, 0, 0.7))``
  (positional or keyword) work unchanged.

  Attributes:
    symbol: element symbol, H–Kr.
    coords: position in bohr, shape (3,). Given in ``units`` at construction and
      converted to bohr once.
    charge: nuclear charge in units of e; defaults to the atomic number (a
      different value models e.g. a fractional nuclear charge).
    atomic_number: defaults to the element's Z; the number of electrons of the
      neutral atom (counted when electrons are derived from the charge).
    units: the units ``coords`` were given in ('bohr' or 'angstrom'); 'bohr' once
      made, since ``coords`` are then in bohr.
  """

  symbol: str
  coords: tuple[float, float, float] = (0.0, 0.0, 0.0)
  charge: float | None = None
  atomic_number: int | None = None
  units: str = 'bohr'

  def __post_init__(self):
    element = elements.get(self.symbol)
    coords = tuple(float(c) for c in np.asarray(self.coords, dtype=float).reshape(-1))
    if len(coords) != 3:
      raise errors.InvalidSystemError(
        f'atom {self.symbol}: coordinates must be 3 numbers, got {self.coords!r}'
      )
    if not all(np.isfinite(coords)):
      raise errors.InvalidSystemError(f'atom {self.symbol}: non-finite coordinates {coords}')
    scale = unit_scale(self.units)
    object.__setattr__(self, 'symbol', element.symbol)
    object.__setattr__(self, 'coords', tuple(c * scale for c in coords))
    object.__setattr__(self, 'units', 'bohr')
    charge = float(element.atomic_number if self.charge is None else self.charge)
    if charge <= 0:
      raise errors.InvalidSystemError(f'atom {self.symbol}: nuclear charge must be > 0')
    object.__setattr__(self, 'charge', charge)
    z = element.atomic_number if self.atomic_number is None else self.atomic_number
    if int(z) != z or z < 1:
      raise errors.InvalidSystemError(
        f'atom {self.symbol}: atomic_number must be a positive integer, got {z!r}'
      )
    object.__setattr__(self, 'atomic_number', int(z))

  @property
  def element(self) -> elements.Element:
    """The element of ``symbol``."""
    return elements.get(self.symbol)

  @property
  def coords_array(self) -> np.ndarray:
    """``coords`` as a float array, shape (3,), bohr."""
    return np.array(self.coords, dtype=float)

  @property
  def coords_angstrom(self) -> list[float]:
    """``coords`` in angstrom (a list, as in the reference)."""
    return [c / BOHR_PER_ANGSTROM for c in self.coords]


@dataclasses.dataclass(frozen=True)
class System:
  """Nuclei and electrons of one calculation, in atomic units.

  With pseudopotentials (``pseudopotential``), the electrons are the valence ones:
  each atom of ``cores`` > 0 has lost that many core electrons, and its nucleus
  acts with the effective charge Z − core (``charges``) plus the ECP.

  Attributes:
    atoms: the nuclei.
    electrons: (n_alpha, n_beta).
    pp_type: the pseudopotential family (a PySCF ECP name, e.g. 'ccecp'); '' for none.
    pp_symbols: the elements that carry one.
    cores: core electrons their pseudopotentials replace, per atom (0 for the
      others); () without pseudopotentials.
  """

  atoms: tuple[Atom, ...]
  electrons: tuple[int, int]
  pp_type: str = ''
  pp_symbols: tuple[str, ...] = ()
  cores: tuple[int, ...] = ()

  def __post_init__(self):
    if self.cores and len(self.cores) != len(self.atoms):
      raise ValueError(f'cores {self.cores} do not match {len(self.atoms)} atoms')

  @property
  def coords(self) -> np.ndarray:
    """Nuclear positions in bohr, shape (n_atoms, 3)."""
    return np.array([a.coords for a in self.atoms], dtype=float).reshape(-1, 3)

  @property
  def charges(self) -> np.ndarray:
    """Nuclear charges seen by the electrons, shape (n_atoms,): Z, or with a
    pseudopotential the effective charge Z − core."""
    return np.array([a.charge for a in self.atoms], dtype=float) - self.core_counts

  @property
  def core_counts(self) -> np.ndarray:
    """Core electrons replaced by pseudopotentials, per atom, shape (n_atoms,)."""
    return np.array(self.cores or [0] * len(self.atoms), dtype=float)

  @property
  def pseudo_atoms(self) -> tuple[int, ...]:
    """Indices of the atoms with a pseudopotential."""
    return tuple(i for i, a in enumerate(self.atoms) if a.symbol in self.pp_symbols)

  @property
  def symbols(self) -> tuple[str, ...]:
    return tuple(a.symbol for a in self.atoms)

  @property
  def n_electrons(self) -> int:
    return sum(self.electrons)

  @property
  def charge(self) -> float:
    """Total charge: sum of nuclear charges minus the number of electrons."""
    return float(self.charges.sum()) - self.n_electrons

  @property
  def spin(self) -> int:
    """n_alpha - n_beta (PySCF's ``spin``, 2S)."""
    return self.electrons[0] - self.electrons[1]

  def nuclear_repulsion(self) -> float:
    """Nucleus–nucleus Coulomb energy sum_{I<J} Z_I Z_J / R_IJ in hartree."""
    return nuclear_repulsion(self.coords, self.charges)


def nuclear_repulsion(coords: np.ndarray, charges: np.ndarray) -> float:
  """sum_{I<J} Z_I Z_J / |R_I - R_J| for coords (n_atoms, 3) in bohr; hartree."""
  energy = 0.0
  for i, j in itertools.combinations(range(len(charges)), 2):
    energy += charges[i] * charges[j] / np.linalg.norm(coords[i] - coords[j])
  return float(energy)


def check_nuclei(atoms: Sequence[Atom], min_distance: float = 1e-3) -> None:
  """Raises if there are no atoms or two nuclei (nearly) coincide (distance in bohr)."""
  if not atoms:
    raise errors.InvalidSystemError(
      'the molecule is empty: give --config.system.atom, '
      '--config.system.molecule_name or a list of atoms'
    )
  for a, b in itertools.combinations(atoms, 2):
    d = float(np.linalg.norm(np.subtract(a.coords, b.coords)))
    if d < min_distance:
      raise errors.InvalidSystemError(
        f'two nuclei ({a.symbol} and {b.symbol}) are at the same position '
        f'{a.coords} bohr (distance {d:.2e} bohr); check the geometry and its units'
      )


def electrons_from(
  atoms: Sequence[Atom],
  charge: int = 0,
  spin_polarisation: int | None = None,
  electrons: Sequence[int] | None = None,
) -> tuple[int, int]:
  """Derives (n_alpha, n_beta) from the nuclei, total charge and spin.

  Args:
    atoms: the nuclei; the electron count is the sum of atomic numbers minus
      ``charge``.
    charge: total charge of the system in units of e.
    spin_polarisation: n_alpha - n_beta. If None: the element's ground-state
      spin for a single atom (after removing or adding electrons: the lowest
      spin consistent with the parity otherwise), and 0 or 1 for molecules.
    electrons: explicit (n_alpha, n_beta); checked against charge and spin if
      those are given.

  Returns:
    (n_alpha, n_beta) with n_alpha >= n_beta >= 0.
  """
  n_nuclear = sum(a.atomic_number for a in atoms)
  if electrons is not None and len(electrons) > 0:
    if len(electrons) != 2 or any(int(n) != n for n in electrons):
      raise errors.InvalidSystemError(
        f'electrons must be two integers (n_alpha, n_beta), got {tuple(electrons)!r}'
      )
    na, nb = (int(n) for n in electrons)
    if na < 0 or nb < 0 or na + nb == 0:
      raise errors.InvalidSystemError(
        f'electrons ({na}, {nb}): each spin channel needs >= 0 electrons and '
        'at least one electron in total'
      )
    if charge and n_nuclear - (na + nb) != charge:
      raise errors.InvalidSystemError(
        f'electrons ({na}, {nb}) give charge {n_nuclear - na - nb}, but system.charge is {charge}'
      )
    if spin_polarisation is not None and na - nb != spin_polarisation:
      raise errors.InvalidSystemError(
        f'electrons ({na}, {nb}) have spin polarisation {na - nb}, '
        f'but system.spin_polarisation is {spin_polarisation}'
      )
    return na, nb
  n = n_nuclear - int(charge)
  if n <= 0:
    raise errors.InvalidSystemError(
      f'charge {charge} leaves {n} electrons (nuclear charge {n_nuclear}): '
      'lower --config.system.charge'
    )
  if spin_polarisation is None:
    if len(atoms) == 1 and charge == 0:
      spin_polarisation = elements.get(atoms[0].symbol).spin
    elif len(atoms) == 1:
      # An ion: isoelectronic neutral atom's ground-state spin, if known.
      try:
        spin_polarisation = elements.by_number(n).spin
      except errors.InvalidSystemError:
        spin_polarisation = n % 2
    else:
      spin_polarisation = n % 2
  spin = int(spin_polarisation)
  if spin < 0:
    raise errors.InvalidSystemError(
      f'spin_polarisation {spin} < 0: use n_alpha >= n_beta (a positive value)'
    )
  if (n - spin) % 2:
    raise errors.InvalidSystemError(
      f'{n} electrons cannot have spin polarisation {spin} (n_alpha - n_beta): '
      f'parity differs; use {" or ".join(str(v) for v in sorted({spin + 1, max(spin - 1, n % 2)}))}'
    )
  if spin > n:
    raise errors.InvalidSystemError(f'spin polarisation {spin} exceeds the number of electrons {n}')
  return (n + spin) // 2, (n - spin) // 2


def make_system(
  atoms: Sequence[Atom],
  charge: int = 0,
  spin_polarisation: int | None = None,
  electrons: Sequence[int] | None = None,
) -> System:
  """Builds a checked :class:`System` (see :func:`electrons_from`)."""
  atoms = tuple(atoms)
  check_nuclei(atoms)
  return System(atoms, electrons_from(atoms, charge, spin_polarisation, electrons))


def core_electrons(pp_type: str, symbol: str) -> int:
  """Core electrons of PySCF's ``pp_type`` pseudopotential (e.g. 'ccecp') for ``symbol``.

  Raises:
    errors.ConfigError: PySCF has no such pseudopotential for the element.
  """
  from pyscf import gto  # noqa: PLC0415 - PySCF is slow to import; only ECP runs need it here

  try:
    with warnings.catch_warnings():  # PySCF suggests installing basis-set-exchange
      warnings.simplefilter('ignore')
      table = gto.basis.load_ecp(str(pp_type), symbol)
  except Exception:  # noqa: BLE001 - any failure means "not available"
    table = None
  if not table:
    raise errors.ConfigError(
      f'PySCF has no {pp_type!r} pseudopotential for {symbol}: choose another '
      '--config.system.pp.type or leave the element out of --config.system.pp.symbols'
    )
  return int(table[0])


def with_pseudopotentials(
  system: System, pp_type: str, symbols: Sequence[str], valence: bool | None = None
) -> System:
  """``system`` with pseudopotentials on the atoms of ``symbols``: their core electrons go.

  The electrons of ``system`` may count every electron (as the reference's config
  files give them, e.g. HCl (9, 9)) or the valence electrons only; either way the
  result holds the valence ones: half the core electrons are removed from each
  spin channel (ccECP cores are closed shells). The total charge is kept.
  ``valence``: whether the electrons are the valence ones; None: they are if
  ``system`` has cores already or is neutral counting valence electrons only.

  Raises:
    errors.ConfigError: an element of ``symbols`` is not in the molecule, PySCF has
      no such pseudopotential, or the electrons do not fit.
  """
  symbols = tuple(dict.fromkeys(elements.get(s).symbol for s in symbols))
  missing = [s for s in symbols if s not in system.symbols]
  if missing:
    raise errors.ConfigError(
      f'system.pp.symbols names {", ".join(missing)}, which the molecule '
      f'({", ".join(dict.fromkeys(system.symbols))}) does not contain'
    )
  if not symbols:
    raise errors.ConfigError(
      "system.use_pp needs system.pp.symbols: the elements to give pseudopotentials, e.g. ['Cl']"
    )
  cores = tuple(
    core_electrons(pp_type, a.symbol) if a.symbol in symbols else 0 for a in system.atoms
  )
  base = System(system.atoms, system.electrons)
  total = sum(cores)
  na, nb = system.electrons
  if valence is None:
    valence = bool(system.cores) or bool(total and base.charge == total)
  if valence:
    pass  # the electrons are the valence ones already
  elif total % 2 or min(na, nb) < total // 2:
    raise errors.ConfigError(
      f'electrons ({na}, {nb}) cannot lose the {total} core electrons of the pseudopotentials '
      'half from each spin channel'
    )
  else:
    na, nb = na - total // 2, nb - total // 2
  return System(system.atoms, (na, nb), str(pp_type), symbols, cores)


def read_xyz(
  path: str | pathlib.Path, units: str | None = None
) -> tuple[list[Atom], dict[str, str]]:
  """Reads an xyz file.

  The comment line may hold ``key=value`` pairs (``units=angstrom``,
  ``charge=0``, ``source=...``); ``units`` there wins over the ``units``
  argument, which defaults to angstrom (the xyz convention).

  Returns:
    The atoms (in bohr) and the metadata of the comment line.
  """
  path = pathlib.Path(path)
  if not path.is_file():
    raise errors.InvalidSystemError(f'xyz file {str(path)!r} does not exist')
  lines = path.read_text().splitlines()
  try:
    n = int(lines[0].split()[0])
  except (IndexError, ValueError):
    raise errors.InvalidSystemError(
      f'{path.name}: first line must be the number of atoms'
    ) from None
  meta = {}
  for token in (lines[1] if len(lines) > 1 else '').split():
    if '=' in token:
      key, value = token.split('=', 1)
      meta[key] = value
  file_units = meta.get('units', units or 'angstrom')
  atoms = []
  for line in lines[2 : 2 + n]:
    parts = line.split()
    if len(parts) < 4:
      raise errors.InvalidSystemError(f'{path.name}: bad atom line {line!r}')
    try:
      coords = tuple(float(x) for x in parts[1:4])
    except ValueError:
      raise errors.InvalidSystemError(f'{path.name}: bad coordinates in line {line!r}') from None
    atoms.append(Atom(parts[0], coords, units=file_units))
  if len(atoms) != n:
    raise errors.InvalidSystemError(f'{path.name}: expected {n} atoms, found {len(atoms)}')
  return atoms, meta


def _ecp_name(mol) -> str:
  """The one named pseudopotential family of a Mole's ``ecp`` ('ccecp' or {'Cl': 'ccecp'})."""
  spec = mol.ecp
  names = (
    {spec} if isinstance(spec, str) else set(spec.values()) if isinstance(spec, dict) else set()
  )
  if len(names) != 1 or not all(isinstance(n, str) and n.strip() for n in names):
    raise errors.ConfigError(
      f'system.pyscf_mol has ecp={spec!r}: ferminet needs one named pseudopotential family '
      "for all its ECP atoms (e.g. ecp='ccecp' or {'Cl': 'ccecp'}), not tables or a mix"
    )
  return names.pop().strip()


def from_pyscf(mol) -> System:
  """A :class:`System` from a built PySCF ``gto.Mole`` (geometry, charge and spin).

  A Mole with an effective core potential keeps it: its ``mol.nelec`` are the valence
  electrons, and the atoms with an ECP get the pseudopotential of that name
  (:func:`with_pseudopotentials`).

  Raises:
    errors.ConfigError: the ECP is not one named family (see :func:`_ecp_name`).
  """
  coords = np.asarray(mol.atom_coords(unit='Bohr'))
  atoms = [Atom(mol.atom_pure_symbol(i), tuple(coords[i]), units='bohr') for i in range(mol.natm)]
  system = make_system(atoms, electrons=mol.nelec) if not mol.has_ecp() else None
  if system is not None:
    return system
  check_nuclei(atoms)
  symbols = [mol.atom_pure_symbol(i) for i in range(mol.natm)]
  with_ecp = [s for s in dict.fromkeys(symbols) if s in mol._ecp]
  electrons = tuple(int(n) for n in mol.nelec)
  return with_pseudopotentials(System(tuple(atoms), electrons), _ecp_name(mol), with_ecp, True)
