"""Optimizers behind one interface: kfac (kfac-jax), adam and lamb (optax), spring and none.

All functions work on the device layout of ``train.py``: parameters and
optimizer state replicated over local devices (leading axis), a ``loss.Batch``
of walkers sharded (D, walkers per device, 3N) with their global indices
(D, walkers per device), and a PRNG key per device, the same on all devices
(``parallel.same_keys``: each walker's estimators fold in its index). ``step`` returns the new
parameters and state and the energy and variance of the walkers it was given
(replicated scalars, hartree and hartree²).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

from ferminet import _compat  # first: gives jax.core the names kfac_jax reads

# isort: split
import jax
import jax.numpy as jnp
import kfac_jax
import ml_collections
import optax
from jax.flatten_util import ravel_pytree

from ferminet import loss as loss_lib
from ferminet import parallel

# kfac-jax 0.0.8 needs fixes to trace on jax >= 0.9.2 and >= 0.11; no-ops where not needed.
_compat.patch_kfac_jax()

LossFn = Callable[[Any, jax.Array, jax.Array], tuple[jax.Array, Any]]


def _keep_merged(merged: Any, new: Any) -> Any:
  return merged


# A pmapped copy of a tree: the inputs of kfac-jax, which donates its input buffers, so
# that the caller's parameters and state stay valid for a rollback.
copy_tree = jax.pmap(lambda tree: jax.tree.map(jnp.copy, tree), axis_name=parallel.AXIS)


@dataclasses.dataclass(frozen=True)
class Optimizer:
  """``init(params, keys, batch) -> state``; ``step(params, state, keys, batch)
  -> (params, state, energy, variance)``; ``batch`` a ``loss.Batch``.

  ``step`` leaves the params and state it is given valid, so a caller can roll
  back to them. ``after_rollback(merged, new)``: the state to continue with after
  a rolled-back step, given the state with the old values put back (``merged``)
  and the state ``step`` returned (``new``).
  """

  name: str
  init: Callable[..., Any]
  step: Callable[..., tuple[Any, Any, jax.Array, jax.Array]]
  after_rollback: Callable[[Any, Any], Any] = _keep_merged


def learning_rate_schedule(cfg: ml_collections.ConfigDict) -> Callable[[jax.Array], jax.Array]:
  """rate / (1 + t / delay) ** decay, with ``cfg.optim.lr``'s rate, delay and decay."""
  lr = cfg.optim.lr

  def schedule(t):
    return lr.rate * jnp.power(1.0 / (1.0 + t / lr.delay), lr.decay)

  return schedule


def _half_gradient(loss: LossFn) -> Callable[..., tuple[tuple[jax.Array, Any], Any]]:
  """value_and_grad of ``loss`` with the gradient halved: ⟨(E_L - E) ∇log|ψ|⟩.

  That is the reference's KFAC convention. The log|ψ| outputs are registered with
  kfac-jax as a normal predictive distribution of variance ½ (``loss.make_loss``),
  whose Fisher is half the Fisher of |ψ|², F = 4⟨∇log|ψ| ∇log|ψ|ᵀ⟩; with half of
  the energy gradient g = 2⟨(E_L - E)∇log|ψ|⟩, kfac-jax's step is (F/2 + λ)⁻¹ g/2,
  the natural gradient F⁻¹g of |ψ|² up to the damping λ. With the whole gradient
  it was twice that, so reference-tuned lr.rate, damping and norm_constraint gave
  another optimizer (tests/test_optimizers.py checks the step against a dense F⁻¹g).
  """
  value_and_grad = jax.value_and_grad(loss, argnums=0, has_aux=True)

  def value_and_half_grad(params, key, walkers):
    out, grads = value_and_grad(params, key, walkers)
    return out, jax.tree.map(lambda g: 0.5 * g, grads)

  return value_and_half_grad


