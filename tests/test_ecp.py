"""Pseudopotential estimators: table convention, exact angular projections, PySCF's integrals."""

import copy

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from pyscf import gto, scf

from ferminet import ecp, errors, mcmc
from ferminet import scf as scf_lib


def gaussian_ecp(local=(), channels=None) -> ecp.AtomECP:
  """A test potential: (α, c) pairs meaning c exp(-α r²), local and per channel l."""
  channels = channels or {}
  semilocal = tuple(
    (ang, tuple((0, a, c) for a, c in terms)) for ang, terms in sorted(channels.items())
  )
  return ecp.AtomECP(0, tuple((0, a, c) for a, c in local), semilocal, 'test')


def gauss(terms, r):
  return sum(c * np.exp(-a * r * r) for a, c in terms)


def keys(n, seed=0):
  return jax.random.split(jax.random.PRNGKey(seed), n)


# --- the table --------------------------------------------------------------------------


def test_pyscf_table_convention_cl():
  """terms_k is c r^(k-2) exp(-α r²): Cl's local r^-1 part cancels -Z_eff/r at r = 0."""
  cl = ecp.load('ccecp', 'Cl')
  assert cl.n_core == 10 and cl.symbol == 'Cl'
  assert sorted(cl.channels) == [0, 1] and cl.max_l == 1
  ((alpha, z_eff),) = [(a, c) for n, a, c in cl.local if n == -1]
  assert z_eff == 17 - cl.n_core
  (c_r1,) = [c for n, a, c in cl.local if n == 1]
  np.testing.assert_allclose(c_r1, z_eff * alpha, rtol=1e-6)  # ccECP: α Z_eff r exp(-β r²)
  (c_r0,) = [c for n, a, c in cl.local if n == 0]
  for r in (1e-4, 1e-6):  # -Z_eff/r + v_loc(r) -> the r^0 coefficient, O(r)
    np.testing.assert_allclose(float(ecp.local_potential(cl, r)) - z_eff / r, c_r0, atol=1e-2 * r)
  # One point of v_0 against PySCF's numbers read by hand: 15.839234 e^{-17.908432 r²} + ...
  r = 0.37
  expected = 15.839234 * np.exp(-17.908432 * r**2) + 44.469504 * np.exp(-4.15988 * r**2)
  np.testing.assert_allclose(float(ecp.semilocal_potentials(cl, r)[0]), expected, rtol=1e-12)


def test_unknown_element_or_type_names_both():
  with pytest.raises(ValueError, match=r"'ccecp'.*'Xx'"):
    ecp.load('ccecp', 'Xx')
  with pytest.raises(errors.ConfigError, match=r"'no-such-ecp'.*'Cl'"):
    ecp.load('no-such-ecp', 'Cl')


def test_spin_orbit_terms_rejected():
  with pytest.raises(ValueError, match='spin-orbit'):
    ecp.from_table([10, [[1, [[], [], [[1.0, 2.0, 3.0]]]]]], 'Xe')


def test_make_local_sums_ecp_atoms_only():
  cl = ecp.load('ccecp', 'Cl')
  coords = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 2.0], [1.0, -1.0, 0.5]])
  pos = np.array([[0.3, 0.2, -0.1], [0.1, -0.4, 1.7]])
  value = ecp.make_local(coords, [cl, None, cl])(None, None, jnp.asarray(pos.reshape(-1)))
  expected = 0.0
  for centre in coords[[0, 2]]:
    r = np.linalg.norm(pos - centre, axis=1)
    expected += np.sum(7 / r * np.exp(-7.944352 * r**2) - 22.860784 * np.exp(-6.296744 * r**2))
    expected += np.sum(55.610463 * r * np.exp(-12.801261 * r**2))
  np.testing.assert_allclose(float(value), expected, rtol=1e-12)


# --- exact projections ----------------------------------------------------------------


def log_of(value_fn):
  """signed_log_psi from a real function of the positions (N, 3)."""

  def signed_log_psi(params, x):
    del params
    value = value_fn(x.reshape(-1, 3))
    return jnp.sign(value), jnp.log(jnp.abs(value))

  return signed_log_psi


@pytest.mark.parametrize('orbital', ['s', 'p'])
def test_one_electron_s_and_p(orbital):
  """The l-projector of an s (p) function gives v_l(r) for l = 0 (1) and 0 for the others.

  The channels' radial functions differ, so [V_nl ψ]/ψ = v_0(r) (s) or v_1(r) (p) exactly
  only if each other channel adds 0.
  """
  centre = np.array([0.2, -0.1, 0.4])
  if orbital == 's':
    psi = log_of(lambda p: jnp.exp(-0.8 * jnp.sum((p[0] - centre) ** 2)))
  else:
    psi = log_of(lambda p: (p[0, 2] - centre[2]) * jnp.exp(-jnp.linalg.norm(p[0] - centre)))
  chans = {0: [(1.3, 2.5)], 1: [(0.6, -1.1)], 2: [(0.9, 0.8)]}
  est = ecp.make_nonlocal(psi, centre[None], [gaussian_ecp(channels=chans)])
  x = jnp.asarray(centre + np.array([0.5, 0.3, -0.6]))
  r = np.linalg.norm(x - centre)
  values = jax.jit(jax.vmap(est, in_axes=(None, 0, None)))(None, keys(4), x)
  np.testing.assert_allclose(values, gauss(chans[0 if orbital == 's' else 1], r), rtol=1e-12)


