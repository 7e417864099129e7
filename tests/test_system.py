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
  atoms = molecules.build('N2', bond_length=2.068)  # the 2020 paper's N2, bohr
  system = system_lib.make_system(atoms)
  assert system.electrons == (7, 7)
  assert system.nuclear_repulsion() == pytest.approx(49 / 2.068, rel=1e-12)
  g3 = system_lib.make_system(molecules.build('N2'))  # default: 1.129978 Å (G3)
  assert g3.nuclear_repulsion() == pytest.approx(
    49 / (1.129978 * system_lib.BOHR_PER_ANGSTROM), rel=1e-12
  )
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


# Single-bond covalent radii in Å (Cordero et al., Dalton Trans. 2008, 2832; C sp3).
COVALENT_RADIUS = {
  'H': 0.31, 'Li': 1.28, 'Be': 0.96, 'B': 0.84, 'C': 0.76, 'N': 0.71, 'O': 0.66, 'F': 0.57,
  'Al': 1.21, 'P': 1.07, 'Cl': 1.02,
}  # fmt: skip
BOND_STRETCH = 1.3  # a neighbour farther than 1.3 x (r_a + r_b) is no bond
MODEL_SYSTEMS = ('H4', 'H10')  # stretched-bond hydrogen models, checked against their definition


def _distances_angstrom(system):
  coords = system.coords / system_lib.BOHR_PER_ANGSTROM
  d = np.linalg.norm(coords[:, None] - coords[None], axis=-1)
  np.fill_diagonal(d, np.inf)
  return d


@pytest.mark.parametrize('name', molecules.names())
def test_every_structure_is_physical(name):
  """Neutral; nuclei >= 0.5 Å apart; each atom bonded to a neighbour (bohr read as Å fails)."""
  system = system_lib.make_system(molecules.build(name))
  assert system.n_electrons == pytest.approx(system.charges.sum())
  d = _distances_angstrom(system)
  assert d.min() >= 0.5, f'{name}: nuclei {d.min():.3f} Å apart'
  if name in MODEL_SYSTEMS:
    return
  for i, a in enumerate(system.symbols):
    bonds = [
      d[i, j] <= BOND_STRETCH * (COVALENT_RADIUS[a] + COVALENT_RADIUS[b])
      for j, b in enumerate(system.symbols)
      if j != i
    ]
    assert any(bonds), f'{name}: atom {i} ({a}) has no neighbour within bonding distance'


def test_bohr_read_as_angstrom_is_caught():
  """The bonding check above rejects a structure whose bohr numbers were read as Å."""
  for name in ('N2', 'CH4', 'LiH'):
    wrong = [
      system_lib.Atom(a.symbol, a.coords, units='angstrom') for a in molecules.build(name)
    ]  # bohr values taken as Å
    system = system_lib.make_system(wrong)
    d = _distances_angstrom(system)
    ok = [
      any(d[i, j] <= BOND_STRETCH * (COVALENT_RADIUS[a] + COVALENT_RADIUS[b])
          for j, b in enumerate(system.symbols) if j != i)
      for i, a in enumerate(system.symbols)
    ]  # fmt: skip
    assert not all(ok), name


@pytest.mark.parametrize('name, xyz', [('LiH', 'prr_LiH.xyz'), ('Li2', 'prr_Li2.xyz'),
                                       ('N2', 'prr_N2.xyz'), ('CO', 'prr_CO.xyz')])  # fmt: skip
def test_paper_diatomics_match_paper_geometries(name, xyz):
  """molecules.DIATOMICS (bohr) are the 2020 paper's, labelled by the bare formula there."""
  row = next(r for r in _check_rows() if r['file'] == xyz)
  bond = molecules.DIATOMICS[name][2]
  system = system_lib.make_system(molecules.build(name, bond))
  assert system.nuclear_repulsion() == pytest.approx(float(row['nuclear_repulsion_Ha']), rel=1e-7)
  assert molecules.label(name, bond) == name
  assert molecules.label(name, bond / system_lib.BOHR_PER_ANGSTROM, units='angstrom') == name
  assert molecules.label(name).startswith(f'{name} R=')  # the default (G3) is another geometry


def test_diatomic_formulas():
  assert molecules.diatomic_symbols('N2') == ('N', 'N')
  assert molecules.diatomic_symbols('HCl') == ('H', 'Cl')
  assert molecules.diatomic_symbols('ClF') == ('Cl', 'F')
  for other in ('H2O', 'Co', 'N', 'Xx2', 'H4', 'hcl'):
    assert molecules.diatomic_symbols(other) is None, other
  atoms = molecules.build('NaCl', 2.36, units='angstrom')  # any formula, with a bond length
  assert [a.symbol for a in atoms] == ['Na', 'Cl']
  assert atoms[1].coords[0] - atoms[0].coords[0] == pytest.approx(
    2.36 * system_lib.BOHR_PER_ANGSTROM
  )
  assert molecules.canonical('hcl') == 'HCl' and molecules.spin_polarisation('O2') == 2
  with pytest.raises(errors.ConfigError, match="no default bond length for 'NaCl'"):
    molecules.build('NaCl')


def test_xyz_structures_are_in_check_csv():
  files = {r['file'] for r in _check_rows()}
  assert set(molecules.XYZ.values()) <= files


def test_h4_geometry():
  """Square by default (R = 1.738 Å = 3.28434 bohr); a rectangle off 90°; R in Å converts."""
  square = system_lib.make_system(molecules.build('H4'))
  assert square.electrons == (2, 2)
  radius = 1.738 * system_lib.BOHR_PER_ANGSTROM
  side = 2 * radius * np.sin(np.pi / 4)
  assert square.nuclear_repulsion() == pytest.approx(4 / side + 2 / (side * np.sqrt(2)), rel=1e-12)
  rect = system_lib.make_system(molecules.build('H4', angle=80.0))
  a, b = 2 * radius * np.sin(np.radians(40)), 2 * radius * np.cos(np.radians(40))
  expected = 2 / a + 2 / b + 2 / np.hypot(a, b)
  assert rect.nuclear_repulsion() == pytest.approx(expected, rel=1e-12)
  in_angstrom = molecules.build('H4', bond_length=1.738, units='angstrom')
  np.testing.assert_allclose(
    np.abs(in_angstrom[0].coords[0]), 1.738 * system_lib.BOHR_PER_ANGSTROM * np.sqrt(0.5)
  )
  assert molecules.label('H4') == 'H4'
  assert molecules.label('H4', angle=85) == 'H4 R=3.28434 bohr angle=85'
  with pytest.raises(errors.ConfigError, match='angle'):
    molecules.build('H4', angle=180.0)
  with pytest.raises(errors.ConfigError, match='angle'):
    molecules.build('N2', angle=90.0)


def test_h10_chain():
  chain = system_lib.make_system(molecules.build('H10', bond_length=2.0))
  assert chain.electrons == (5, 5)
  expected = sum((10 - k) / (k * 2.0) for k in range(1, 10))
  assert chain.nuclear_repulsion() == pytest.approx(expected, rel=1e-12)
  np.testing.assert_allclose(np.diff(chain.coords[:, 0]), 2.0)
  assert molecules.label('H10') == 'H10' and molecules.label('H10', 1.8) == 'H10'
  assert molecules.label('H10', 2.0) == 'H10 R=2 bohr'


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
