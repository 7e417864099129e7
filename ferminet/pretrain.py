"""Hartree–Fock pretraining: fit the network's orbitals to the occupied HF orbitals.

For walkers x, the loss is the mean squared difference between every
determinant's orbital matrix and the HF orbital matrix at x (block-diagonal
α/β when ``full_det``: α electrons fit [Φ_α^HF, 0], β electrons [0, Φ_β^HF]).
Walkers sample a mixture of the HF and network densities,
p ∝ f |ψ_HF|² + (1 − f) |ψ_net|² with f = ``scf_fraction``, by Metropolis.
Parameters are updated with Adam.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from ferminet import linalg, mcmc, networks, parallel, scf


def _hf_matrices(orbitals_fn: scf.OrbitalsFn, x: jax.Array, electrons: tuple[int, int]):
  """HF orbital matrices (n_α, n_α) of the α and (n_β, n_β) of the β electrons of x."""
  na, nb = electrons
  pos = x.reshape(-1, 3)
  alpha = orbitals_fn(pos[:na])[0] if na else jnp.zeros((0, 0), x.dtype)
  beta = orbitals_fn(pos[na:])[1] if nb else jnp.zeros((0, 0), x.dtype)
  return alpha, beta


def make_target(
  orbitals_fn: scf.OrbitalsFn, electrons: tuple[int, int], full_det: bool
) -> Callable[[jax.Array], list[jax.Array]]:
  """HF target matrices of one walker x (3N,): [(n_α, n_orb), (n_β, n_orb)]."""
  na, nb = electrons

  def target(x):
    alpha, beta = _hf_matrices(orbitals_fn, x, electrons)
    if not full_det:
      return [alpha, beta]
    return [
      jnp.concatenate([alpha, jnp.zeros((na, nb), x.dtype)], axis=1),
      jnp.concatenate([jnp.zeros((nb, na), x.dtype), beta], axis=1),
    ]

  return target


def make_hf_log_prob(orbitals_fn: scf.OrbitalsFn, electrons: tuple[int, int]):
  """log |ψ_HF(x)|² = 2 (log|det Φ_α| + log|det Φ_β|) for one walker."""

  def log_prob(x):
    total = jnp.zeros((), x.dtype)
    for mat in _hf_matrices(orbitals_fn, x, electrons):
      if mat.shape[0]:
        total = total + linalg.slogdet(mat)[1]
    return 2.0 * total

  return log_prob


def make_step(
  network: networks.Network,
  hf: scf.HartreeFock,
  electrons: tuple[int, int],
  full_det: bool,
  learning_rate: float,
  scf_fraction: float,
  mcmc_steps: int,
  target_acceptance: float = 0.5,
):
  """Pretraining pieces, pmapped over devices.

  Returns:
    (init_opt, step): ``init_opt(params) -> adam state`` and
    ``step(params, opt_state, walkers, key, ids, width) -> (params, opt_state,
    walkers, width, loss, pmove)`` with loss the mean squared orbital error,
    ``key`` one PRNG key (not per device) and ``ids`` the walkers' global indices
    (see mcmc.make_step); the width adapts towards ``target_acceptance`` on the devices.
  """
  orbitals_fn = scf.make_orbitals_fn(hf)
  target = make_target(orbitals_fn, electrons, full_det)
  hf_log_prob = make_hf_log_prob(orbitals_fn, electrons)
  adam = optax.adam(learning_rate)

  def fit_loss(params, walkers):
    """Mean squared error per orbital-matrix entry, averaged over walkers."""

    def one(x):
      mats = network.orbitals(params, x)
      errors = [(m - t[None]) ** 2 for m, t in zip(mats, target(x), strict=True)]
      return sum(jnp.sum(e) for e in errors) / sum(e.size for e in errors)

    return jnp.mean(jax.vmap(one)(walkers))

  def log_prob(params, x):
    log_hf = hf_log_prob(x)
    if scf_fraction >= 1.0:
      return log_hf
    log_net = 2.0 * network.log_abs(params, x)
    if scf_fraction <= 0.0:
      return log_net
    return jnp.logaddexp(jnp.log(scf_fraction) + log_hf, jnp.log1p(-scf_fraction) + log_net)

  sample = mcmc.make_step(log_prob, mcmc_steps)
  batched_log_prob = jax.vmap(log_prob, in_axes=(None, 0))

  def local_step(params, opt_state, walkers, key, ids, width):
    loss, grads = jax.value_and_grad(fit_loss)(params, walkers)
    grads = parallel.pmean(grads)
    updates, opt_state = adam.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    log_p = batched_log_prob(params, walkers)
    walkers, _, pmove = sample(params, walkers, log_p, key, ids, width)
    pmove = parallel.pmean(pmove)
    width = mcmc.adapt_width(width, pmove, target_acceptance)
    return params, opt_state, walkers, width, parallel.pmean(loss), pmove

  init_opt = jax.pmap(adam.init, axis_name=parallel.AXIS)
  step = jax.pmap(local_step, axis_name=parallel.AXIS, in_axes=(0, 0, 0, None, 0, 0))
  return init_opt, step