def test_linear_product_two_atoms():
  """ψ = Π_i (a_i + b_i·r_i): about any centre R its s part is a_i + b_i·R, its p part b_i·(r - R).

  So [V_nl ψ]/ψ = Σ_{I,i} [v_0,I(r_iI) (a_i + b_i·R_I) + v_1,I(r_iI) b_i·(r_i - R_I)] / (a_i +
  b_i·r_i), exactly for any rotation; the l = 2 channel adds 0. Checks the indexing of
  electrons, atoms, atoms without pseudopotential and quadrature points.
  """
  rng = np.random.default_rng(1)
  n = 4
  a, b = rng.normal(size=n), rng.normal(size=(n, 3))
  coords = np.array([[0.0, 0.0, 0.0], [1.5, 0.0, 0.0], [0.0, 1.0, 1.2]])
  chans = [
    {0: [(0.9, 1.7)], 1: [(0.5, -2.1), (2.0, 0.7)], 2: [(1.1, 3.0)]},
    None,
    {0: [(0.4, -0.6)], 1: [(0.8, 1.4)]},
  ]
  ecps = [gaussian_ecp(channels=c) if c else None for c in chans]
  psi = log_of(lambda p: jnp.prod(jnp.asarray(a) + jnp.sum(jnp.asarray(b) * p, axis=1)))
  pos = rng.normal(size=(n, 3))
  est = jax.jit(jax.vmap(ecp.make_nonlocal(psi, coords, ecps), in_axes=(None, 0, None)))
  expected = 0.0
  for centre, c in zip(coords, chans, strict=True):
    if c is None:
      continue
    d = pos - centre
    r = np.linalg.norm(d, axis=1)
    s_part, p_part = a + b @ centre, np.sum(b * d, axis=1)
    expected += np.sum(
      (gauss(c[0], r) * s_part + gauss(c[1], r) * p_part) / (a + np.sum(b * pos, 1))
    )
  np.testing.assert_allclose(est(None, keys(4), jnp.asarray(pos.ravel())), expected, rtol=1e-12)


def harmonics(d, coeffs):
  """Homogeneous harmonic polynomials h_0..h_4 at d (..., 3), scaled by coeffs (5,)."""
  x, y, z = d[..., 0], d[..., 1], d[..., 2]
  h = [
    jnp.ones_like(x),
    0.7 * x - 0.4 * y + 0.9 * z,
    x * y + 0.6 * (x * x - y * y) - 0.8 * y * z + 0.5 * (2 * z * z - x * x - y * y),
    x * y * z + 0.3 * (x**3 - 3 * x * y * y) + 0.4 * (z**3 - 1.5 * z * (x * x + y * y)),
    x**4 - 6 * x * x * y * y + y**4 + 0.8 * x * y * (x * x - y * y),
  ]
  return jnp.stack([c * v for c, v in zip(coeffs, h, strict=True)])


CENTRE = np.array([0.1, 0.3, -0.2])
X = jnp.asarray(CENTRE + np.array([0.6, -0.5, 0.45]))


def angular_case(coeffs, chans, n_points):
  """(estimator, exact value) for ψ = exp(-0.6 r²) Σ_l h_l about CENTRE, one electron at X.

  h_l restricted to a sphere is a spherical harmonic of degree l, so its l-projection is
  itself: [V_nl ψ]/ψ = Σ_l v_l(r) h_l(d) / Σ_k h_k(d).
  """
  f = lambda p: (
    jnp.exp(-0.6 * jnp.sum((p[0] - CENTRE) ** 2)) * jnp.sum(harmonics(p[0] - CENTRE, coeffs))
  )
  est = ecp.make_nonlocal(log_of(f), CENTRE[None], [gaussian_ecp(channels=chans)], n_points)
  d = np.asarray(X) - CENTRE
  h = np.asarray(harmonics(jnp.asarray(d), coeffs))
  r = np.linalg.norm(d)
  exact = sum(gauss(terms, r) * h[ang] for ang, terms in chans.items()) / np.sum(h)
  return jax.jit(jax.vmap(est, in_axes=(None, 0, None))), exact


CHANNELS_012 = {0: [(0.9, 1.7)], 1: [(0.5, -2.1)], 2: [(1.2, 2.4)]}


