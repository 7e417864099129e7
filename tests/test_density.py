"""The one-body density matrix estimator as physics: HF determinants against PySCF.

Monte Carlo means are over walkers sampled from |Φ|² with ``mcmc.make_step``; the
walkers are independent chains, so the spread of their time averages gives the error
bar σ. Per-walker checks use the exact mean over the auxiliary points of a determinant,
Σ_i χ(r_i) ⊗ (S_dh C A⁻¹)_{:,i} (``ferminet.density``'s docstring).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pyscf.scf
import pytest
from pyscf import gto

from ferminet import config as config_lib
from ferminet import density, hamiltonian, mcmc, observables, parallel, scf, train
from ferminet import system as system_lib
from ferminet.system import Atom

# LiH at the experimental r_e = 1.5957 Å (Huber & Herzberg, NIST Chemistry WebBook).
LIH_BOND = 1.5957 * system_lib.BOHR_PER_ANGSTROM


def _lih() -> system_lib.System:
  return system_lib.make_system([Atom('Li', (0.0, 0.0, 0.0)), Atom('H', (0.0, 0.0, LIH_BOND))])


def _hydrogen() -> system_lib.System:
  return system_lib.make_system([Atom('H', (0.0, 0.0, 0.0))])


@functools.cache
def _determinant(system: system_lib.System, basis: str = 'ccpvdz'):
  """A Slater determinant in ``basis`` as a signed log Φ with params (C_α, C_β)."""
  return scf.make_determinant(scf.make_mole(system, basis), system.electrons[0])


def _coeffs(hf: scf.HartreeFock):
  return jnp.asarray(hf.coeff_alpha), jnp.asarray(hf.coeff_beta)


def _exact_mean_over_aux(hf, basis: density.Basis, x: np.ndarray) -> np.ndarray:
  """The mean over r' ~ g of one walker's sample for the determinant of ``hf``.

  ψ(x; r_i → r')/ψ(x) = Σ_j φ_j(r') (A⁻¹)_ji with A_kj = φ_j(r_k), so
  ∫ χ_ν(r') ψ(x; r_i → r')/ψ(x) dr' = (S_dh C A⁻¹)_νi, S_dh the overlap of the density
  basis with Φ's. Returns (2, n_ao, n_ao), symmetrised as the estimator is.
  """
  s_dh = gto.intor_cross('int1e_ovlp', basis.mol, hf.mol)
  pos = np.asarray(x).reshape(-1, 3)
  chi_d = np.asarray(basis.ao_fn(pos))  # density basis at the electrons
  chi_h = np.asarray(scf.make_ao_fn(hf.mol)(pos))  # Φ's basis
  n_alpha = hf.coeff_alpha.shape[1]
  out = []
  for rows, c in ((slice(0, n_alpha), hf.coeff_alpha), (slice(n_alpha, None), hf.coeff_beta)):
    if c.shape[1] == 0:
      out.append(np.zeros((basis.n_ao, basis.n_ao)))
      continue
    a = chi_h[rows] @ c
    m = chi_d[rows].T @ (s_dh @ c @ np.linalg.inv(a)).T
    out.append(0.5 * (m + m.T))
  return np.stack(out)


def _walkers_near_nuclei(system, n: int, seed: int) -> jax.Array:
  return mcmc.init_walkers(jax.random.PRNGKey(seed), system, n, 1.0)


# ---------------------------------------------------------------------------------------
# The auxiliary density


def test_aux_density_is_normalised_and_as_wide_as_the_basis():
  """E_g[h/g] = ∫h = 1 for a normalised Gaussian h off the nuclei (so g's sampler and
  its density agree), and g's widest component reaches the most diffuse function."""
  basis = density.make_basis(_lih(), 'ccpvdz')
  aux = basis.aux
  np.testing.assert_allclose(aux.weights.sum(), 1.0)
  alpha = density.smallest_exponent(basis.mol)
  assert alpha < 0.05  # Li's diffuse cc-pVDZ functions
  np.testing.assert_allclose(aux.widths.max(), 1 / np.sqrt(2 * alpha))
  r = aux.sample(jax.random.PRNGKey(0), (50_000,), jnp.float64)
  centre, width = jnp.array([0.5, -1.0, 2.0]), 0.8
  log_h = -0.5 * jnp.sum((r - centre) ** 2, -1) / width**2 - 1.5 * jnp.log(2 * jnp.pi * width**2)
  ratio = np.asarray(jnp.exp(log_h - aux.log_density(r)))
  mean, err = ratio.mean(), ratio.std() / np.sqrt(len(ratio))
  assert abs(mean - 1.0) < 4 * err, (mean, err)
  assert err < 0.02