def _make_kfac(loss: LossFn, cfg: ml_collections.ConfigDict) -> Optimizer:
  k = cfg.optim.kfac
  optimizer = kfac_jax.Optimizer(
    _half_gradient(loss),
    l2_reg=k.l2_reg,
    norm_constraint=k.norm_constraint,
    value_func_has_aux=True,
    value_func_has_rng=True,
    learning_rate_schedule=learning_rate_schedule(cfg),
    curvature_ema=k.cov_ema_decay,
    curvature_update_period=k.cov_update_every,
    inverse_update_period=k.invert_every,
    min_damping=k.min_damping,
    num_burnin_steps=0,
    register_only_generic=k.register_only_generic,
    estimation_mode='fisher_exact',
    multi_device=True,
    pmap_axis_name=parallel.AXIS,
    # The network tags every layer itself (networks.Network.log_abs_tagged): dense
    # layers repeated over electrons, the isotropic envelope as scale layers. The
    # automatic matching is limited to dense patterns, for anything left untagged
    # (e.g. diagonal or full envelopes get generic blocks); kfac-jax's default
    # patterns would also match the orbital-times-envelope products as scale layers.
    auto_register_kwargs={'graph_patterns': kfac_jax.tag_graph_matcher.DENSE_GRAPH_PATTERNS},
  )
  momentum = parallel.replicate(jnp.asarray(k.momentum))
  damping = parallel.replicate(jnp.asarray(k.damping))

  # kfac-jax reads its step counter from the devices on every step unless it is
  # given as a Python int; count on the host instead, reading the device value
  # only when a state arrives whose counter this function did not return (start, restore).
  counter: dict[str, Any] = {'step_counter': None, 'count': 0}

  def step(params, state, keys, batch):
    if counter['step_counter'] is not state.step_counter:
      counter['count'] = int(state.step_counter[0])
    # Copied after the check: a copy made by the caller would defeat it and make every
    # step wait for the devices to read the counter.
    params, state = copy_tree((params, state))
    params, state, stats = optimizer.step(
      params,
      state,
      keys,
      batch=batch,
      momentum=momentum,
      damping=damping,
      global_step_int=counter['count'],
    )
    counter.update(step_counter=state.step_counter, count=counter['count'] + 1)
    return params, state, stats['loss'], stats['aux'].variance

  def after_rollback(merged, new):
    # A rolled-back step still counts as a step for kfac-jax: the host count above
    # and the state's step_counter must agree (kfac-jax requires it).
    return dataclasses.replace(merged, step_counter=new.step_counter, data_seen=new.data_seen)

  return Optimizer('kfac', optimizer.init, step, after_rollback=after_rollback)


def _make_optax(loss: LossFn, transform: optax.GradientTransformation, name: str) -> Optimizer:
  value_and_grad = jax.value_and_grad(loss, argnums=0, has_aux=True)

  def local_step(params, state, key, batch):
    (energy, aux), grads = value_and_grad(params, key, batch)
    grads = parallel.pmean(grads)  # each device holds the gradient of its walkers
    updates, state = transform.update(grads, state, params)
    return optax.apply_updates(params, updates), state, energy, aux.variance

  init = jax.pmap(lambda params, key, batch: transform.init(params), axis_name=parallel.AXIS)
  pmapped = jax.pmap(local_step, axis_name=parallel.AXIS)
  return Optimizer(name, init, pmapped)


class SpringState(NamedTuple):
  """SPRING's state (replicated): the previous direction and the step count."""

  phi: jax.Array  # (P,) φ of the last step, before lr and norm constraint; ravel_pytree order
  count: jax.Array  # int32: steps taken, the t of the learning-rate schedule


