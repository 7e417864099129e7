"""The molecular Hamiltonian and local energy of one walker, in hartree.

E_L(x) = -½ [∇² log|ψ| + |∇ log|ψ||²] + V_ee + V_en + V_nn, with the Laplacian
of log|ψ| computed by one of:

- ``hessian``: the exact trace of the Hessian, one Jacobian-vector product of
  ∇ log|ψ| per coordinate (3N of them, in a ``fori_loop``);
- ``forward``: the forward Laplacian (Li et al., "A computational framework
  for neural network-based variational Monte Carlo with Forward Laplacian",
  Nat. Mach. Intell. 2024), the same number in one forward pass: the one written
  for the FermiNet's structure (``fwdlap``) where the caller passes it, else
  folx's;
- ``folx``: folx's generic forward Laplacian of any log|ψ|.

Every per-walker quantity is an estimator ``(params, key, x) -> value``: x one
walker (3N,) bohr, key a PRNG key of that walker (from its global index, so that
results do not depend on how walkers are split over devices; deterministic
estimators ignore it). The local energy is the sum of the energy estimators
(:func:`energy_estimators`: kinetic, e–e, e–n, n–n and, with pseudopotentials,
the ECP's local and non-local parts), plus penalties (``PENALTIES``) that enter
the quantity minimised but not the energy reported.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import folx
import jax
import jax.numpy as jnp
import numpy as np

from ferminet import parallel
from ferminet import system as system_lib
from ferminet.config import LAPLACIANS

LogAbsFn = Callable[[Any, jax.Array], jax.Array]  # (params, x (3N,)) -> log|ψ|
# (params, x (3N,)) -> (sign ψ, log|ψ|), the network's ``apply``
SignedLogFn = Callable[[Any, jax.Array], tuple[jax.Array, jax.Array]]
# (params, key, x (3N,)) -> a per-walker value (hartree for energies)
Estimator = Callable[[Any, jax.Array, jax.Array], jax.Array]
# (params, key, x (3N,)) -> (E_L, its terms), hartree
LocalEnergy = Callable[[Any, jax.Array, jax.Array], tuple[jax.Array, dict[str, jax.Array]]]
# Terms of the local energy that are minimised but are not part of the Hamiltonian's
# energy (the energy and variance written are without them): optim.spin_energy · S².
PENALTIES = ('spin_penalty',)
# (params, x (3N,)) -> (∇² log|ψ|, ∇ log|ψ| (3N,)), as fwdlap.make returns
LaplacianFn = Callable[[Any, jax.Array], tuple[jax.Array, jax.Array]]


def potential_energy(x: jax.Array, nuclei: jax.Array, charges: jax.Array) -> dict[str, jax.Array]:
  """Coulomb potential terms of one walker, hartree.

  Args:
    x: electron positions, (n * 3,) bohr.
    nuclei: nuclear positions, (n_atoms, 3) bohr.
    charges: nuclear charges, (n_atoms,).

  Returns:
    dict with 'ee' (Σ_{i<j} 1/r_ij), 'en' (-Σ_{i,I} Z_I/r_iI) and 'nn'
    (Σ_{I<J} Z_I Z_J/R_IJ) as scalars.
  """
  pos = x.reshape(-1, 3)
  n = pos.shape[0]
  r_en = jnp.linalg.norm(pos[:, None, :] - nuclei[None], axis=-1)
  v_en = -jnp.sum(charges[None, :] / r_en)
  i, j = np.triu_indices(n, k=1)
  v_ee = jnp.sum(1.0 / jnp.linalg.norm(pos[i] - pos[j], axis=-1))
  a, b = np.triu_indices(nuclei.shape[0], k=1)
  v_nn = jnp.sum(charges[a] * charges[b] / jnp.linalg.norm(nuclei[a] - nuclei[b], axis=-1))
  return {'ee': v_ee, 'en': v_en, 'nn': v_nn}


def laplacian_hessian(
  f: Callable[[jax.Array], jax.Array], x: jax.Array
) -> tuple[jax.Array, jax.Array]:
  """(∇² f(x), ∇f(x)) by 3N Jacobian-vector products of ∇f, x of shape (3N,)."""
  grad, hvp = jax.linearize(jax.grad(f), x)
  eye = jnp.eye(x.shape[0], dtype=x.dtype)
  lap = jax.lax.fori_loop(
    0, x.shape[0], lambda i, acc: acc + hvp(eye[i])[i], jnp.zeros((), x.dtype)
  )
  return lap, grad


def laplacian_forward(
  f: Callable[[jax.Array], jax.Array], x: jax.Array, sparsity_threshold: int = 0
) -> tuple[jax.Array, jax.Array]:
  """(∇² f(x), ∇f(x)) by folx's forward Laplacian, x of shape (3N,)."""
  out = folx.forward_laplacian(f, sparsity_threshold=sparsity_threshold)(x)
  return out.laplacian, out.jacobian.dense_array.reshape(x.shape)