def test_icosahedron_exact_to_degree_5_for_every_rotation():
  """Channels l ≤ 2 and ψ up to l = 3: every P_l h_k has degree ≤ 5, so each rotation is exact."""
  est, exact = angular_case([1.0, 0.8, 0.6, 0.7, 0.0], CHANNELS_012, 12)
  values = np.asarray(est(None, keys(16), X))
  np.testing.assert_allclose(values, exact, rtol=1e-12)
  assert np.ptp(values) < 1e-12 * abs(exact)
  # The octahedron (degree 3) is not exact here, and differs between rotations.
  est6, _ = angular_case([1.0, 0.8, 0.6, 0.7, 0.0], CHANNELS_012, 6)
  values6 = np.asarray(est6(None, keys(16), X))
  assert np.max(np.abs(values6 - exact)) > 1e-3 * abs(exact)


def test_octahedron_exact_to_degree_3_for_every_rotation():
  est, exact = angular_case([1.0, 0.8, 0.6, 0.0, 0.0], {0: [(0.9, 1.7)], 1: [(0.5, -2.1)]}, 6)
  np.testing.assert_allclose(np.asarray(est(None, keys(16), X)), exact, rtol=1e-12)


@pytest.mark.parametrize('n_points', [6, 12])
def test_random_rotations_unbiased(n_points):
  """With l = 3, 4 content and an l = 3 channel a single rotation errs; the mean over
  rotations is the exact projection (within 4σ of 20000 rotations)."""
  chans = {**CHANNELS_012, 3: [(0.7, -1.9)]}
  est, exact = angular_case([1.0, 0.8, 0.6, 0.7, 0.5], chans, n_points)
  values = np.asarray(est(None, keys(20000, seed=3), X))
  assert np.std(values) > 1e-2 * abs(exact)
  sigma = np.std(values) / np.sqrt(len(values))
  assert abs(np.mean(values) - exact) < 4 * sigma, (np.mean(values), exact, sigma)


def test_random_rotations_are_rotations():
  rot = np.asarray(ecp.random_rotations(jax.random.PRNGKey(0), (1000,)))
  np.testing.assert_allclose(
    np.einsum('aij,akj->aik', rot, rot), np.broadcast_to(np.eye(3), rot.shape), atol=1e-12
  )
  np.testing.assert_allclose(np.linalg.det(rot), 1.0, atol=1e-12)
  # Haar measure: the image of a fixed vector is uniform on the sphere (mean 0, <z²> = 1/3).
  z = rot[:, :, 2]
  assert np.all(np.abs(z.mean(0)) < 4 / np.sqrt(3 * len(z)))
  assert np.all(np.abs((z**2).mean(0) - 1 / 3) < 4 * np.sqrt(4 / 45 / len(z)))


# --- against PySCF ----------------------------------------------------------------------


def slater_determinant(mol, mf):
  """signed_log_psi of the occupied UHF/ROHF orbitals, x (3N,) with α electrons first."""
  n_alpha, n_beta = mol.nelec
  coeff = np.asarray(mf.mo_coeff)
  if coeff.ndim == 2:
    coeff = np.stack([coeff, coeff])
  occ = np.asarray(mf.mo_occ)
  occ = np.stack([occ > 0, occ > 1]) if occ.ndim == 1 else occ > 0
  c_alpha, c_beta = coeff[0][:, occ[0]], coeff[1][:, occ[1]]
  assert c_alpha.shape[1] == n_alpha and c_beta.shape[1] == n_beta

  signed = scf_lib.make_determinant(mol, n_alpha)
  return lambda params, x: signed((c_alpha, c_beta), x)


def pyscf_ecp_energies(mol, mf) -> dict[str, float]:
  """Σ_σ tr(D_σ V) for PySCF's full ECP matrix and for its local channels alone.

  PySCF has no integral of the local channel alone, so it is that of a copy of the Mole
  whose ECP tables keep only the l = -1 channels.
  """
  dm = np.asarray(mf.make_rdm1())
  dm = dm if dm.ndim == 3 else np.stack([dm / 2, dm / 2])
  local_only = copy.deepcopy(mol._ecp)
  for symbol, (n_core, chans) in local_only.items():
    local_only[symbol] = [n_core, [c for c in chans if c[0] < 0]]
  mol_local = mol.copy()
  mol_local.ecp = local_only
  mol_local.build()
  full = float(np.einsum('sij,ji->', dm, mol.intor('ECPscalar')))
  local = float(np.einsum('sij,ji->', dm, mol_local.intor('ECPscalar')))
  return {'total': full, 'ecp_local': local, 'ecp_nonlocal': full - local}


