"""Tests of ferminet.scf: PySCF molecules, HF references and jnp orbitals."""

import jax
import jax.numpy as jnp
import numpy as np
import pyscf.scf
import pytest
from pyscf import gto

from ferminet import errors, scf, system
from ferminet.system import Atom


@pytest.fixture(autouse=True, scope='module')
def _enable_x64():
  """float64 for this module only; the previous setting is restored afterwards."""
  previous = jax.config.jax_enable_x64
  jax.config.update('jax_enable_x64', True)
  yield
  jax.config.update('jax_enable_x64', previous)


def _points(n: int = 50, seed: int = 0) -> np.ndarray:
  """Random points (n, 3) in bohr around the origin, plus one exactly at it."""
  x = np.random.default_rng(seed).normal(scale=1.5, size=(n, 3))
  x[0] = 0.0
  return x


def _h_atom():
  return system.make_system([Atom('H')])


def _h2():
  return system.make_system([Atom('H', (0.0, 0.0, -0.7)), Atom('H', (0.0, 0.0, 0.7))])


def _li_atom():
  return system.make_system([Atom('Li')])


@pytest.mark.parametrize(
  'atom, basis, cart, max_l',
  [
    ('N 0 0 -1.035; N 0 0 1.035', 'ccpvtz', False, 3),
    ('Li 0 0 0', 'ccpvdz', False, 2),
    ('N 0 0 -1.035; N 0 0 1.035', 'ccpvtz', True, 3),
    ('N 0 0 0; H 0.3 0 1.9', 'ccpvqz', False, 4),
  ],
)
def test_ao_values_match_pyscf(atom, basis, cart, max_l):
  mol = gto.M(atom=atom, basis=basis, unit='Bohr', cart=cart, spin=None, verbose=0)
  assert max(mol.bas_angular(i) for i in range(mol.nbas)) == max_l
  x = _points()
  ours = np.asarray(jax.jit(scf.make_ao_fn(mol))(x))
  ref = mol.eval_gto('GTOval_cart' if cart else 'GTOval_sph', x)
  assert ours.shape == ref.shape == (len(x), mol.nao)
  np.testing.assert_allclose(ours, ref, atol=1e-10, rtol=0)


def test_ao_values_float32_follows_input():
  mol = gto.M(atom='Li 0 0 0', basis='ccpvdz', unit='Bohr', spin=None, verbose=0)
  x = _points(10)
  values = scf.ao_values(mol, x.astype(np.float32))
  assert values.dtype == jnp.float32
  np.testing.assert_allclose(values, mol.eval_gto('GTOval_sph', x), atol=1e-5)
  assert scf.ao_values(mol, x).dtype == jnp.float64


def test_ao_values_rejects_high_angular_momentum():
  mol = gto.M(atom='H 0 0 0', basis={'H': [[scf.MAX_L + 1, [1.0, 1.0]]]}, spin=1, verbose=0)
  with pytest.raises(errors.ConfigError, match='pretrain.basis'):
    scf.make_ao_fn(mol)


def test_make_mole():
  li = system.make_system([Atom('Li')], charge=1)
  mol = scf.make_mole(li, 'sto-3g')
  assert mol.nelec == (1, 1) and mol.charge == 1 and mol.spin == 0
  assert mol.unit.lower() == 'bohr' and mol.verbose == 0
  np.testing.assert_allclose(mol.atom_coords(unit='Bohr'), li.coords)
  h2 = scf.make_mole(_h2())
  np.testing.assert_allclose(h2.atom_coords(unit='Bohr'), _h2().coords)


def test_make_mole_fractional_charge():
  mol = scf.make_mole(system.make_system([Atom('H', charge=1.5)]))
  np.testing.assert_allclose(mol.atom_charges(), [1.5])
  assert mol.nelec == (1, 0)
  hf = scf.hartree_fock(system.make_system([Atom('H', charge=1.5)]))
  assert -1.125 < hf.energy < -1.05  # hydrogenic -Z^2/2, variational in a finite basis.


def test_unknown_basis_and_method():
  with pytest.raises(errors.ConfigError, match='--config.pretrain.basis'):
    scf.make_mole(_h2(), 'not-a-basis')
  with pytest.raises(errors.ConfigError, match="'not-a-basis'"):
    scf.hartree_fock(_h2(), basis='not-a-basis')
  with pytest.raises(errors.ConfigError, match='Kr'):
    scf.make_mole(system.make_system([Atom('Kr')]), '6-31g')
  with pytest.raises(errors.ConfigError, match='method'):
    scf.hartree_fock(_h2(), method='dft')
  with pytest.raises(errors.ConfigError, match='closed shell'):
    scf.hartree_fock(_li_atom(), method='rhf')


def _pyscf_energy(system_, method, basis='ccpvdz'):
  """HF energy (hartree) computed directly with PySCF, for comparison."""
  mol = scf.make_mole(system_, basis)
  mf = {'RHF': pyscf.scf.RHF, 'UHF': pyscf.scf.UHF, 'ROHF': pyscf.scf.ROHF}[method](mol)
  return mf.run(verbose=0).e_tot


def test_hydrogen_atom_uhf():
  hf = scf.hartree_fock(_h_atom())
  assert hf.method == 'UHF' and hf.converged
  assert hf.coeff_alpha.shape == (5, 1) and hf.coeff_beta.shape == (5, 0)
  assert hf.energy == pytest.approx(_pyscf_energy(_h_atom(), 'UHF'), abs=1e-8)
  assert hf.energy == pytest.approx(-0.49928, abs=1e-5)
  assert abs(hf.energy + 0.5) < 2e-3