def make_kinetic_energy(
  log_abs: LogAbsFn,
  laplacian: str = 'forward',
  sparsity_threshold: int = 0,
  structured: LaplacianFn | None = None,
) -> Callable[[Any, jax.Array], jax.Array]:
  """Kinetic energy -½ ∇²ψ/ψ of one walker, hartree, from log|ψ|.

  ``structured``: the network's own forward Laplacian (``fwdlap.make``), used for
  ``forward``; without it ``forward`` falls back to folx.
  """
  if laplacian not in LAPLACIANS:
    raise ValueError(f'unknown laplacian {laplacian!r}: one of {", ".join(LAPLACIANS)}')
  if laplacian == 'forward' and structured is not None:
    lap_and_grad = structured
  else:

    def lap_and_grad(params: Any, x: jax.Array) -> tuple[jax.Array, jax.Array]:
      f = lambda y: log_abs(params, y)  # noqa: E731
      if laplacian == 'hessian':
        return laplacian_hessian(f, x)
      return laplacian_forward(f, x, sparsity_threshold)

  def kinetic(params: Any, x: jax.Array) -> jax.Array:
    lap, grad = lap_and_grad(params, x)
    return -0.5 * (lap + jnp.sum(grad**2))

  return kinetic


AUTO_SPARSITY = 6  # folx sparsity threshold used by sparsity -1 from AUTO_SPARSITY_ELECTRONS on
AUTO_SPARSITY_ELECTRONS = 10


def resolve_sparsity(sparsity_threshold: int, n_electrons: int) -> int:
  """folx sparsity threshold: the given value, or for -1 (auto) 6 for ≥ 10 electrons, else 0."""
  if sparsity_threshold >= 0:
    return sparsity_threshold
  return AUTO_SPARSITY if n_electrons >= AUTO_SPARSITY_ELECTRONS else 0


AUTO_CHUNK_BYTES = 5 * 2**19  # 2.5 MiB: one walker-chunk's Jacobians stay in cache


def resolve_chunk(
  max_vmap_batch_size: int,
  laplacian: str,
  platform: str,
  n_electrons: int,
  width: int,
  itemsize: int,
) -> int:
  """Walkers per local-energy chunk: the given value, or for -1 (auto) a cache-sized one.

  Auto chunks only the forward Laplacians (``forward``, ``folx``) on CPU, where one
  layer's Jacobian of a walker, n × 3n × ``width`` × ``itemsize`` bytes, makes the
  whole batch spill out of the caches: chunks of about 2.5 MiB of it (4 walkers at
  N2 in float32, 1 for bicyclobutane) were measured 1.7× (N2) to 1.4×
  (bicyclobutane) faster than the whole batch with folx; ``fwdlap`` at N2 is as
  fast with chunks of 2 to 6. The Hessian loop keeps one direction at a time and
  is fastest unchunked, as is every path on a GPU. 0 means no chunking.
  """
  if max_vmap_batch_size >= 0:
    return max_vmap_batch_size
  if laplacian == 'hessian' or platform != 'cpu':
    return 0
  per_walker = n_electrons * 3 * n_electrons * width * itemsize
  return max(1, AUTO_CHUNK_BYTES // per_walker)


def walker_keys(key: jax.Array, ids: jax.Array) -> jax.Array:
  """One PRNG key per walker from its global index: (b,) ids -> (b, ...) keys."""
  return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, ids)


