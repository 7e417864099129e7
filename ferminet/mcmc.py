"""Metropolis–Hastings sampling of |ψ|² on one device's walkers.

Walkers are arrays of shape (walkers, n_electrons * 3) in bohr, α electrons
first. Proposals move all electrons of a walker at once with a Gaussian of
standard deviation ``width`` (bohr); ``log p = 2 log|ψ|`` is carried along so
each Metropolis step costs one forward pass.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ferminet import system as system_lib

# width *= exp(ADAPT_GAIN * (pmove - target)) after every iteration (a factor
# within e^±0.5 for gain 1; the clip to [0.5, 2] only guards larger gains): from
# the default 0.02 bohr the target is reached within ~10 iterations, and at
# equilibrium the update is as small as the noise of pmove.
ADAPT_GAIN = 1.0
MIN_WIDTH, MAX_WIDTH = 1e-4, 10.0  # bohr


def electrons_per_atom(system: system_lib.System) -> list[tuple[int, int]]:
  """(n_alpha, n_beta) placed on each nucleus for the initial walkers.

  Electrons go to nuclei by nuclear charge (rounded), ions take or give
  electrons from the atoms with most or fewest electrons relative to their
  charge, and spins are distributed so that each atom is as close to
  spin-paired as the totals allow. Always terminates, for any charge and spin.
  """
  charges = np.asarray(system.charges)
  counts = np.maximum(np.round(charges).astype(int), 0)
  n_total = system.n_electrons
  while counts.sum() > n_total:  # cation: remove from the atom with most excess
    counts[np.argmax(counts - charges)] -= 1
  while counts.sum() < n_total:  # anion: add to the atom with the largest deficit
    counts[np.argmax(charges - counts)] += 1
  alpha = (counts + 1) // 2  # spin up first on each atom
  n_alpha = system.electrons[0]
  while alpha.sum() > n_alpha:  # flip α → β where an atom has the most α excess
    alpha[np.argmax(np.where(alpha > 0, 2 * alpha - counts, -np.inf))] -= 1
  while alpha.sum() < n_alpha:  # flip β → α where an atom has the most β
    alpha[np.argmax(np.where(alpha < counts, counts - 2 * alpha, -np.inf))] += 1
  return [(int(a), int(c - a)) for a, c in zip(alpha, counts, strict=True)]


def init_walkers(
  key: jax.Array, system: system_lib.System, n_walkers: int, width: float
) -> jax.Array:
  """Initial walkers (n_walkers, n_electrons * 3): electrons around their nuclei.

  Each electron starts at its nucleus plus a Gaussian of std ``width`` bohr.
  """
  per_atom = electrons_per_atom(system)
  coords = np.asarray(system.coords)
  centres = []
  for spin in (0, 1):
    for atom, counts in enumerate(per_atom):
      centres += [coords[atom]] * counts[spin]
  centres = jnp.asarray(np.array(centres).reshape(-1))
  noise = jax.random.normal(key, (n_walkers, centres.shape[0]))
  return centres[None, :] + width * noise


def follow_nuclei(walkers: Any, old_coords: Any, new_coords: Any) -> np.ndarray:
  """Walkers carried from one geometry to another: each electron moves with its nearest nucleus.

  Every electron is shifted by the displacement of the nucleus nearest to it in the old
  geometry, so that electrons near atom A stay near A wherever A went (a warm start from
  another geometry, ``log.init_from``).

  Args:
    walkers: (batch, 3N) electron positions in the old geometry, bohr.
    old_coords: (n_atoms, 3) nuclear positions the walkers belong to, bohr.
    new_coords: (n_atoms, 3) the positions of the same nuclei in the new geometry, bohr.

  Returns:
    (batch, 3N) electron positions for the new geometry, bohr, in the walkers' dtype.
  """
  walkers = np.asarray(walkers)
  old = np.asarray(old_coords, dtype=float).reshape(-1, 3)
  new = np.asarray(new_coords, dtype=float).reshape(-1, 3)
  if old.shape != new.shape:
    raise ValueError(f'{len(old)} old nuclear positions but {len(new)} new ones')
  electrons = walkers.reshape(walkers.shape[0], -1, 3).astype(float)
  nearest = np.zeros(electrons.shape[:2], dtype=int)  # (batch, N): index of the nearest nucleus
  best = np.full(electrons.shape[:2], np.inf)
  for i, centre in enumerate(old):  # one atom at a time: memory (batch, N), not (batch, N, M)
    d2 = np.sum((electrons - centre) ** 2, axis=-1)
    closer = d2 < best
    nearest[closer], best[closer] = i, d2[closer]
  moved = electrons + (new - old)[nearest]
  return moved.reshape(walkers.shape).astype(walkers.dtype)


def make_step(
  log_prob: Callable[[Any, jax.Array], jax.Array], steps: int
) -> Callable[..., tuple[jax.Array, jax.Array, jax.Array]]:
  """Metropolis sampler of exp(log_prob) for a batch of walkers.

  Args:
    log_prob: ``(params, x (3N,)) -> log p`` for one walker (2 log|ψ| for VMC).
    steps: Metropolis steps per call.

  Returns:
    ``step(params, walkers, log_p, key, ids, width) -> (walkers, log_p, pmove)``
    with walkers (B, 3N), log_p (B,) the log-probabilities of ``walkers`` under
    ``params``, ``ids`` (B,) the walkers' global indices and pmove the acceptance
    rate averaged over walkers and steps. Each walker's random numbers come from
    ``fold_in(key, id)``, so the samples do not depend on how walkers are split
    over devices.
  """
  batched = jax.vmap(log_prob, in_axes=(None, 0))

  def draws(key, dim, dtype):  # one walker: proposal direction and acceptance uniform
    k_move, k_accept = jax.random.split(key)
    return jax.random.normal(k_move, (dim,), dtype), jax.random.uniform(k_accept, (), dtype)

  def step(params, walkers, log_p, key, ids, width):
    walker_keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, ids)

    def body(i, carry):
      x, lp, accepted = carry
      keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(walker_keys, i)
      move, u = jax.vmap(draws, in_axes=(0, None, None))(keys, x.shape[1], x.dtype)
      x_new = x + width * move
      lp_new = batched(params, x_new)
      accept = jnp.log(u) < lp_new - lp  # NaN proposals are rejected
      x = jnp.where(accept[:, None], x_new, x)
      lp = jnp.where(accept, lp_new, lp)
      return x, lp, accepted + jnp.mean(accept.astype(lp.dtype))

    init = (walkers, log_p, jnp.zeros((), log_p.dtype))
    walkers, log_p, accepted = jax.lax.fori_loop(0, steps, body, init)
    return walkers, log_p, accepted / steps

  return step


def adapt_width(width: jax.Array, pmove: jax.Array, target: float) -> jax.Array:
  """Multiplicative update of the proposal width towards the target acceptance."""
  factor = jnp.clip(jnp.exp(ADAPT_GAIN * (pmove - target)), 0.5, 2.0)
  return jnp.clip(width * factor, MIN_WIDTH, MAX_WIDTH)