# ---------------------------------------------------------------------------------------
# Per walker


@pytest.mark.parametrize(
  'system_fn, density_basis',
  [pytest.param(_lih, 'ccpvdz', marks=pytest.mark.slow), (_hydrogen, '6-31g')],
  ids=['LiH-same-basis', 'H-other-basis'],
)
def test_per_walker_mean_over_aux_points_is_exact(system_fn, density_basis):
  """At fixed walkers, the average over many aux-point draws equals the exact integral
  over r' (noise from the aux points only). For one electron (H, Φ = φ_1s in cc-pVDZ,
  the density in 6-31G) it is the outer product χ(r)/φ(r) ⊗ S_dh c, symmetrised, and
  the empty β channel is exactly zero."""
  system = system_fn()
  hf = scf.hartree_fock(system, 'ccpvdz')
  basis = density.make_basis(system, density_basis)
  estimator = density.make_density_matrix(
    _determinant(system), system.electrons, basis.ao_fn, basis.aux, n_aux=200
  )
  n_keys = 16
  keys = jax.random.split(jax.random.PRNGKey(1), n_keys)
  batched = jax.jit(jax.vmap(jax.vmap(estimator, (None, 0, None)), (None, None, 0)))
  walkers = _walkers_near_nuclei(system, 3, seed=2)
  values = np.asarray(batched(_coeffs(hf), keys, walkers))  # (walkers, keys, 2 n²)
  for x, v in zip(walkers, values, strict=True):
    exact = _exact_mean_over_aux(hf, basis, x).reshape(-1)
    mean, err = v.mean(0), v.std(0, ddof=1) / np.sqrt(n_keys)
    assert np.all(np.abs(mean - exact) <= 5 * err + 1e-12 * np.abs(exact).max())
    assert np.abs(exact).max() > 0.1  # not vacuous
  if system.electrons[1] == 0:
    n = basis.n_ao
    assert np.all(values.reshape(len(walkers), n_keys, 2, n, n)[:, :, 1] == 0)


# ---------------------------------------------------------------------------------------
# Monte Carlo against PySCF


BURN_IN, ROUNDS, STEPS = 600, 40, 10  # Metropolis steps before, measurements, steps between


def _mc_density(system, hf, density_basis, n_walkers=256, n_aux=1, seed=0):
  """Walker time averages of M under |Φ|² for the determinant of ``hf``: (W, 2, n, n)."""
  f = _determinant(system, 'ccpvdz')
  basis = density.make_basis(system, density_basis)
  estimator = density.make_density_matrix(f, system.electrons, basis.ao_fn, basis.aux, n_aux)
  log_p = lambda p, x: 2.0 * f(p, x)[1]  # noqa: E731
  step = mcmc.make_step(log_p, STEPS)
  burn_in = BURN_IN // STEPS

  @jax.jit
  def run(params, x, key):
    ids = jnp.arange(x.shape[0])
    lp = jax.vmap(log_p, in_axes=(None, 0))(params, x)
    batched = jax.vmap(estimator, in_axes=(None, 0, 0))

    def body(i, carry):
      x, lp, width, total = carry
      x, lp, pmove = step(params, x, lp, jax.random.fold_in(key, 2 * i), ids, width)
      burning = i < burn_in
      width = jnp.where(burning, mcmc.adapt_width(width, pmove, 0.5), width)
      keys = hamiltonian.walker_keys(jax.random.fold_in(key, 2 * i + 1), ids)
      total = total + jnp.where(burning, 0.0, batched(params, keys, x))
      return x, lp, width, total

    zeros = jnp.zeros((x.shape[0], 2 * basis.n_ao**2), x.dtype)
    init = (x, lp, jnp.asarray(0.2, x.dtype), zeros)
    return jax.lax.fori_loop(0, burn_in + ROUNDS, body, init)[3] / ROUNDS

  walkers = _walkers_near_nuclei(system, n_walkers, seed)
  m = np.asarray(run(_coeffs(hf), walkers, jax.random.PRNGKey(seed)))
  return basis, m.reshape(n_walkers, 2, basis.n_ao, basis.n_ao)


