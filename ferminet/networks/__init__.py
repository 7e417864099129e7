"""Ansätze on one walker: each written once, every view built from that one definition.

``make(network_cfg, system)`` returns a :class:`Network` of pure functions over a
plain parameter pytree:

- ``init(key) -> params``;
- ``apply(params, x) -> (sign, log|ψ|)`` for one walker, ``x`` of shape
  (n_electrons * 3,) in bohr with the α electrons first;
- ``orbitals(params, x) -> [alpha, beta]``: the orbital matrices, each of
  shape (determinants, n_spin, n_orbitals) (n_orbitals = n_electrons with
  ``full_det``, else n_spin), used by pretraining;
- ``log_abs(params, x) -> log|ψ|``;
- ``log_abs_tagged``: the same with every layer registered for KFAC;
- ``laplacian(params, x) -> (∇² log|ψ|, ∇ log|ψ| (3N,))``: the network's own forward
  Laplacian, or None where the architecture has none (the local energy then uses
  folx's generic one).

The architectures (``network.network_type``, ``config.NETWORK_TYPES``) are
``ferminet.py`` and ``psiformer.py``, written against the operations of
``ops.py``; ``apply``, ``log_abs_tagged`` and ``laplacian`` are the same function
run in the views ``ops.Values``, ``ops.Values(tag=True)`` and ``ops.Stacks``.
Envelopes are in ``envelopes.py``, Jastrow factors in ``jastrow.py``. Batching
over walkers (vmap) and devices (pmap) is applied by the caller.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from ferminet import _compat  # noqa: F401  (first: gives jax.core the names kfac_jax reads)

# isort: split
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ferminet import config as config_lib
from ferminet import system as system_lib
from ferminet.config import NETWORK_TYPES
from ferminet.networks import ferminet as ferminet_lib
from ferminet.networks import ops, psiformer
from ferminet.networks.ops import dense, logdet_sum  # noqa: F401  (public helpers)

Params = Any  # a pytree of arrays

_ARCHITECTURES = {'ferminet': ferminet_lib, 'psiformer': psiformer}
assert tuple(_ARCHITECTURES) == NETWORK_TYPES, 'config.NETWORK_TYPES and the registry disagree'


@dataclasses.dataclass(frozen=True)
class Network:
  init: Callable[[jax.Array], Params]
  apply: Callable[[Params, jax.Array], tuple[jax.Array, jax.Array]]
  orbitals: Callable[[Params, jax.Array], list[jax.Array]]  # [α, β] matrices
  log_abs: Callable[[Params, jax.Array], jax.Array]
  # The same log|ψ| with every layer tagged for KFAC (dense layers, the isotropic
  # envelope's π and σ); used only where KFAC estimates curvature, since folx has no
  # forward-Laplacian rule for the tags.
  log_abs_tagged: Callable[[Params, jax.Array], jax.Array]
  # (params, x) -> (∇² log|ψ|, ∇ log|ψ|), the structured forward Laplacian; None: folx.
  laplacian: Callable[[Params, jax.Array], tuple[jax.Array, jax.Array]] | None = None
  network_type: str = 'ferminet'
  full_det: bool = True  # one N × N determinant per term (else α and β blocks)


def make(
  cfg: ml_collections.ConfigDict,
  system: system_lib.System,
  dtype: Any = None,
) -> Network:
  """Builds the ansatz ``cfg.network_type`` for ``system`` from ``cfg.network``.

  Args:
    cfg: the ``network`` section of the config.
    system: nuclei and electrons.
    dtype: parameter dtype; default float64 if jax_enable_x64 else float32.
  """
  network_type = cfg.network_type
  if network_type not in _ARCHITECTURES:
    raise ValueError(f'unknown network_type {network_type!r}: one of {", ".join(NETWORK_TYPES)}')
  arch = _ARCHITECTURES[network_type].make(cfg, system, dtype)
  spins, n = arch.spins, sum(arch.spins)

  def forward(view: Any, params: Params, x: jax.Array) -> Any:
    out = view.log_psi(arch.matrices(view, params, x), arch.full_det)
    if arch.jastrow:
      j = view.pair_sum(arch.jastrow.pair_fn(params['jastrow']), x.reshape(n, 3))
      out = view.add_log(out, j)
    return out

  def apply(params: Params, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    return forward(ops.Values(spins), params, x)

  def log_abs(params: Params, x: jax.Array) -> jax.Array:
    return apply(params, x)[1]

  def log_abs_tagged(params: Params, x: jax.Array) -> jax.Array:
    return forward(ops.Values(spins, tag=True), params, x)[1]

  def laplacian(params: Params, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    return forward(ops.Stacks(spins), params, x)

  def orbitals(params: Params, x: jax.Array) -> list[jax.Array]:
    view = ops.Values(spins)
    mats = iter(arch.matrices(view, params, x))
    n_orb, n_det = arch.orbitals_per_channel, arch.determinants
    out = [
      next(mats) if s else jnp.zeros((n_det, 0, n_orb[k]), x.dtype) for k, s in enumerate(spins)
    ]
    if arch.jastrow:  # as the reference: every element times exp(J/N), so ψ times exp(J)
      j = view.pair_sum(arch.jastrow.pair_fn(params['jastrow']), x.reshape(n, 3))
      out = [m * jnp.exp(j / n) for m in out]
    return out

  return Network(
    init=arch.init,
    apply=apply,
    orbitals=orbitals,
    log_abs=log_abs,
    log_abs_tagged=log_abs_tagged,
    laplacian=laplacian if arch.structured else None,
    network_type=network_type,
    full_det=arch.full_det,
  )


describe = config_lib.describe_network  # one line naming the ansatz and its options


def widest_feature(cfg: ml_collections.ConfigDict, system: system_lib.System) -> int:
  """The widest per-electron vector of the network (with the electron count it sizes
  the per-walker Jacobians of a forward Laplacian)."""
  return _ARCHITECTURES[cfg.network_type].widest_feature(cfg, system)


def count_parameters(params: Params) -> int:
  """Total number of scalar parameters."""
  return int(sum(np.size(p) for p in jax.tree.leaves(params)))
