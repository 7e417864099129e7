"""Hartree–Fock reference states (via PySCF) and their orbitals in JAX.

The HF orbitals are the pretraining target of the network. PySCF runs the SCF
on the host; the occupied orbitals are then re-evaluated in pure ``jnp`` from
PySCF's basis data, so they can be jitted, vmapped and differentiated.

Everything is in atomic units: positions in bohr, energies in hartree.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import pyscf
from pyscf import gto, scf
from pyscf.lib import exceptions as pyscf_exceptions

from ferminet import elements, errors, linalg
from ferminet.system import System

METHODS = ('rhf', 'uhf', 'rohf')
MAX_L = 6  # highest angular momentum (i functions) that ao_values handles.
# Decimals the occupied MO coefficients are rounded to in make_orbitals_fn (see there).
COEFF_DECIMALS = 12
# libcint folds the s and p normalisation sqrt((2l+1)/4pi) into the Cartesian values.
_FAC_SP = {0: 1.0 / np.sqrt(4.0 * np.pi), 1: np.sqrt(3.0 / (4.0 * np.pi))}

OrbitalsFn = Callable[[jnp.ndarray], tuple[jnp.ndarray, jnp.ndarray]]


def _basis_error(system: System, basis: str) -> errors.ConfigError:
  """A one-line error naming the elements PySCF has no ``basis`` for."""
  missing = []
  for symbol in dict.fromkeys(system.symbols):
    try:
      with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        if not gto.basis.load(basis, symbol):
          missing.append(symbol)
    except Exception:  # noqa: BLE001 - any failure means "not available".
      missing.append(symbol)
  which = f' for {", ".join(missing)}' if missing else ''
  return errors.ConfigError(
    f'PySCF has no basis set {basis!r}{which}: choose another with '
    "--config.pretrain.basis (e.g. 'ccpvdz' or 'sto-3g')"
  )


def make_mole(system: System, basis: str = 'ccpvdz', pp_basis: str = '') -> pyscf.gto.Mole:
  """A built PySCF molecule for ``system`` (bohr units, verbose 0).

  ``mol.nelec`` equals ``system.electrons``. Nuclear charges that differ from
  the atomic number (``Atom.charge``) are passed to libcint as fractional
  charges; the basis is still the element's. Atoms with a pseudopotential get it
  as PySCF's ECP of ``system.pp_type`` and the basis ``pp_basis`` (default
  ``basis``), the others ``basis``.

  Raises:
    errors.ConfigError: if PySCF does not know ``basis`` for some element.
  """
  if not isinstance(basis, str) or not basis.strip():
    raise errors.ConfigError(f'--config.pretrain.basis must be a basis name, got {basis!r}')
  atomic_numbers = [elements.get(s).atomic_number for s in system.symbols]
  mol = gto.Mole()
  mol.atom = [(s, tuple(c)) for s, c in zip(system.symbols, system.coords, strict=True)]
  mol.unit = 'Bohr'
  mol.basis = basis
  if system.pp_type:
    mol.basis = {
      s: (pp_basis or basis) if s in system.pp_symbols else basis for s in system.symbols
    }
    mol.ecp = {s: system.pp_type for s in system.pp_symbols}
  mol.charge = sum(atomic_numbers) - sum(system.cores) - system.n_electrons
  mol.spin = system.spin
  mol.verbose = 0
  try:
    with warnings.catch_warnings():
      warnings.simplefilter('ignore')
      mol.build(dump_input=False, parse_arg=False)
  except (pyscf_exceptions.BasisNotFoundError, KeyError) as e:
    raise _basis_error(system, pp_basis or basis if system.pp_type else basis) from e
  charges = system.charges
  if np.any(charges != np.asarray(atomic_numbers, dtype=float) - system.core_counts):
    ptr = len(mol._env)
    mol._env = np.append(mol._env, charges)
    mol._atm[:, gto.mole.NUC_MOD_OF] = gto.mole.NUC_FRAC_CHARGE
    mol._atm[:, gto.mole.PTR_FRAC_CHARGE] = ptr + np.arange(len(charges))
  mol.nelectron = system.n_electrons
  assert tuple(mol.nelec) == tuple(system.electrons), (mol.nelec, system.electrons)
  return mol


@dataclasses.dataclass(frozen=True, eq=False)
class HartreeFock:
  """A converged (or best-effort) HF state.

  Attributes:
    energy: total HF energy in hartree (including nuclear repulsion).
    method: 'RHF', 'UHF' or 'ROHF'.
    mol: the PySCF molecule the orbitals are expanded in.
    coeff_alpha: occupied alpha MO coefficients, shape (n_ao, n_alpha).
    coeff_beta: occupied beta MO coefficients, shape (n_ao, n_beta).
    converged: whether PySCF reported SCF convergence.
  """

  energy: float
  method: str
  mol: pyscf.gto.Mole
  coeff_alpha: np.ndarray
  coeff_beta: np.ndarray
  converged: bool


_CACHE: dict[tuple, HartreeFock] = {}


def _resolve_method(system: System, method: str) -> str:
  key = str(method).strip().lower()
  if key == 'auto':
    return 'rhf' if system.electrons[0] == system.electrons[1] else 'uhf'
  if key not in METHODS:
    raise errors.ConfigError(f"unknown HF method {method!r}: use 'auto', 'rhf', 'uhf' or 'rohf'")
  if key == 'rhf' and system.electrons[0] != system.electrons[1]:
    raise errors.ConfigError(
      f"RHF needs a closed shell, but electrons are {system.electrons}: use 'uhf', 'rohf' or 'auto'"
    )
  return key


def _occupied(mo_coeff: np.ndarray, mo_occ: np.ndarray, n: int, threshold: float) -> np.ndarray:
  """Columns of mo_coeff (n_ao, n_mo) whose occupation exceeds threshold; (n_ao, n)."""
  coeff = np.ascontiguousarray(mo_coeff[:, mo_occ > threshold])
  if coeff.shape[1] != n:
    raise RuntimeError(f'HF occupied {coeff.shape[1]} orbitals, expected {n}')
  coeff.setflags(write=False)
  return coeff


def hartree_fock(
  system: System, basis: str = 'ccpvdz', method: str = 'auto', pp_basis: str = ''
) -> HartreeFock:
  """Runs HF for ``system`` with PySCF (cached per geometry, basis and method).

  Args:
    system: nuclei (bohr) and electrons.
    basis: PySCF basis name (``--config.pretrain.basis``).
    method: 'auto' (RHF for closed shells, UHF otherwise), 'rhf', 'uhf' or 'rohf'.
    pp_basis: the basis of atoms with a pseudopotential (``system.pp.basis``).

  Returns:
    The HF state; if plain SCF does not converge, one second-order (Newton)
    run is tried and ``converged`` reports the final outcome.
  """
  method = _resolve_method(system, method)
  key = (
    tuple(map(float, system.coords.ravel())),
    tuple(map(float, system.charges)),
    tuple(system.electrons),
    str(basis).strip().lower(),
    method,
    system.pp_type,
    system.pp_symbols,
    str(pp_basis).strip().lower(),
  )
  if key in _CACHE:
    return _CACHE[key]
  mol = make_mole(system, basis, pp_basis)
  mf = {'rhf': scf.RHF, 'uhf': scf.UHF, 'rohf': scf.ROHF}[method](mol)
  mf.verbose = 0
  atomic_numbers = [elements.get(s).atomic_number for s in system.symbols]
  if np.any(system.charges != np.asarray(atomic_numbers, dtype=float) - system.core_counts):
    # PySCF's default (minao) guess reads a fractional nuclear charge (system.delta_charge)
    # as an ECP core and fails; the core-Hamiltonian guess needs no atomic data.
    mf.init_guess = '1e'
  mf.kernel()
  if not mf.converged:
    newton = mf.newton()
    newton.verbose = 0
    newton.kernel(mf.mo_coeff, mf.mo_occ)
    mf = newton
  na, nb = system.electrons
  if method == 'uhf':
    coeff_alpha = _occupied(mf.mo_coeff[0], mf.mo_occ[0], na, 0.5)
    coeff_beta = _occupied(mf.mo_coeff[1], mf.mo_occ[1], nb, 0.5)
  else:  # RHF/ROHF occupations are 0, 1 (alpha only) or 2.
    coeff_alpha = _occupied(mf.mo_coeff, mf.mo_occ, na, 0.5)
    coeff_beta = _occupied(mf.mo_coeff, mf.mo_occ, nb, 1.5)
  result = HartreeFock(
    energy=float(mf.e_tot),
    method=method.upper(),
    mol=mol,
    coeff_alpha=coeff_alpha,
    coeff_beta=coeff_beta,
    converged=bool(mf.converged),
  )
  _CACHE[key] = result
  return result


@dataclasses.dataclass(frozen=True)
class _ShellGroup:
  """All shells of one angular momentum ``ang`` (l), zero padded to a common shape.

  centers (S, 3) bohr; exps (S, K) bohr^-2; coeffs (S, K, C) libcint-normalised
  contraction coefficients; powers (n_cart, 3) Cartesian exponents in PySCF
  order; c2s (n_cart, n_sph) or None for Cartesian output.
  """

  ang: int
  centers: np.ndarray
  exps: np.ndarray
  coeffs: np.ndarray
  powers: np.ndarray
  c2s: np.ndarray | None


def _cart_powers(ang: int) -> np.ndarray:
  """(a, b, c) of x^a y^b z^c for the (l+1)(l+2)/2 Cartesian components, PySCF order."""
  return np.array([(a, ang - a - c, c) for a in range(ang, -1, -1) for c in range(ang - a + 1)])


def _shell_groups(mol: gto.Mole) -> tuple[list[_ShellGroup], np.ndarray]:
  """Basis tables grouped by l, and the gather index (n_ao,) into their concatenation."""
  ls = np.array([mol.bas_angular(i) for i in range(mol.nbas)], dtype=int)
  if ls.max(initial=0) > MAX_L:
    raise errors.ConfigError(
      f'the basis has l={ls.max()} functions but ao_values supports l <= {MAX_L}: '
      'choose a smaller --config.pretrain.basis'
    )
  ao_loc = mol.ao_loc_nr()  # Cartesian or spherical, following mol.cart.
  groups, positions, offset = [], [], 0
  for ang in sorted(set(ls.tolist())):
    shells = np.flatnonzero(ls == ang)
    exps = [mol.bas_exp(i) for i in shells]
    ctrs = [mol._libcint_ctr_coeff(i) for i in shells]  # (nprim, nctr) each.
    n_k, n_c = max(len(e) for e in exps), max(c.shape[1] for c in ctrs)
    exp_table = np.zeros((len(shells), n_k))
    coeff_table = np.zeros((len(shells), n_k, n_c))
    for s, (e, c) in enumerate(zip(exps, ctrs, strict=True)):
      exp_table[s, : len(e)] = e
      coeff_table[s, : c.shape[0], : c.shape[1]] = c * _FAC_SP.get(ang, 1.0)
    c2s = None if mol.cart else gto.cart2sph(ang, normalized='sp')
    n_comp = (ang + 1) * (ang + 2) // 2 if mol.cart else 2 * ang + 1
    for s, shell in enumerate(shells):
      for c in range(ctrs[s].shape[1]):
        start = offset + (s * n_c + c) * n_comp
        positions.append((ao_loc[shell] + c * n_comp, np.arange(start, start + n_comp)))
    offset += len(shells) * n_c * n_comp
    centers = np.array([mol.bas_coord(i) for i in shells])
    groups.append(_ShellGroup(ang, centers, exp_table, coeff_table, _cart_powers(ang), c2s))
  index = np.zeros(mol.nao, dtype=int)
  for ao_start, cols in positions:
    index[ao_start : ao_start + len(cols)] = cols
  return groups, index


def _eval_group(group: _ShellGroup, r: jnp.ndarray) -> jnp.ndarray:
  """Values of one shell group at r (..., 3) bohr; shape (..., S * C * n_comp)."""
  dtype = r.dtype
  d = r[..., None, :] - jnp.asarray(group.centers, dtype)  # (..., S, 3)
  r2 = jnp.sum(d * d, axis=-1)
  gauss = jnp.exp(-r2[..., None] * jnp.asarray(group.exps, dtype))  # (..., S, K)
  radial = jnp.einsum('...sk,skc->...sc', gauss, jnp.asarray(group.coeffs, dtype))
  pows = [jnp.ones_like(d)]
  for _ in range(group.ang):
    pows.append(pows[-1] * d)
  pows = jnp.stack(pows, axis=-2)  # (..., S, l+1, 3); integer powers stay grad-safe at 0.
  p = group.powers
  angular = pows[..., p[:, 0], 0] * pows[..., p[:, 1], 1] * pows[..., p[:, 2], 2]
  if group.c2s is not None:
    angular = angular @ jnp.asarray(group.c2s, dtype)  # (..., S, n_sph)
  values = radial[..., :, :, None] * angular[..., :, None, :]  # (..., S, C, n_comp)
  return values.reshape(*values.shape[:-3], -1)


def make_ao_fn(mol: gto.Mole) -> Callable[[jnp.ndarray], jnp.ndarray]:
  """Pure-jnp AO evaluation for ``mol``: positions (..., 3) bohr -> (..., n_ao).

  Matches ``mol.eval_gto('GTOval_sph')`` (or 'GTOval_cart' if ``mol.cart``) in
  PySCF's AO order; the output dtype follows the (floating) input dtype.
  """
  groups, index = _shell_groups(mol)

  def ao_fn(positions: jnp.ndarray) -> jnp.ndarray:
    r = jnp.asarray(positions)
    if not jnp.issubdtype(r.dtype, jnp.floating):
      r = r.astype(jnp.result_type(float))
    values = jnp.concatenate([_eval_group(g, r) for g in groups], axis=-1)
    return values[..., index]

  return jax.jit(ao_fn)


def ao_values(mol: gto.Mole, positions: jnp.ndarray) -> jnp.ndarray:
  """AO values of ``mol`` at positions (..., 3) in bohr; shape (..., n_ao)."""
  return make_ao_fn(mol)(positions)


def make_orbitals_fn(hf: HartreeFock) -> OrbitalsFn:
  """Occupied HF orbitals as a pure-JAX function.

  Returns:
    ``orbitals(positions)``: positions (n, 3) in bohr -> (alpha, beta) with
    shapes (n, n_alpha) and (n, n_beta); jit-, vmap- and grad-compatible.
  """
  ao_fn = make_ao_fn(hf.mol)
  # Constants of the compiled pretraining step: rounded so that the round-off of PySCF's
  # threaded linear algebra (about 1e-16, different at each launch) does not change the
  # program, which JAX's persistent compilation cache keys on.
  coeff_alpha, coeff_beta = (
    np.round(np.asarray(c, np.float64), COEFF_DECIMALS) for c in (hf.coeff_alpha, hf.coeff_beta)
  )

  def orbitals(positions: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    ao = ao_fn(positions)
    return ao @ jnp.asarray(coeff_alpha, ao.dtype), ao @ jnp.asarray(coeff_beta, ao.dtype)

  return orbitals


def make_determinant(
  mol: gto.Mole, n_first: int
) -> Callable[[tuple[jnp.ndarray, jnp.ndarray], jnp.ndarray], tuple[jnp.ndarray, jnp.ndarray]]:
  """A Slater determinant of orbitals in ``mol``'s AO basis, as a signed log ψ.

  Returns:
    ``signed(coeffs, x) -> (sign, log|Φ|)``: x (3N,) bohr with the ``n_first``
    electrons of the first spin channel first; ``coeffs`` = (C_1 (n_ao, n_first),
    C_2 (n_ao, N - n_first)) the occupied orbitals of each channel (an empty channel
    contributes 1), e.g. (``coeff_alpha``, ``coeff_beta``) of :func:`hartree_fock`. The
    orbitals are arguments, so one compiled function serves every determinant of a
    molecule. Uses :mod:`ferminet.linalg`, so it is safe to vmap on CPU.
  """
  ao_fn = make_ao_fn(mol)

  def signed(coeffs, x):
    ao = ao_fn(x.reshape(-1, 3))
    sign, log_abs = jnp.ones((), x.dtype), jnp.zeros((), x.dtype)
    for rows, coeff in zip((ao[:n_first], ao[n_first:]), coeffs, strict=True):
      if rows.shape[0]:
        s, ld = linalg.slogdet(rows @ jnp.asarray(coeff, ao.dtype))
        sign, log_abs = sign * s, log_abs + ld
    return sign, log_abs

  return signed
