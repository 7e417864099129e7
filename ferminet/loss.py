"""The VMC energy and its gradient, as one value-and-grad friendly function.

For walkers x ~ |ψ|², the loss is E = ⟨E_L⟩ and its gradient is

    ∇_θ E = 2 ⟨(E_L − ⟨E_L⟩) ∇_θ log|ψ|⟩,

estimated with local energies clipped to ⟨E_L⟩ ± c·⟨|E_L − ⟨E_L⟩|⟩ (c =
``clip_local_energy``; ≤ 0 disables clipping). The estimator is the JVP rule of
a ``jax.custom_jvp``, so any optimizer sees a plain function whose gradient is
the VMC gradient. The log|ψ| outputs are registered with kfac-jax as a normal
predictive distribution of variance ½, which gives KFAC half the Fisher of |ψ|²;
the KFAC optimizer is therefore given half this gradient, as in the reference
(``optimizers._half_gradient``), and steps by the natural gradient of |ψ|².

The clipped, centred local energies E_L − ⟨E_L⟩ of each walker are defined once,
in :func:`make_residuals`: the loss's gradient uses them, and so does SPRING,
which needs them per walker (``optimizers``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from ferminet import _compat  # noqa: F401  (first: gives jax.core the names kfac_jax reads)

# isort: split
import jax
import jax.numpy as jnp
import kfac_jax

from ferminet import hamiltonian, parallel


class Batch(NamedTuple):
  """This device's walkers and their global indices (which key each walker's estimators)."""

  walkers: jax.Array  # (b, 3N), bohr
  ids: jax.Array  # (b,) int32, global walker indices (parallel.walker_ids)


def as_batch(data: Batch | jax.Array) -> Batch:
  """``data`` as a Batch; bare walkers get the indices 0..b-1 (one device, tests)."""
  if isinstance(data, Batch):
    return data
  return Batch(data, jnp.arange(data.shape[0], dtype=jnp.int32))


class LossAux(NamedTuple):
  """Per-step statistics of the local energy over all devices (scalars: the
  optimizer averages them over devices)."""

  variance: jax.Array  # Var[E_L], Ha²


def clip_local_energies(e_l: jax.Array, mean: jax.Array, scale: float, median: bool = False):
  """Clips E_L (this device's walkers, (b,) Ha) to centre ± scale × mean absolute deviation.

  The centre is ``mean`` (the mean over all devices), or with ``median`` the
  median over all walkers of all devices and processes; the deviation is the
  mean over all of them too, so the result does not depend on the device layout.
  """
  centre = jnp.median(parallel.all_gather(e_l)) if median else mean
  spread = parallel.pmean(jnp.mean(jnp.abs(e_l - centre)))
  return jnp.clip(e_l, centre - scale * spread, centre + scale * spread)


Residuals = Callable[[Any, jax.Array, Batch], tuple[jax.Array, LossAux, jax.Array]]


def make_residuals(
  local_energy: hamiltonian.LocalEnergy,
  clip_local_energy: float = 5.0,
  clip_median: bool = False,
  center_at_clip: bool = True,
  max_vmap_batch_size: int = 0,
) -> Residuals:
  """The per-walker local energies the VMC gradient uses, clipped and centred.

  ``residuals(params, key, batch) -> (energy, LossAux, diff)``: the energy ⟨E_L⟩ and
  the variance of the unclipped local energies over all devices (Ha, Ha²), both
  without penalty terms (``hamiltonian.PENALTIES``), and ``diff`` (walkers per
  device,) Ha, this device's E_L (with penalties: what is minimised) clipped as
  :func:`clip_local_energies` with ``clip_local_energy`` (≤ 0: no clipping) and
  ``clip_median``, minus the mean of the clipped E_L over all devices
  (``center_at_clip``) or minus ``energy``. The VMC gradient is
  2⟨diff ∇log|ψ|⟩ (:func:`make_loss`); SPRING solves for ``diff`` in walker space
  (``optimizers``). Must run inside ``pmap`` over ``parallel.AXIS``;
  ``max_vmap_batch_size`` > 0 evaluates the local energies in chunks of that many
  walkers (``hamiltonian.batch_local_energy``). ``batch``: a :class:`Batch` (or bare
  walkers, see :func:`as_batch`); the estimators' keys come from ``key`` and the ids.
  """
  batch_local_energy = hamiltonian.batch_local_energy(local_energy, max_vmap_batch_size)

  def residuals(params, key, batch):
    batch = as_batch(batch)
    e_l, terms = batch_local_energy(params, key, batch.walkers, batch.ids)
    penalty = sum((terms[n] for n in hamiltonian.PENALTIES if n in terms), jnp.zeros_like(e_l))
    e_h = e_l - penalty  # the Hamiltonian's local energy
    energy = parallel.pmean(jnp.mean(e_h))
    variance = parallel.pmean(jnp.mean((e_h - energy) ** 2))
    mean = energy + parallel.pmean(jnp.mean(penalty))  # the mean of what is minimised
    clipped = e_l
    if clip_local_energy > 0.0:
      clipped = clip_local_energies(e_l, mean, clip_local_energy, clip_median)
    centre = parallel.pmean(jnp.mean(clipped)) if center_at_clip else mean
    return energy, LossAux(variance=variance), clipped - centre

  return residuals


def make_loss(
  log_abs: Callable[[Any, jax.Array], jax.Array],
  residuals: Residuals,
  log_abs_tagged: Callable[[Any, jax.Array], jax.Array] | None = None,
) -> Callable[[Any, jax.Array, jax.Array], tuple[jax.Array, LossAux]]:
  """The VMC loss ``loss(params, key, batch) -> (energy, LossAux)``.

  Must run inside ``pmap`` over ``parallel.AXIS``. ``batch``: a :class:`Batch` of
  this device's walkers (walkers per device, 3N) and their global indices, or bare
  walkers; ``key`` the same on every device (walker keys are folded in from the
  indices); energies are in hartree. ``residuals``: the
  per-walker local energies (:func:`make_residuals`), whose clipped and centred
  ``diff`` gives the gradient 2⟨diff ∇log|ψ|⟩. ``log_abs_tagged``: the same
  log|ψ| carrying kfac-jax layer tags, used for the gradient (where KFAC reads its
  curvature); default ``log_abs``.
  """
  batch_log_abs = jax.vmap(log_abs_tagged or log_abs, in_axes=(None, 0))

  @jax.custom_jvp
  def loss(params, key, batch):
    return residuals(params, key, batch)[:2]

  @loss.defjvp
  def loss_jvp(primals, tangents):
    params, key, batch = primals
    energy, aux, diff = residuals(params, key, batch)
    walkers = as_batch(batch).walkers
    log_psi, log_psi_tangent = jax.jvp(
      lambda p: batch_log_abs(p, walkers), (params,), (tangents[0],)
    )
    kfac_jax.register_normal_predictive_distribution(log_psi[:, None])
    tangent = 2.0 * parallel.pmean(jnp.mean(diff * log_psi_tangent))
    aux_tangent = jax.tree.map(jnp.zeros_like, aux)
    return (energy, aux), (tangent, aux_tangent)

  return loss
