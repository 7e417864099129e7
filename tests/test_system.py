"""Systems: electrons, spins, units and nuclear repulsion."""

import csv
import importlib.resources

import numpy as np
import pytest

from ferminet import elements, errors, molecules
from ferminet import system as system_lib


@pytest.mark.parametrize('symbol', list(elements.ELEMENTS))
def test_neutral_atom_electrons(symbol):
  element = elements.get(symbol)
  na, nb = system_lib.make_system([system_lib.Atom(symbol)]).electrons
  assert na + nb == element.atomic_number
  assert na - nb == element.spin
  assert na >= nb >= 0


@pytest.mark.parametrize(
    'symbol, expected',
    [('H', (1, 0)), ('Li', (2, 1)), ('C', (4, 2)), ('N', (5, 2)), ('O', (5, 3)),
     ('Ne', (5, 5)), ('Cr', (15, 9)), ('Fe', (15, 11)), ('Kr', (18, 18))],
)  # fmt: skip
def test_known_ground_state_spins(symbol, expected):
  assert system_lib.make_system([system_lib.Atom(symbol)]).electrons == expected


def test_ions_and_explicit_spin():
  li = [system_lib.Atom('Li')]
  assert system_lib.make_system(li, charge=1).electrons == (1, 1)  # He-like, singlet
  assert system_lib.make_system(li, charge=2).electrons == (1, 0)
  assert system_lib.make_system([system_lib.Atom('O')], charge=1).electrons == (5, 2)
  assert system_lib.make_system([system_lib.Atom('C')], spin_polarisation=0).electrons == (3, 3)
  assert system_lib.make_system([system_lib.Atom('O')], electrons=(4, 4)).electrons == (4, 4)


@pytest.mark.parametrize(
  'kwargs',
  [
    {'spin_polarisation': 0},  # 3 electrons cannot be a singlet
    {'spin_polarisation': -1},
    {'spin_polarisation': 5},
    {'charge': 3},  # no electrons left
    {'charge': 5},
    {'electrons': (2, -1)},
    {'electrons': (0, 0)},
    {'electrons': (2, 1), 'spin_polarisation': 3},
    {'electrons': (2, 2), 'charge': 1},
  ],
)
def test_inconsistent_electrons_raise(kwargs):
  with pytest.raises(errors.InvalidSystemError):
    system_lib.make_system([system_lib.Atom('Li')], **kwargs)


def test_bad_atoms_raise():
  with pytest.raises(errors.InvalidSystemError, match='unknown element'):
    system_lib.Atom('Xx')
  with pytest.raises(errors.InvalidSystemError, match='same position'):
    system_lib.make_system([system_lib.Atom('H'), system_lib.Atom('H')])
  with pytest.raises(errors.InvalidSystemError, match='empty'):
    system_lib.make_system([])
  with pytest.raises(errors.InvalidSystemError, match='units'):
    system_lib.Atom('H', units='nm')


def test_units_conversion():
  atom = system_lib.Atom('H', (1.0, -2.0, 0.5), units='angstrom')
  np.testing.assert_allclose(atom.coords, np.array([1.0, -2.0, 0.5]) / 0.52917721092, rtol=1e-12)
  assert system_lib.Atom('H', (1.0, 0, 0), units='bohr').coords == (1.0, 0.0, 0.0)


def test_n2_nuclear_repulsion():
  atoms = molecules.build('N2')
  system = system_lib.make_system(atoms)
  assert system.electrons == (7, 7)
  assert system.nuclear_repulsion() == pytest.approx(49 / 2.068, rel=1e-12)
  # The same bond given in angstrom.
  atoms_a = molecules.build(
    'N2', bond_length=2.068 / system_lib.BOHR_PER_ANGSTROM, units='angstrom'
  )
  assert system_lib.make_system(atoms_a).nuclear_repulsion() == pytest.approx(49 / 2.068, rel=1e-12)


def _check_rows():
  path = importlib.resources.files('ferminet') / 'data' / 'geometries' / 'check.csv'
  with path.open() as f:
    return list(csv.DictReader(f))


@pytest.mark.parametrize('row', _check_rows(), ids=lambda r: r['file'])
def test_shipped_geometries(row):
  """Every shipped xyz: units read right (nuclear repulsion), neutral electron count."""
  with importlib.resources.as_file(molecules.geometry_path(row['file'])) as path:
    atoms, meta = system_lib.read_xyz(path)
  system = system_lib.make_system(atoms, spin_polarisation=0)
  assert system.nuclear_repulsion() == pytest.approx(float(row['nuclear_repulsion_Ha']), rel=1e-7)
  assert system.electrons == (int(row['electrons_alpha']), int(row['electrons_beta']))
  assert meta['units'] in ('bohr', 'angstrom') and meta['source']


def test_every_molecule_name_builds():
  for name in molecules.names():
    system = system_lib.make_system(molecules.build(name))
    assert system.charge == 0
  with pytest.raises(errors.ConfigError, match='known: '):
    molecules.build('unobtainium')


def test_xyz_units(tmp_path):
  """An xyz file without units= is angstrom (the xyz convention); units= or the argument wins."""
  plain = tmp_path / 'h2.xyz'
  plain.write_text('2\nhydrogen\nH 0 0 0\nH 0 0 0.74\n')
  atoms, _ = system_lib.read_xyz(plain)
  assert atoms[1].coords[2] == pytest.approx(0.74 * system_lib.BOHR_PER_ANGSTROM)
  atoms, _ = system_lib.read_xyz(plain, 'bohr')
  assert atoms[1].coords[2] == pytest.approx(0.74)
  tagged = tmp_path / 'h2_bohr.xyz'
  tagged.write_text('2\nunits=bohr\nH 0 0 0\nH 0 0 1.4\n')
  assert system_lib.read_xyz(tagged, 'angstrom')[0][1].coords[2] == pytest.approx(1.4)
  bad = tmp_path / 'bad.xyz'
  bad.write_text('1\n\nH 0 zero 0\n')
  with pytest.raises(errors.InvalidSystemError, match='bad coordinates'):
    system_lib.read_xyz(bad)