def test_h2_rhf():
  hf = scf.hartree_fock(_h2())
  assert hf.method == 'RHF' and hf.converged
  assert hf.energy == pytest.approx(_pyscf_energy(_h2(), 'RHF'), abs=1e-8)
  assert hf.energy == pytest.approx(-1.1287, abs=2e-4)
  assert abs(hf.energy + 1.1336) < 5e-3
  np.testing.assert_array_equal(hf.coeff_alpha, hf.coeff_beta)


def test_li_uhf_rohf():
  uhf = scf.hartree_fock(_li_atom())
  rohf = scf.hartree_fock(_li_atom(), method='rohf')
  assert (uhf.method, rohf.method) == ('UHF', 'ROHF')
  assert uhf.converged and rohf.converged
  assert uhf.energy == pytest.approx(_pyscf_energy(_li_atom(), 'UHF'), abs=1e-8)
  assert rohf.energy == pytest.approx(_pyscf_energy(_li_atom(), 'ROHF'), abs=1e-8)
  assert uhf.energy <= rohf.energy + 1e-8 and uhf.energy == pytest.approx(-7.4324, abs=1e-3)
  assert rohf.coeff_alpha.shape == (14, 2) and rohf.coeff_beta.shape == (14, 1)
  np.testing.assert_array_equal(rohf.coeff_alpha[:, :1], rohf.coeff_beta)


def test_cache_returns_same_object():
  assert scf.hartree_fock(_h2()) is scf.hartree_fock(_h2(), basis='ccpvdz', method='auto')
  assert scf.hartree_fock(_h2(), method='uhf') is not scf.hartree_fock(_h2())


def test_unconverged_scf_retries_with_newton(monkeypatch):
  newton_calls = []
  newton = pyscf.scf.hf.SCF.newton

  def counting_newton(self):
    newton_calls.append(self)
    return newton(self)

  monkeypatch.setattr(pyscf.scf.hf.SCF, 'newton', counting_newton)
  monkeypatch.setattr(pyscf.scf.hf.SCF, 'max_cycle', 2)  # too few for plain SCF.
  water = system.make_system(
    [Atom('O'), Atom('H', (0.0, 1.43, 1.11)), Atom('H', (0.0, -1.43, 1.11))]
  )
  hf = scf.hartree_fock(water, basis='sto-3g')
  monkeypatch.undo()
  assert len(newton_calls) == 1 and hf.converged
  assert hf.energy == pytest.approx(_pyscf_energy(water, 'RHF', 'sto-3g'), abs=1e-6)


@pytest.mark.parametrize('make', [_h_atom, _h2, _li_atom])
def test_occupied_orbitals_orthonormal(make):
  hf = scf.hartree_fock(make())
  overlap = hf.mol.intor('int1e_ovlp')
  for coeff in (hf.coeff_alpha, hf.coeff_beta):
    np.testing.assert_allclose(coeff.T @ overlap @ coeff, np.eye(coeff.shape[1]), atol=1e-8)


@pytest.mark.parametrize('method', ['auto', 'rohf'])
def test_orbitals_match_pyscf(method):
  hf = scf.hartree_fock(_li_atom(), method=method)
  x = _points(30, seed=1)
  alpha, beta = jax.jit(scf.make_orbitals_fn(hf))(x)
  ao = hf.mol.eval_gto('GTOval_sph', x)
  assert alpha.shape == (30, 2) and beta.shape == (30, 1)
  np.testing.assert_allclose(alpha, ao @ hf.coeff_alpha, atol=1e-10, rtol=0)
  np.testing.assert_allclose(beta, ao @ hf.coeff_beta, atol=1e-10, rtol=0)


def test_orbitals_vmap_and_empty_channel():
  orbitals = scf.make_orbitals_fn(scf.hartree_fock(_h_atom()))
  batch = _points(12, seed=2).reshape(3, 4, 3)
  alpha, beta = jax.vmap(orbitals)(batch)
  assert alpha.shape == (3, 4, 1) and beta.shape == (3, 4, 0)
  np.testing.assert_allclose(alpha[1], orbitals(batch[1])[0], atol=1e-14)


def test_orbitals_gradient_matches_finite_differences():
  n2 = system.make_system([Atom('N', (0.0, 0.0, -1.035)), Atom('N', (0.0, 0.0, 1.035))])
  hf = scf.hartree_fock(n2, basis='ccpvtz')  # s, p, d and f functions.
  orbitals = scf.make_orbitals_fn(hf)
  weights = np.random.default_rng(3).normal(size=hf.coeff_alpha.shape[1])

  def f(x):
    return jnp.sum(orbitals(x)[0] @ weights)

  x = _points(6, seed=4)
  x[1] = [0.0, 0.0, 1.035]  # exactly on a nucleus.
  grad = np.asarray(jax.jit(jax.grad(f))(x))
  assert np.all(np.isfinite(grad))
  f_jit, h = jax.jit(f), 1e-5
  numeric = np.zeros_like(x)
  for idx in np.ndindex(*x.shape):
    step = np.zeros_like(x)
    step[idx] = h
    numeric[idx] = (f_jit(x + step) - f_jit(x - step)) / (2 * h)
  np.testing.assert_allclose(grad, numeric, atol=1e-6, rtol=1e-6)