def _make_spring(
  residuals: loss_lib.Residuals,
  log_abs: Callable[[Any, jax.Array], jax.Array],
  cfg: ml_collections.ConfigDict,
) -> Optimizer:
  """SPRING: minimum-step SR in walker space with a Kaczmarz-style momentum.

  Goldshlager, Abrahamsen & Lin, "A Kaczmarz-inspired approach to accelerate the
  optimization of neural network wavefunctions", J. Comput. Phys. 2024
  (doi:10.1016/j.jcp.2024.113351, arXiv:2401.10190); it builds on MinSR (Chen &
  Heyl, arXiv:2302.01941). Checked against the authors' code (github.com/jeffminlin/
  vmcnet, vmcnet/updates/spring.py and its default config) for the scalings, the
  extra (1/n)·11ᵀ, the norm constraint and the defaults. With n walkers over all
  devices, O_i = ∇_θ log|ψ(x_i)| and ``diff`` the clipped, centred local energies of
  ``loss.make_residuals`` (the same as the VMC gradient's):

      Ō   = (O − mean_i O_i) / √n                      (n × P, centred over all walkers)
      ε   = diff / √n,   ε̃ = ε − μ Ō φ_prev
      φ   = Ōᵀ (Ō Ōᵀ + λ I + (1/n) 11ᵀ)⁻¹ ε̃ + μ φ_prev
      θ  ← θ − c η_t φ,   c = min(1, √(C / ‖η_t φ‖²))

  λ = ``optim.spring.damping``, μ = ``.momentum`` (0: MinSR), C = ``.norm_constraint``,
  η_t the ``optim.lr`` schedule (:func:`learning_rate_schedule`) at step t. Ōᵀ1 = 0
  and 1 is an eigenvector of both kernels, so the (1/n)·11ᵀ term leaves φ unchanged in
  exact arithmetic (as netket/netket#1708 notes too); it keeps that direction of the
  kernel away from λ against round-off. φ is the SR direction Cov(O)⁻¹Cov(O, E_L) for
  μ = 0 and λ → 0, twice the natural gradient F⁻¹g that KFAC steps by (F = 4 Cov(O) the
  Fisher of |ψ|², g = 2 Cov(O, E_L)), as in the paper: its learning rates carry over. φ_prev is
  φ of the previous step (zero at first), before η and the norm constraint, kept in
  :class:`SpringState` so that checkpoints carry it; a rolled-back step keeps the old
  state (the default ``after_rollback``), its step count included.

  Devices: each computes the scores of its walkers (``.chunk_size`` at a time; 0: all),
  centres them with means over all devices and sends each device every walker's
  scores for 1/D of the parameters (``all_to_all``): the n × n kernel is the psum of
  those slices' products, the same on every device, and so is the solve; each device
  maps ζ back to its slice of φ, and the slices are gathered. So a device holds n·P/D
  scores, and the result depends on the layout only through the round-off of sums.
  The kernel and solve (a Cholesky factorisation, the kernel being positive definite
  for λ > 0) are float64 when x64 is enabled (``debug.float64``), else in the dtype
  of the parameters; its products use full float32 precision on GPUs (no TF32). A
  failed factorisation gives NaN, so the iteration is rolled back (``train``).
  """
  s = cfg.optim.spring
  damping, mu, constraint, chunk = s.damping, s.momentum, s.norm_constraint, s.chunk_size
  schedule = learning_rate_schedule(cfg)
  highest = jax.lax.Precision.HIGHEST

  def init(params, key, batch):
    flat, _ = ravel_pytree(params)
    return SpringState(jnp.zeros_like(flat), jnp.zeros((), jnp.int32))

  def local_step(params, state, key, batch):
    energy, aux, diff = residuals(params, key, batch)
    walkers = loss_lib.as_batch(batch).walkers
    flat, unravel = ravel_pytree(params)
    dtype = jnp.float64 if jax.config.jax_enable_x64 else flat.dtype
    eps = parallel.all_gather(diff).astype(dtype)  # (n,): every walker, in device order
    n, size = eps.shape[0], flat.shape[0]
    devices = n // diff.shape[0]
    width = -(-size // devices)  # parameters per device, the last slice padded with zeros

    def score(x):
      return ravel_pytree(jax.grad(log_abs)(params, x))[0]

    o = parallel.map_walkers(score, walkers, chunk).astype(dtype)  # (b, P)
    o = (o - parallel.pmean(jnp.mean(o, axis=0))) / jnp.sqrt(n)
    o = jnp.pad(o, ((0, 0), (0, width * devices - size)))
    o = jax.lax.all_to_all(o, parallel.AXIS, split_axis=1, concat_axis=0, tiled=True)
    start = jax.lax.axis_index(parallel.AXIS) * width
    previous = jnp.pad(state.phi.astype(dtype), (0, width * devices - size))
    previous = jax.lax.dynamic_slice(previous, (start,), (width,))  # this device's slice

    eps = eps / jnp.sqrt(n) - mu * parallel.psum(jnp.dot(o, previous, precision=highest))
    kernel = parallel.psum(jnp.dot(o, o.T, precision=highest))
    kernel = 0.5 * (kernel + kernel.T) + damping * jnp.eye(n, dtype=dtype) + 1.0 / n
    zeta = jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(kernel), eps)
    phi = jnp.dot(o.T, zeta, precision=highest) + mu * previous
    phi = parallel.all_gather(phi)[:size].astype(flat.dtype)

    step = schedule(state.count).astype(flat.dtype) * phi
    step = step * jnp.minimum(1.0, jnp.sqrt(constraint / jnp.sum(step**2)))
    params = jax.tree.map(jnp.subtract, params, unravel(step))
    return params, SpringState(phi, state.count + 1), energy, aux.variance

  return Optimizer(
    'spring',
    jax.pmap(init, axis_name=parallel.AXIS),
    jax.pmap(local_step, axis_name=parallel.AXIS),
  )