def batch_local_energy(
  local_energy: LocalEnergy, chunk: int = 0
) -> Callable[[Any, jax.Array, jax.Array, jax.Array], tuple[jax.Array, dict[str, jax.Array]]]:
  """Local energies of a batch: ``(params, key, walkers (b, 3N), ids (b,)) -> (E_L, terms)``,
  E_L (b,) hartree and each term (b,).

  Walker i's estimators get the key ``fold_in(key, ids[i])``. ``chunk`` > 0 evaluates
  them that many walkers at a time (a ``lax.map`` over vmapped chunks, remainder
  included) to bound memory or stay in cache; 0 vmaps over all walkers at once.
  """

  def batch(params: Any, key: jax.Array, walkers: jax.Array, ids: jax.Array):
    def one(args):
      k, x = args
      return local_energy(params, k, x)

    return parallel.map_walkers(one, (walker_keys(key, ids), walkers), chunk)

  return batch


def coulomb_estimators(system: system_lib.System) -> dict[str, Estimator]:
  """'ee', 'en' and 'nn' of :func:`potential_energy` as estimators (nuclear charges:
  ``system.charges``, the effective ones with pseudopotentials)."""
  nuclei = np.asarray(system.coords)
  charges = np.asarray(system.charges)

  def term(name: str) -> Estimator:
    def estimator(params: Any, key: jax.Array, x: jax.Array) -> jax.Array:
      del params, key
      return potential_energy(x, jnp.asarray(nuclei, x.dtype), jnp.asarray(charges, x.dtype))[name]

    return estimator

  return {name: term(name) for name in ('ee', 'en', 'nn')}


def energy_estimators(
  log_abs: LogAbsFn,
  system: system_lib.System,
  laplacian: str = 'forward',
  sparsity_threshold: int = 0,
  structured: LaplacianFn | None = None,
  signed: SignedLogFn | None = None,
) -> dict[str, Estimator]:
  """The Hamiltonian's terms as estimators: 'kinetic', 'ee', 'en', 'nn' and, for a
  system with pseudopotentials, 'ecp_local' and 'ecp_nonlocal' (``ecp``; the
  non-local part needs the signed wavefunction ``signed``)."""
  sparsity = resolve_sparsity(sparsity_threshold, system.n_electrons)
  kinetic = make_kinetic_energy(log_abs, laplacian, sparsity, structured)
  estimators: dict[str, Estimator] = {'kinetic': lambda params, key, x: kinetic(params, x)}
  estimators.update(coulomb_estimators(system))
  if system.pp_type:
    from ferminet import ecp  # noqa: PLC0415 - needs PySCF's tables; only ECP runs load it

    if signed is None:
      raise ValueError('a system with pseudopotentials needs the signed wavefunction')
    pseudo = set(system.pseudo_atoms)
    ecps = [
      ecp.load(system.pp_type, a.symbol) if i in pseudo else None
      for i, a in enumerate(system.atoms)
    ]
    estimators.update(ecp.make_estimators(signed, system.coords, ecps))
  return estimators


def sum_of(estimators: dict[str, Estimator]) -> LocalEnergy:
  """``(params, key, x) -> (Σ estimators, {name: value})``; estimator j gets fold_in(key, j)."""
  names = sorted(estimators)

  def local_energy(params: Any, key: jax.Array, x: jax.Array):
    terms = {n: estimators[n](params, jax.random.fold_in(key, j), x) for j, n in enumerate(names)}
    return sum(terms.values()), terms

  return local_energy


def make_local_energy(
  log_abs: LogAbsFn,
  system: system_lib.System,
  laplacian: str = 'forward',
  sparsity_threshold: int = 0,
  structured: LaplacianFn | None = None,
  signed: SignedLogFn | None = None,
  penalties: dict[str, Estimator] | None = None,
) -> LocalEnergy:
  """Local energy of one walker: the sum of :func:`energy_estimators` and ``penalties``.

  ``laplacian`` is one of LAPLACIANS; ``structured`` the network's own forward
  Laplacian for ``forward`` (else folx); ``sparsity_threshold`` folx's; ``signed``
  the signed wavefunction (needed with pseudopotentials); ``penalties`` terms named
  in PENALTIES (e.g. the spin penalty).

  Returns:
    ``local_energy(params, key, x) -> (E_L, terms)``: E_L in hartree (scalar) and a
    dict of its parts ('kinetic', 'ee', 'en', 'nn', ...). x has shape (n * 3,), bohr.
  """
  estimators = energy_estimators(log_abs, system, laplacian, sparsity_threshold, structured, signed)
  for name in penalties or {}:
    if name not in PENALTIES:
      raise ValueError(f'{name!r} is not a penalty: one of {", ".join(PENALTIES)}')
  return sum_of({**estimators, **(penalties or {})})
