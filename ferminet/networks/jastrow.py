"""Jastrow factors exp(J), J a symmetric function of the electron positions.

``simple_ee`` (as DeepMind's FermiNet's): J = Σ_{i<j} u(r_ij) with
u(r) = -c α² / (α + r), c = 1/4 for parallel and 1/2 for antiparallel spins, one
α for each (``ee_par``, ``ee_anti``, shape (1,), starting at 1). du/dr = c at
r = 0, Kato's electron–electron cusp, and u → 0 at large r. Written as an
elementwise function of the (n, n) distances, so every view (``ops.Values``,
``ops.Stacks``) sums it over pairs with its own rule.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

from ferminet.config import JASTROWS, jastrow_of
from ferminet.networks import ops

PAR_CUSP = 0.25
ANTI_CUSP = 0.5


@dataclasses.dataclass(frozen=True)
class Jastrow:
  init: Callable[[object], dict]  # dtype -> parameters
  pair_fn: Callable[[dict], Callable[[jax.Array], jax.Array]]  # p -> u of (n, n) distances


def simple_ee(spins: Sequence[int]) -> Jastrow:
  same = ops.same_spin(spins)

  def init(dtype) -> dict:
    return {'ee_par': jnp.ones((1,), dtype), 'ee_anti': jnp.ones((1,), dtype)}

  def pair_fn(p: dict) -> Callable[[jax.Array], jax.Array]:
    alpha = jnp.where(same, p['ee_par'][0], p['ee_anti'][0])
    cusp = jnp.where(same, PAR_CUSP, ANTI_CUSP)
    return lambda r: -cusp * alpha**2 / (alpha + r)

  return Jastrow(init, pair_fn)


_KINDS = {'simple_ee': simple_ee}
assert set(_KINDS) | {'default', 'none'} == set(JASTROWS)


def make(kind: str, network_type: str, spins: Sequence[int]) -> Jastrow | None:
  """The Jastrow ``kind`` for ``network_type`` (``config.jastrow_of`` resolves 'default');
  None for no Jastrow factor."""
  kind = jastrow_of(network_type, kind)
  return None if kind == 'none' else _KINDS[kind](spins)