def monte_carlo_ecp(mol, mf, n_walkers, n_samples, burn_in=40, steps=10, seed=0):
  """Per-walker means of ecp_local and ecp_nonlocal over n_samples samples of |Φ|²."""
  psi = slater_determinant(mol, mf)
  coords = mol.atom_coords(unit='Bohr')
  estimators = ecp.make_estimators(psi, coords, ecp.from_mole(mol))
  n = sum(mol.nelec)
  key = jax.random.PRNGKey(seed)
  key, k_atom, k_pos = jax.random.split(key, 3)
  atom = jax.random.randint(k_atom, (n_walkers, n), 0, len(coords))
  walkers = jnp.asarray(coords)[atom] + jax.random.normal(k_pos, (n_walkers, n, 3))
  walkers = walkers.reshape(n_walkers, 3 * n)
  log_prob = lambda p, x: 2 * psi(p, x)[1]
  step = jax.jit(mcmc.make_step(log_prob, steps))
  log_p = jax.jit(jax.vmap(log_prob, in_axes=(None, 0)))(None, walkers)
  ids = jnp.arange(n_walkers)
  width = jnp.asarray(0.3, walkers.dtype)  # not weakly typed: adapt_width's output is not

  @jax.jit
  def measure(walkers, key):
    walker_keys = jax.random.split(key, walkers.shape[0])
    return {
      name: jax.vmap(est, in_axes=(None, 0, 0))(None, walker_keys, walkers)
      for name, est in estimators.items()
    }

  for _ in range(burn_in):
    key, sub = jax.random.split(key)
    walkers, log_p, pmove = step(None, walkers, log_p, sub, ids, width)
    width = mcmc.adapt_width(width, pmove, 0.5)
  sums = {name: np.zeros(n_walkers) for name in estimators}
  for _ in range(n_samples):
    key, k_step, k_est = jax.random.split(key, 3)
    walkers, log_p, _ = step(None, walkers, log_p, k_step, ids, width)
    for name, values in measure(walkers, k_est).items():
      sums[name] += np.asarray(values)
  return {name: s / n_samples for name, s in sums.items()}


def check_against_pyscf(mol, mf, n_walkers, n_samples, max_sigma):
  exact = pyscf_ecp_energies(mol, mf)
  means = monte_carlo_ecp(mol, mf, n_walkers, n_samples)
  means['total'] = means['ecp_local'] + means['ecp_nonlocal']
  report = {}
  for name, per_walker in means.items():
    value = per_walker.mean()
    sigma = per_walker.std(ddof=1) / np.sqrt(n_walkers)
    report[name] = (value, sigma, exact[name])
  print(report)
  for name, (value, sigma, ref) in report.items():
    assert sigma < max_sigma, (name, sigma)
    assert abs(value - ref) < 4 * sigma, (name, value, sigma, ref)
  return report


def aluminium():
  """Al: 3 valence electrons (3s² 3p¹) that feel all three ccECP channels (local, s, p)."""
  mol = gto.M(atom='Al 0 0 0', basis='ccecp-cc-pvdz', ecp='ccecp', spin=1, verbose=0)
  return mol, scf.UHF(mol).run()


def test_monte_carlo_matches_pyscf_aluminium_quick():
  check_against_pyscf(*aluminium(), n_walkers=512, n_samples=10, max_sigma=0.03)


@pytest.mark.slow
def test_monte_carlo_matches_pyscf_aluminium():
  check_against_pyscf(*aluminium(), n_walkers=4096, n_samples=40, max_sigma=5e-3)


@pytest.mark.slow
def test_monte_carlo_matches_pyscf_alh():
  """AlH, both atoms with ccECP (H's is local only, n_core 0): orbitals off the Al centre
  are not exactly integrated by one rotation, so this also checks the rotation average."""
  mol = gto.M(
    atom='Al 0 0 0; H 0 0 3.11', unit='bohr', basis='ccecp-cc-pvdz', ecp='ccecp', verbose=0
  )
  check_against_pyscf(mol, scf.RHF(mol).run(), n_walkers=4096, n_samples=40, max_sigma=5e-3)


def test_local_only_pseudopotential_has_no_nonlocal_part():
  """H's ccECP (n_core 0) is local only: from_mole keeps it, the non-local part is 0."""
  mol = gto.M(atom='Na 0 0 0; H 0 0 3.6', unit='bohr', basis='ccecp-cc-pvdz', ecp={'H': 'ccecp'})
  na, h = ecp.from_mole(mol)
  assert na is None and h.n_core == 0 and h.max_l == -1 and h.local
  assert ecp.semilocal_potentials(h, jnp.ones(3)).shape == (0, 3)
  psi = log_of(lambda p: jnp.exp(-jnp.sum(p**2)))
  est = ecp.make_nonlocal(psi, mol.atom_coords(), [na, h])
  assert float(est(None, jax.random.PRNGKey(0), jnp.ones(3))) == 0.0