def _make_none(loss: LossFn) -> Optimizer:
  def local_step(params, state, key, batch):
    energy, aux = loss(params, key, batch)
    return params, state, energy, aux.variance

  pmapped = jax.pmap(local_step, axis_name=parallel.AXIS)
  return Optimizer(
    'none',
    lambda params, keys, batch: None,
    pmapped,
  )


# LAMB as the reference configures it (fixed settings, no config keys): gradients clipped
# to global norm 1, Adam moments with eps 1e-7, each layer's step scaled by the ratio of
# its parameter norm to its update norm (optax.scale_by_trust_ratio), then the schedule.
LAMB_CLIP_NORM = 1.0
LAMB_EPS = 1.0e-7


def optax_transform(cfg: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """The optax update of ``cfg.optim.optimizer`` 'adam' or 'lamb' (descent: the negated,
  scheduled step; the learning rate of ``cfg.optim.lr``)."""
  schedule = optax.scale_by_schedule(learning_rate_schedule(cfg))
  name = cfg.optim.optimizer
  if name == 'adam':
    a = cfg.optim.adam
    return optax.chain(
      optax.scale_by_adam(b1=a.b1, b2=a.b2, eps=a.eps, eps_root=a.eps_root),
      schedule,
      optax.scale(-1.0),
    )
  if name == 'lamb':
    return optax.chain(
      optax.clip_by_global_norm(LAMB_CLIP_NORM),
      optax.scale_by_adam(eps=LAMB_EPS),
      optax.scale_by_trust_ratio(),
      schedule,
      optax.scale(-1.0),
    )
  raise ValueError(f'{name!r} is not an optax optimizer')


def make(
  loss: LossFn,
  cfg: ml_collections.ConfigDict,
  residuals: loss_lib.Residuals | None = None,
  log_abs: Callable[[Any, jax.Array], jax.Array] | None = None,
) -> Optimizer:
  """The optimizer named by ``cfg.optim.optimizer`` for the VMC ``loss``.

  SPRING works on the walkers one by one: it needs ``residuals`` (the loss's own
  clipped, centred local energies, ``loss.make_residuals``) and ``log_abs(params, x)``
  (one walker's log|ψ|, untagged); the others use ``loss`` only.
  """
  name = cfg.optim.optimizer
  if name == 'kfac':
    return _make_kfac(loss, cfg)
  if name in ('adam', 'lamb'):
    return _make_optax(loss, optax_transform(cfg), name)
  if name == 'spring':
    if residuals is None or log_abs is None:
      raise ValueError('SPRING needs make(..., residuals=..., log_abs=...)')
    return _make_spring(residuals, log_abs, cfg)
  if name == 'none':
    return _make_none(loss)
  raise ValueError(f'unknown optimizer {name!r}')
