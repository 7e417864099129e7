"""Monte Carlo estimators of observables other than the energy: ⟨S²⟩ and the dipole moment.

An *estimator* is a per-walker function ``(params, key, x) -> value`` with ``x`` of shape
(n_electrons * 3,) in bohr, the n_α α electrons first. Its mean over walkers x ~ |ψ|² is
the expectation value of the observable; deterministic estimators ignore ``key``. The
caller batches walkers (vmap) and devices, exactly as for the local energy.

The wavefunction is passed as a *signed log ψ*: ``(params, x) -> (sign, log|ψ|)``, as
``networks.make(...).apply`` returns.

``OBSERVABLES`` lists what can be estimated, with the statistics-file columns each one
writes; :func:`make` builds the enabled ones for a system.

Everything is in atomic units: positions in bohr, dipole moments in e·bohr
(:data:`DEBYE_PER_AU` converts to debye).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ferminet import errors
from ferminet import system as system_lib

Params = Any
SignedLogPsi = Callable[[Params, jax.Array], tuple[jax.Array, jax.Array]]
Estimator = Callable[[Params, jax.Array, jax.Array], jax.Array]

# The atomic unit of electric dipole moment, e·a0 = 8.478 353 6255e-30 C m (CODATA 2018,
# NIST "atomic unit of electric dipole mom."), and the debye, 1 D = 1e-21 / c C m with
# c = 299 792 458 m/s exact (so 1 D = 3.335 640 952e-30 C m): 1 e·bohr = 2.541 746 D.
_AU_DIPOLE_C_M = 8.4783536255e-30
_DEBYE_C_M = 1e-21 / 299792458.0
DEBYE_PER_AU = _AU_DIPOLE_C_M / _DEBYE_C_M


def to_debye(dipole_au: Any) -> Any:
  """A dipole moment (any shape) in e·bohr converted to debye."""
  return dipole_au * DEBYE_PER_AU


# ---------------------------------------------------------------------------------------
# S²


def _exchange_permutations(electrons: tuple[int, int]) -> np.ndarray:
  """Electron orders with one α and one β electron exchanged; (n_α·n_β, N) integers.

  Row k is the identity order with electrons i (α) and j (β) swapped, for the pairs
  (i, j) in row-major order over i = 0..n_α-1 and j = n_α..N-1.
  """
  n_alpha, n_beta = electrons
  n = n_alpha + n_beta
  i, j = np.meshgrid(np.arange(n_alpha), n_alpha + np.arange(n_beta), indexing='ij')
  i, j = i.ravel(), j.ravel()
  perms = np.tile(np.arange(n), (len(i), 1))
  rows = np.arange(len(i))
  perms[rows, i], perms[rows, j] = j, i
  return perms


def make_s2(
  signed_log_psi: SignedLogPsi,
  electrons: tuple[int, int],
  pair_batch_size: int | None = None,
) -> Estimator:
  """The local estimator of ⟨S²⟩ for a spin-assigned wavefunction.

  The network's ψ(r_1, ..., r_N) is the spatial factor of the antisymmetric state with
  electrons 1..n_α spin up and the rest spin down, so S_z = (n_α - n_β)/2 is fixed. With
  S² = S_z(S_z + 1) + S₋S₊ and the antisymmetry of the full state, applying S₋S₊ and
  projecting back on the assigned spins gives (Szabo & Ostlund eq. 2.271 is the
  determinant case of the same algebra)

    S²ψ/ψ (x) = S_z(S_z + 1) + n_β - Σ_{i∈α, j∈β} ψ(x with r_i ↔ r_j) / ψ(x).

  Check of the sign: for two electrons in one spatial orbital (the singlet) the ratio is
  +1 and S² = 0; for ψ = φ_a(r_1)φ_b(r_2) - φ_b(r_1)φ_a(r_2) (the S_z = 0 triplet) it
  is -1 and S² = 2. The local value is constant, S(S+1), wherever ψ is an eigenfunction
  of S² (a closed-shell RHF or high-spin ROHF determinant); otherwise only its mean
  over |ψ|² is ⟨S²⟩. The formula holds for n_β > n_α and for empty channels too
  (one electron alone: 3/4).

  Cost: n_α·n_β extra evaluations of ψ per walker (vmapped over the pairs), plus one of
  ψ(x); memory grows as n_α·n_β forward passes at once unless ``pair_batch_size`` is
  set.

  Args:
    signed_log_psi: ``(params, x (3N,)) -> (sign, log|ψ|)``.
    electrons: (n_α, n_β).
    pair_batch_size: if set, evaluate the exchanged wavefunctions in chunks of this
      many pairs (``lax.map``) instead of all at once.

  Returns:
    ``s2(params, key, x) -> ()``: the local S² (dimensionless, units of ħ²); ``key``
    is unused.
  """
  n_alpha, n_beta = (int(n) for n in electrons)
  s_z = 0.5 * (n_alpha - n_beta)
  constant = s_z * (s_z + 1.0) + n_beta
  perms = _exchange_permutations((n_alpha, n_beta))

  def s2(params: Params, key: jax.Array, x: jax.Array) -> jax.Array:
    del key
    if not len(perms):  # no α-β pairs: ψ is an eigenfunction, S² = |S_z|(|S_z| + 1)
      return jnp.asarray(constant, x.dtype)
    sign, log_abs = signed_log_psi(params, x)
    pos = x.reshape(-1, 3)

    def ratio(perm):  # ψ(exchanged) / ψ(x)
      sign_p, log_p = signed_log_psi(params, pos[perm].reshape(-1))
      return sign_p * sign * jnp.exp(log_p - log_abs)

    table = jnp.asarray(perms)
    if pair_batch_size is None:
      ratios = jax.vmap(ratio)(table)
    else:
      ratios = jax.lax.map(ratio, table, batch_size=int(pair_batch_size))
    return constant - jnp.sum(ratios)

  return s2


# ---------------------------------------------------------------------------------------
# Dipole moment


def electron_position_sum(x: jax.Array) -> jax.Array:
  """Σ_i r_i of one walker: x (3N,) bohr -> (3,) bohr.

  DeepMind's FermiNet writes the batch mean of this as ``mu_x, mu_y, mu_z``: no nuclear
  part and no electron charge sign, so it is minus the electronic dipole moment.
  """
  return jnp.sum(x.reshape(-1, 3), axis=0)


def make_electron_position_sum() -> Estimator:
  """The estimator of ⟨Σ_i r_i⟩ (the reference's ``mu``): ``(params, key, x) -> (3,)`` bohr."""

  def estimator(params: Params, key: jax.Array, x: jax.Array) -> jax.Array:
    del params, key
    return electron_position_sum(x)

  return estimator


def nuclear_dipole(charges: Any, coords: Any) -> np.ndarray:
  """Σ_I Z_I R_I for charges (n_atoms,) and coords (n_atoms, 3) bohr; (3,) e·bohr."""
  charges = np.asarray(charges, dtype=float).reshape(-1)
  coords = np.asarray(coords, dtype=float).reshape(-1, 3)
  if len(charges) != len(coords):
    raise ValueError(f'{len(charges)} charges but {len(coords)} nuclear positions')
  return charges @ coords


def make_dipole(charges: Any, coords: Any) -> Estimator:
  """The estimator of the electric dipole moment about the origin, in e·bohr.

  μ = Σ_I Z_I R_I - Σ_i r_i (nuclei clamped, electrons of charge -e): the physical
  dipole, the sign and origin convention of PySCF's ``dip_moment``. For a neutral
  molecule it does not depend on the origin.

  Args:
    charges: nuclear charges, (n_atoms,) in e.
    coords: nuclear positions, (n_atoms, 3) bohr.

  Returns:
    ``dipole(params, key, x) -> (3,)`` e·bohr; ``params`` and ``key`` are unused.
  """
  nuclear = nuclear_dipole(charges, coords)

  def dipole(params: Params, key: jax.Array, x: jax.Array) -> jax.Array:
    del params, key
    return jnp.asarray(nuclear, x.dtype) - electron_position_sum(x)

  return dipole


# ---------------------------------------------------------------------------------------
# Registry


@dataclasses.dataclass(frozen=True)
class Observable:
  """One observable the training loop can estimate.

  Attributes:
    columns: the statistics-file columns it writes, in the order of its estimator's
      value flattened (``value.reshape(-1)``).
    factory: ``(signed_log_psi, system) -> Estimator``.
    description: one line for logs and errors.
  """

  columns: tuple[str, ...]
  factory: Callable[[SignedLogPsi, system_lib.System], Estimator]
  description: str


def _s2_factory(signed_log_psi: SignedLogPsi, system: system_lib.System) -> Estimator:
  return make_s2(signed_log_psi, tuple(system.electrons))


def _dipole_factory(signed_log_psi: SignedLogPsi, system: system_lib.System) -> Estimator:
  del signed_log_psi  # the dipole is a function of positions only
  dipole = make_dipole(system.charges, system.coords)

  def estimator(params: Params, key: jax.Array, x: jax.Array) -> jax.Array:
    return jnp.concatenate([electron_position_sum(x), dipole(params, key, x)])

  return estimator


OBSERVABLES: dict[str, Observable] = {
  's2': Observable(('s2',), _s2_factory, 'total spin ⟨S²⟩'),
  'dipole': Observable(
    ('mu_x', 'mu_y', 'mu_z', 'dipole_x', 'dipole_y', 'dipole_z'),
    _dipole_factory,
    "Σ r_i as DeepMind's FermiNet writes it (mu_*, bohr) and the physical dipole "
    'Σ Z R - Σ r (dipole_*, e·bohr)',
  ),
}


def _checked(names: Iterable[str]) -> list[str]:
  if isinstance(names, str):
    names = [names]
  unique = list(dict.fromkeys(str(n) for n in names))
  unknown = [n for n in unique if n not in OBSERVABLES]
  if unknown:
    raise errors.ConfigError(
      f'unknown observable(s) {", ".join(map(repr, unknown))}: '
      f'choose from {", ".join(map(repr, OBSERVABLES))}'
    )
  return unique


def columns(names: Iterable[str]) -> tuple[str, ...]:
  """The statistics-file columns of the observables ``names``, in order."""
  return tuple(c for n in _checked(names) for c in OBSERVABLES[n].columns)


def make(
  names: Iterable[str], signed_log_psi: SignedLogPsi, system: system_lib.System
) -> dict[str, Estimator]:
  """The estimators of the observables ``names`` (keys of :data:`OBSERVABLES`).

  Args:
    names: observable names, e.g. ``('s2', 'dipole')``; duplicates are built once.
    signed_log_psi: ``(params, x (3N,)) -> (sign, log|ψ|)``.
    system: the nuclei and electron counts.

  Returns:
    name -> per-walker estimator ``(params, key, x) -> value``, in the order given;
    ``value.reshape(-1)`` matches ``OBSERVABLES[name].columns``.

  Raises:
    errors.ConfigError: for a name not in :data:`OBSERVABLES`.
  """
  return {n: OBSERVABLES[n].factory(signed_log_psi, system) for n in _checked(names)}