def _mean_and_error(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  return samples.mean(0), samples.std(0, ddof=1) / np.sqrt(len(samples))


def _check_against(p_walkers, s, reference, electrons, orbitals, occupations):
  """Walker averages of P (W, 2, n, n) against ``reference`` (2, n, n).

  P within 5σ element-wise (2·n² correlated elements: 4σ would fail a few % of the
  time), ⟨z²⟩ near 1 (σ is not overestimated), trace(P S) = N_σ within 4σ, and in the
  orbital basis Oᵀ S P S O = diag(occupations) within 5σ: there S⁻¹'s amplification of
  the noise is gone, so this is the sharper test (it catches e.g. a dropped sign of
  ψ(x; r_i → r')/ψ(x), which the AO elements miss).
  """
  mean, err = _mean_and_error(p_walkers)
  z = (mean - reference) / err
  assert np.all(np.abs(z) < 5), np.abs(z).max()
  assert 0.5 < np.mean(z**2) < 2.0, np.mean(z**2)
  traces = np.einsum('wsij,ji->ws', p_walkers, s)
  t_mean, t_err = _mean_and_error(traces)
  assert np.all(np.abs(t_mean - np.asarray(electrons)) < 4 * t_err), (t_mean, t_err)
  so = s @ orbitals
  q_mean, q_err = _mean_and_error(np.einsum('ai,wsab,bj->wsij', so, p_walkers, so))
  expected = np.stack([np.diag(occupations)] * 2)
  z_q = (q_mean - expected) / q_err
  assert np.all(np.abs(z_q) < 5), np.abs(z_q).max()
  assert 0.5 < np.mean(z_q**2) < 2.0, np.mean(z_q**2)
  return z, (t_mean, t_err), z_q


def test_lih_hf_density_matrix_matches_pyscf():
  """RHF LiH sampled from |Φ|², the density in Φ's basis (cc-pVDZ): P^α = P^β = D/2 with
  D = ``mf.make_rdm1()``, trace(P S) = 2 per spin, and in the MO basis diag(1, 1, 0, ...);
  one aux point per electron."""
  system = _lih()
  hf = scf.hartree_fock(system, 'ccpvdz', 'rhf')
  mf = pyscf.scf.RHF(hf.mol).run()
  reference = np.stack([mf.make_rdm1() / 2] * 2)
  basis, m = _mc_density(system, hf, 'ccpvdz')
  p_walkers = np.stack([density.to_density_matrix(w, basis.overlap) for w in m])
  assert p_walkers.shape[1:] == (2, basis.n_ao, basis.n_ao)
  _check_against(p_walkers, basis.overlap, reference, system.electrons, mf.mo_coeff, mf.mo_occ / 2)


@pytest.mark.slow
def test_density_basis_need_not_be_psi_basis():
  """Φ in cc-pVDZ, the density in aug-cc-pVDZ (which contains cc-pVDZ's functions): P is
  the projection S_d⁻¹ S_dh D S_hd S_d⁻¹ of Φ's density matrix D, still with
  trace(P S_d) = N_σ since the basis spans Φ's orbitals (X = S_d⁻¹ S_dh C in it)."""
  system = _lih()
  hf = scf.hartree_fock(system, 'ccpvdz', 'rhf')
  basis, m = _mc_density(system, hf, 'aug-cc-pvdz', n_walkers=512)
  s_dh = gto.intor_cross('int1e_ovlp', basis.mol, hf.mol)
  d = np.stack([hf.coeff_alpha @ hf.coeff_alpha.T, hf.coeff_beta @ hf.coeff_beta.T])
  reference = density.to_density_matrix(s_dh @ d @ s_dh.T, basis.overlap)
  np.testing.assert_allclose(  # the basis spans the orbitals: the projection keeps N_σ
    np.einsum('sij,ji->s', reference, basis.overlap), system.electrons, rtol=1e-6
  )
  p_walkers = np.stack([density.to_density_matrix(w, basis.overlap) for w in m])
  orbitals = np.linalg.solve(basis.overlap, s_dh @ hf.coeff_alpha)
  _check_against(p_walkers, basis.overlap, reference, system.electrons, orbitals, np.ones(2))


# ---------------------------------------------------------------------------------------
# Layout independence


def _toy_psi(params, x):
  """A cheap (2, 1)-electron wavefunction: [a(r1) b(r2) - b(r1) a(r2)] c(r3), signed log."""
  del params
  r = x.reshape(3, 3)
  a = lambda p: jnp.exp(-jnp.linalg.norm(p - jnp.array([0.0, 0.0, 0.5])))  # noqa: E731
  b = lambda p: p[2] * jnp.exp(-0.7 * jnp.linalg.norm(p))  # noqa: E731
  value = (a(r[0]) * b(r[1]) - b(r[0]) * a(r[1])) * jnp.exp(-jnp.sum(r[2] ** 2))
  return jnp.sign(value), jnp.log(jnp.abs(value))


def test_same_values_in_one_batch_or_split():
  """Through the training loop's observe: the walkers' aux points come from their ids,
  so one batch and its two halves (two devices) give the same mean."""
  system = system_lib.make_system([Atom('Li', (0, 0, 0)), Atom('H', (0, 0, 3.0))], charge=1)
  assert system.electrons == (2, 1)
  params = parallel.replicate(jnp.zeros(()))
  estimator = observables.make(['density'], _toy_psi, system, {'density_basis': 'sto-3g'})
  observe = train._make_observe(estimator, 0)
  walkers = _walkers_near_nuclei(system, 8, seed=5)
  ids = jnp.arange(100, 108)
  key = jax.random.PRNGKey(6)[None]

  def mean(s):
    return np.asarray(observe(params, key, walkers[None, s], ids[None, s])['density'][0])

  whole, first, second = mean(slice(0, 8)), mean(slice(0, 4)), mean(slice(4, 8))
  np.testing.assert_allclose(0.5 * (first + second), whole, rtol=1e-12, atol=1e-14)
  assert np.abs(whole).max() > 0.01
  shifted = np.asarray(observe(params, key, walkers[None, 4:], ids[None, :4])['density'][0])
  assert not np.allclose(shifted, second)  # the aux points do depend on the walkers' ids


# ---------------------------------------------------------------------------------------
# The file


def test_file_appends_continues_and_sets_aside(tmp_path):
  path = tmp_path / density.FILE
  rows = np.arange(5 * 2 * 9, dtype=float).reshape(5, 2, 3, 3)
  f = density.DensityMatrixFile(path, 3)
  for step, p in enumerate(rows):
    f.write(step, p)
    f.flush()
    np.testing.assert_array_equal(np.load(path), rows[: step + 1])
  f.close()
  # A crash after rows were written but before the header: the extra bytes are dropped.
  with open(path, 'ab') as raw:
    raw.write(b'\0' * 40)
  f = density.DensityMatrixFile(path, 3, first_step=3)  # resumed at step 3
  assert np.load(path).shape == (3, 2, 3, 3)
  f.write(3, -rows[3])
  f.close()
  np.testing.assert_array_equal(np.load(path), np.concatenate([rows[:3], -rows[3:4]]))
  f = density.DensityMatrixFile(path, 3, first_step=6)  # step 4, 5 never estimated: NaN
  f.write(6, rows[0])
  f.close()
  loaded = np.load(path, mmap_mode='r')
  assert loaded.shape == (7, 2, 3, 3)
  assert np.all(np.isnan(loaded[4:6])) and np.all(loaded[6] == rows[0])
  f = density.DensityMatrixFile(path, 3, first_step=0)  # a fresh run: keeps the old file
  f.close()
  assert f.set_aside == tmp_path / 'density_matrix.1.npy'
  assert np.load(f.set_aside).shape == (7, 2, 3, 3)
  assert np.load(path).shape == (0, 2, 3, 3)
  g = density.DensityMatrixFile(path, 4, first_step=2, dtype=np.float32)  # other shape
  g.close()
  assert g.set_aside is None  # its 0 rows are not worth keeping
  assert np.load(path).shape == (2, 2, 4, 4) and np.load(path).dtype == np.float32


# ---------------------------------------------------------------------------------------
# End to end


def _tiny_config(save_path, iterations):
  from test_train import tiny_config

  overrides = {
    'pretrain.iterations': 0,
    'observables.density': True,
    'observables.density_basis': 'sto-3g',
  }
  return tiny_config(save_path, atom='Li', optimizer='adam', iterations=iterations, **overrides)


def test_recorder_writes_each_step_to_the_file(tmp_path):
  """The training loop's set-up and recorder, without compiling: density=True is
  accepted, estimated (no CSV columns) and each step's mean M is written as P."""
  run = train.setup(_tiny_config(tmp_path, 4))
  assert 'density' in run.observed and run.observe is not None
  basis = density.make_basis(run.system, 'sto-3g')
  n = basis.n_ao
  recorder = train._Recorder(
    tmp_path / 'train_stats.csv', 0, 2, run.observed, train._observable_files(run, 0)
  )
  rng = np.random.default_rng(0)
  m = rng.normal(size=(3, 2, n, n))
  for step in range(3):
    one = {'energy': [-7.0], 'variance': [1.0], 'pmove': [0.5], 'ok': [True]}
    stats = {k: np.asarray(v) for k, v in one.items()}
    stats['observables'] = {'density': m[step].reshape(1, -1)}  # (devices, 2 n²)
    recorder.add(step, stats)
  recorder.flush()
  recorder.close()
  p = np.load(tmp_path / density.FILE)
  assert p.shape == (3, 2, n, n) and p.dtype == np.float32
  s_inv = np.linalg.inv(basis.overlap)
  np.testing.assert_allclose(p, s_inv @ m @ s_inv, rtol=1e-5, atol=1e-5)
  header = (tmp_path / 'train_stats.csv').read_text().splitlines()[0]
  assert 'density' not in header


@pytest.mark.slow
def test_training_writes_density_matrix_npy(tmp_path):
  """A tiny Li run writes (steps, 2, n_ao, n_ao) rows, symmetric, with trace(P S) near
  N_σ = (2, 1) (sto-3g's 5 functions; the density is a few steps' noisy estimate)."""
  train.train(_tiny_config(tmp_path, 4))
  p = np.load(tmp_path / density.FILE)
  system = config_lib.system_of(config_lib.resolve(_tiny_config(tmp_path, 4)))
  basis = density.make_basis(system, 'sto-3g')
  assert p.shape == (4, 2, 5, 5) and basis.n_ao == 5
  assert p.dtype == np.float32
  np.testing.assert_allclose(p, np.swapaxes(p, -1, -2), atol=1e-6)
  traces = np.einsum('tsij,ji->ts', p.astype(float), basis.overlap)
  assert np.all(np.abs(traces.mean(0) - [2, 1]) < 0.5), traces
  header = (tmp_path / 'train_stats.csv').read_text().splitlines()[0]
  assert 'density' not in header


@pytest.mark.slow
def test_resumed_training_appends(tmp_path):
  train.train(_tiny_config(tmp_path, 3))
  first = np.load(tmp_path / density.FILE)
  train.train(_tiny_config(tmp_path, 5))
  both = np.load(tmp_path / density.FILE)
  assert both.shape == (5, 2, 5, 5)
  np.testing.assert_array_equal(both[:3], first)
