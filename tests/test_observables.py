"""Observables as physics: ⟨S²⟩ of HF determinants and dipole moments against PySCF.

Monte Carlo means are over walkers sampled from |Φ|² with ``mcmc.make_step``. The walkers
are independent chains, so the spread of their time averages gives the error bar σ.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pyscf.scf
import pytest
from conftest import tiny_network_cfg

from ferminet import errors, mcmc, networks, observables, scf
from ferminet import system as system_lib
from ferminet.system import Atom

# LiH at the experimental r_e = 1.5957 Å (Huber & Herzberg, NIST Chemistry WebBook).
LIH_BOND = 1.5957 * system_lib.BOHR_PER_ANGSTROM


@functools.cache
def _determinant(system: system_lib.System, electrons: tuple[int, int] | None = None):
  """A Slater determinant in system's cc-pVDZ basis as a signed log Φ.

  ``(params, x (3N,)) -> (sign, log|Φ|)`` with params = (C_1 (n_ao, n_1), C_2 (n_ao, n_2))
  the occupied orbitals of the first (α) and second (β) channel of ``electrons``
  (default system.electrons). Orbitals are parameters, so one compiled sampler serves
  every determinant of a molecule (cached: compiling dominates these tests' run time).
  """
  n_first = (electrons or system.electrons)[0]
  return scf.make_determinant(scf.make_mole(system, 'ccpvdz'), n_first)


def _coeffs(hf: scf.HartreeFock, swap: bool = False):
  pair = (jnp.asarray(hf.coeff_alpha), jnp.asarray(hf.coeff_beta))
  return pair[::-1] if swap else pair


def _vmapped(estimator):
  return jax.vmap(estimator, in_axes=(None, None, 0))


def _batched(estimator):
  return jax.jit(_vmapped(estimator))


def _points(system, n: int, seed: int = 0) -> jax.Array:
  """Walkers (n, 3N) spread 1 bohr around the nuclei: arbitrary points, not |Φ|² samples."""
  return mcmc.init_walkers(jax.random.PRNGKey(seed), system, n, 1.0)


def _near(centres, n: int, width: float = 0.5, seed: int = 0) -> jax.Array:
  """Walkers (n, 3N): electron k Gaussian (std width, bohr) around centres[k] (N, 3)."""
  centres = jnp.asarray(np.asarray(centres, dtype=float).reshape(-1))
  return centres + width * jax.random.normal(jax.random.PRNGKey(seed), (n, centres.shape[0]))


BURN_IN, ROUNDS, STEPS = 1000, 20, 10  # Metropolis steps before, measurements, steps between


@functools.cache
def _sampler(system: system_lib.System, names: tuple[str, ...], electrons=None, long=False):
  """Jitted ``run(params, walkers, key) -> {name: (mean, σ)}`` of the registry's estimators
  under |Φ|² for ``_determinant(system, electrons)``: BURN_IN steps adapting the width to
  acceptance 0.5 from 0.2 bohr, then ROUNDS measurements STEPS apart (x5 if ``long``)."""
  f = _determinant(system, electrons)
  estimators = observables.make(names, f, system)
  log_p = lambda p, x: 2.0 * f(p, x)[1]
  step = mcmc.make_step(log_p, STEPS * (5 if long else 1))
  burn_in = BURN_IN * (3 if long else 1) // STEPS // (5 if long else 1)

  @jax.jit
  def run(params, x, key):
    ids = jnp.arange(x.shape[0])
    lp = jax.vmap(log_p, in_axes=(None, 0))(params, x)
    zeros = {
      k: jnp.zeros((x.shape[0],) + jax.eval_shape(e, params, None, x[0]).shape, x.dtype)
      for k, e in estimators.items()
    }

    # One loop (one compiled copy of the sampler, whose compilation dominates): the width
    # adapts during burn-in, the estimators are summed after it.
    def body(i, carry):
      x, lp, width, sums = carry
      x, lp, pmove = step(params, x, lp, jax.random.fold_in(key, i), ids, width)
      burning = i < burn_in
      width = jnp.where(burning, mcmc.adapt_width(width, pmove, 0.5), width)
      values = {k: _vmapped(e)(params, None, x) for k, e in estimators.items()}
      sums = jax.tree.map(lambda s, v: s + jnp.where(burning, 0.0, v), sums, values)
      return x, lp, width, sums

    init = (x, lp, jnp.asarray(0.2, x.dtype), zeros)
    _, _, _, sums = jax.lax.fori_loop(0, burn_in + ROUNDS, body, init)
    n = x.shape[0]
    # Walkers are independent chains: the spread of their time averages gives σ.
    return {
      k: (jnp.mean(v / ROUNDS, 0), jnp.std(v / ROUNDS, 0, ddof=1) / jnp.sqrt(n))
      for k, v in sums.items()
    }

  return run


def _mc(system, names, params, walkers, electrons=None, long=False, seed=0) -> dict:
  run = _sampler(system, tuple(names), electrons, long)
  out = run(params, walkers, jax.random.PRNGKey(seed))
  return {k: (np.asarray(m), np.asarray(e)) for k, (m, e) in out.items()}


def _overlap_s2(hf: scf.HartreeFock) -> float:
  """⟨S²⟩ of a UHF determinant: S_z(S_z+1) + n_β - Σ_ij |⟨φ_iα|φ_jβ⟩|² (Szabo-Ostlund 2.271)."""
  overlap = hf.coeff_alpha.T @ hf.mol.intor('int1e_ovlp') @ hf.coeff_beta
  n_alpha, n_beta = overlap.shape
  s_z = 0.5 * (n_alpha - n_beta)
  return s_z * (s_z + 1) + n_beta - float(np.sum(overlap**2))


def _lih():
  return system_lib.make_system([Atom('Li', (0.0, 0.0, 0.0)), Atom('H', (0.0, 0.0, LIH_BOND))])


# ---------------------------------------------------------------------------------------
# S²


def test_s2_two_electron_singlet_and_triplet_exactly():
  """φ(r1)φ(r2) is a singlet (0), φa(r1)φb(r2) ± φb(r1)φa(r2) are singlet (0) and triplet (2)."""
  phi_a = lambda r: jnp.exp(-jnp.linalg.norm(r - jnp.array([0.0, 0.0, 0.7])))
  phi_b = lambda r: jnp.exp(-2.0 * jnp.linalg.norm(r + jnp.array([0.3, 0.0, 0.5])))

  def signed(f):
    def signed_log_psi(params, x):
      value = f(x[:3], x[3:])
      return jnp.sign(value), jnp.log(jnp.abs(value))

    return signed_log_psi

  cases = {
    0.0: [
      lambda r1, r2: phi_a(r1) * phi_a(r2),
      lambda r1, r2: phi_a(r1) * phi_b(r2) + phi_b(r1) * phi_a(r2),
    ],
    2.0: [lambda r1, r2: phi_a(r1) * phi_b(r2) - phi_b(r1) * phi_a(r2)],
  }
  x = jax.random.normal(jax.random.PRNGKey(1), (64, 6))
  for expected, fns in cases.items():
    for f in fns:
      s2 = _batched(observables.make_s2(signed(f), (1, 1)))(None, None, x)
      np.testing.assert_allclose(s2, expected, atol=1e-10)


@pytest.mark.parametrize('electrons', [(1, 0), (0, 1), (3, 0), (0, 2)])
def test_s2_without_pairs_is_sz_sz_plus_one(electrons):
  """No α-β pairs: the state is S = |S_z|, e.g. one electron 3/4, three α electrons 15/4."""
  s_z = abs(electrons[0] - electrons[1]) / 2
  s2 = observables.make_s2(lambda p, x: (1.0, 0.0), electrons)
  assert float(s2(None, None, jnp.zeros(3 * sum(electrons)))) == s_z * (s_z + 1)


@pytest.mark.parametrize(
  'atoms',
  [
    [Atom('Li', (0.0, 0.0, 0.0)), Atom('H', (0.0, 0.0, LIH_BOND))],
    pytest.param(
      [Atom('O', (0.0, 0.0, 0.0)), Atom('H', (0.0, 1.43, 1.11)), Atom('H', (0.0, -1.43, 1.11))],
      marks=pytest.mark.slow,
    ),
  ],
  ids=['LiH', 'H2O'],
)
def test_s2_of_rhf_determinant_is_zero_per_walker(atoms):
  """A closed-shell RHF determinant is an exact singlet: S² = 0 at every point, not only
  in the mean. The round-off grows with Σ|Φ(exchanged)/Φ| near nodes: 1e-9, not 1e-10
  (the largest of 128 LiH points was 1.7e-10)."""
  system = system_lib.make_system(atoms)
  hf = scf.hartree_fock(system, 'ccpvdz', 'rhf')
  s2 = _batched(observables.make_s2(_determinant(system), system.electrons))
  values = np.asarray(s2(_coeffs(hf), None, _points(system, 128)))
  assert np.all(np.isfinite(values))
  np.testing.assert_allclose(values, 0.0, atol=1e-9)


def test_s2_of_rohf_lithium_is_three_quarters_per_walker():
  """High-spin ROHF Li (1s² 2s) is an exact doublet: 3/4 at every point, for S_z = 1/2 and
  for S_z = -1/2 (n_β > n_α: the same orbitals with the channels swapped; the pairs
  evaluated one at a time with lax.map)."""
  system = system_lib.make_system([Atom('Li')])
  hf = scf.hartree_fock(system, 'ccpvdz', 'rohf')
  for electrons, swap, chunk in (((2, 1), False, None), ((1, 2), True, 1)):
    s2 = _batched(observables.make_s2(_determinant(system, electrons), electrons, chunk))
    flipped = system_lib.make_system([Atom('Li')], electrons=electrons)
    values = np.asarray(s2(_coeffs(hf, swap), None, _points(flipped, 128)))
    np.testing.assert_allclose(values, 0.75, atol=1e-9)


H2_BOND = 4.0  # bohr: stretched, where UHF breaks the spin symmetry


@pytest.fixture(scope='module')
def stretched_h2():
  """H2 at 4 bohr: RHF and broken-symmetry UHF (from PySCF's stability analysis, α orbital
  on the +z nucleus), and the MC means (2048 walkers) of S² and the dipole for both."""
  system = system_lib.make_system([Atom('H', (0, 0, -H2_BOND / 2)), Atom('H', (0, 0, H2_BOND / 2))])
  mol = scf.make_mole(system, 'ccpvdz')
  mf = pyscf.scf.UHF(mol)
  mf.verbose = 0
  mf.kernel()
  mf.kernel(dm0=mf.make_rdm1(mf.stability()[0], mf.mo_occ))
  assert mf.converged
  alpha, beta = mf.mo_coeff[0][:, :1], mf.mo_coeff[1][:, :1]
  ao_at_nuclei = mol.eval_gto('GTOval_sph', system.coords)
  if abs(ao_at_nuclei[1] @ alpha[:, 0]) < abs(ao_at_nuclei[0] @ alpha[:, 0]):
    alpha, beta = beta, alpha
  uhf = scf.HartreeFock(float(mf.e_tot), 'UHF', mol, alpha, beta, True)
  rhf = scf.hartree_fock(system, 'ccpvdz', 'rhf')
  # α starts on the +z nucleus (where its UHF orbital is), β on the -z one: no tunnelling.
  walkers = _near([system.coords[1], system.coords[0]], 2048)
  means = {
    name: _mc(system, ('s2', 'dipole'), _coeffs(hf), walkers)
    for name, hf in (('rhf', rhf), ('uhf', uhf))
  }
  return system, uhf, mf, means


def test_s2_monte_carlo_of_spin_contaminated_uhf_h2(stretched_h2):
  """BS-UHF H2 at 4 bohr (⟨S²⟩ ≈ 0.93, far from 0): the MC mean of the local S² equals
  the orbital-overlap formula and PySCF's spin_square within 4σ; RHF gives 0."""
  _, uhf, mf, means = stretched_h2
  analytic = _overlap_s2(uhf)
  assert abs(analytic - mf.spin_square()[0]) < 1e-10
  assert analytic > 0.5  # the state really is contaminated
  mean, err = means['uhf']['s2']
  assert abs(mean - analytic) < 4 * err, (mean, err, analytic)
  assert err < 0.02  # small enough that 0 and 1 would both fail
  assert abs(means['rhf']['s2'][0]) < 1e-9


@pytest.mark.slow
def test_s2_monte_carlo_of_triplet_ch2_uhf():
  """Triplet CH2 UHF/cc-pVDZ (⟨S²⟩ ≈ 2.010): MC mean within 4σ. Needs a long burn-in
  (3000 steps; 200 gave 1.955 ± 0.005, not yet equilibrated)."""
  system = system_lib.make_system(
    [Atom('C', (0.0, 0.0, 0.0)), Atom('H', (0.0, 1.6, 1.0)), Atom('H', (0.0, -1.6, 1.0))],
    electrons=(5, 3),
  )
  hf = scf.hartree_fock(system, 'ccpvdz', 'uhf')
  analytic = _overlap_s2(hf)
  mf = pyscf.scf.UHF(hf.mol)
  s2_pyscf = mf.spin_square((hf.coeff_alpha, hf.coeff_beta), hf.mol.intor('int1e_ovlp'))[0]
  assert abs(analytic - s2_pyscf) < 1e-10 and analytic > 2.005
  mean, err = _mc(system, ('s2',), _coeffs(hf), _points(system, 1024), long=True)['s2']
  assert abs(mean - analytic) < 4 * err, (mean, err, analytic)


# ---------------------------------------------------------------------------------------
# Dipole moment


def test_debye_conversion():
  assert abs(observables.DEBYE_PER_AU - 2.541746) < 1e-6
  assert f'{observables.to_debye(1.0):.4f}' == '2.5417'


def test_electron_position_sum_and_dipole_by_hand():
  """Two electrons at (1, 2, 3) and (-0.5, 0, 1) bohr; nuclei Z=3 at (0, 0, 1), Z=1 at
  (0, 0, -2): Σ r = (0.5, 2, 4) and μ = Σ Z R - Σ r = (0, 0, 1) - (0.5, 2, 4)."""
  x = jnp.array([1.0, 2.0, 3.0, -0.5, 0.0, 1.0])
  np.testing.assert_allclose(observables.electron_position_sum(x), [0.5, 2.0, 4.0])
  np.testing.assert_allclose(
    observables.make_electron_position_sum()(None, None, x), [0.5, 2.0, 4.0]
  )
  dipole = observables.make_dipole([3.0, 1.0], [[0, 0, 1.0], [0, 0, -2.0]])
  np.testing.assert_allclose(dipole(None, None, x), [-0.5, -2.0, -3.0])


def test_dipole_of_h2_is_zero_by_symmetry(stretched_h2):
  """H2 about its midpoint: μ(-x) = -μ(x) per walker, and the MC mean is 0 within 4σ for
  RHF and for BS-UHF (α on one side, β on the other: only their sum is symmetric)."""
  system, _, _, means = stretched_h2
  dipole = _batched(observables.make_dipole(system.charges, system.coords))
  x = _points(system, 16)
  np.testing.assert_allclose(dipole(None, None, -x), -dipole(None, None, x))
  for state in ('rhf', 'uhf'):
    mean, err = means[state]['dipole']
    assert np.all(np.abs(mean) < 4 * err), (state, mean, err)
    assert np.all(err < 0.1)


@pytest.mark.slow
def test_dipole_of_n2_is_zero_by_symmetry():
  system = system_lib.make_system([Atom('N', (0, 0, -1.04)), Atom('N', (0, 0, 1.04))])
  hf = scf.hartree_fock(system, 'ccpvdz', 'rhf')
  mean, err = _mc(system, ('dipole',), _coeffs(hf), _points(system, 1024), long=True)['dipole']
  assert np.all(np.abs(mean) < 4 * err), (mean, err)


@pytest.fixture(scope='module')
def lih_dipole():
  """LiH RHF/cc-pVDZ: PySCF's dipole (e·bohr) and the MC means of the 'dipole' columns."""
  system = _lih()
  hf = scf.hartree_fock(system, 'ccpvdz', 'rhf')
  dm = 2.0 * hf.coeff_alpha @ hf.coeff_alpha.T
  reference = pyscf.scf.RHF(hf.mol).dip_moment(hf.mol, dm, unit='AU', verbose=0)
  li, h = system.coords
  walkers = _near([li, h, li, h], 2048)  # Li⁺H⁻: one electron of each spin on each nucleus
  means = _mc(system, ('dipole',), _coeffs(hf), walkers)
  return system, np.asarray(reference), means['dipole']


def test_dipole_of_lih_matches_pyscf(lih_dipole):
  """The MC ⟨μ⟩ of the HF determinant equals PySCF's Σ Z R - ∫ρ r within 4σ, per component,
  and the reference-style mu columns are Σ Z R minus the physical dipole."""
  system, reference, (mean, err) = lih_dipole
  mu_ref_style, dipole = mean[:3], mean[3:]
  assert np.all(np.abs(dipole - reference) < 4 * err[3:]), (dipole, err[3:], reference)
  assert np.all(err[3:] < 0.1)
  np.testing.assert_allclose(
    mu_ref_style, observables.nuclear_dipole(system.charges, system.coords) - dipole, atol=1e-9
  )


def test_dipole_of_lih_near_experiment(lih_dipole):
  """|μ| of 7LiH is 5.88 D (molecular-beam electric resonance, Wharton, Gold & Klemperer,
  J. Chem. Phys. 37, 2149 (1962), compiled in NIST's WebBook); HF/cc-pVDZ is within 0.3 D.
  Li⁺H⁻: the dipole points from H to Li (-z here)."""
  _, reference, (mean, err) = lih_dipole
  dipole = mean[3:]
  assert dipole[2] < 0
  assert abs(observables.to_debye(np.linalg.norm(dipole)) - 5.88) < 0.3
  assert abs(observables.to_debye(np.linalg.norm(reference)) - 5.88) < 0.3


# ---------------------------------------------------------------------------------------
# Registry and batching


def test_registry_columns_and_unknown_name():
  assert observables.OBSERVABLES['s2'].columns == ('s2',)
  assert observables.columns(['dipole'])[:3] == ('mu_x', 'mu_y', 'mu_z')
  assert observables.columns(['s2', 'dipole', 's2']) == ('s2',) + observables.columns('dipole')
  with pytest.raises(errors.ConfigError, match='nonsense'):
    observables.make(['s2', 'nonsense'], lambda p, x: (1.0, 0.0), _lih())


def test_estimators_batch_as_one_by_one():
  """On a FermiNet: vmapped values equal per-walker ones, the widths match the columns,
  and the batch mean equals the mean of the means of two halves (1 vs 2 devices)."""
  system = system_lib.make_system([Atom('Li', (0, 0, 0)), Atom('H', (0, 0, 3.0))], charge=1)
  assert system.electrons == (2, 1)  # LiH⁺, a doublet
  net = networks.make(tiny_network_cfg(), system)
  params = net.init(jax.random.PRNGKey(0))
  estimators = observables.make(['s2', 'dipole'], net.apply, system)
  x = _points(system, 8)
  key = jax.random.PRNGKey(1)
  for name, estimator in estimators.items():
    batch = np.asarray(_batched(estimator)(params, key, x))
    one = jax.jit(estimator)
    single = np.stack([np.asarray(one(params, key, xi)) for xi in x])
    np.testing.assert_allclose(batch, single, rtol=1e-12, atol=1e-12)
    assert batch.reshape(len(x), -1).shape[1] == len(observables.OBSERVABLES[name].columns)
    halves = 0.5 * (batch[:4].mean(0) + batch[4:].mean(0))
    np.testing.assert_allclose(batch.mean(0), halves, rtol=1e-12, atol=1e-12)
