"""The forward Laplacian of the FermiNet, written for its structure.

``make(network_cfg, system)`` returns ``laplacian(params, x) -> (∇² log|ψ|, ∇ log|ψ|)``
for one walker, x of shape (3N,) in bohr: the same numbers as the Hessian loop
or folx's generic forward Laplacian, in one forward pass that carries, for every
feature, its value, its Jacobian with respect to the 3N coordinates and its
Laplacian (Li et al., Nat. Mach. Intell. 2024). Knowing the network, it skips
what a generic tracer has to discover or store:

- the two-electron stream h_ij depends only on r_i and r_j, and its derivative
  with respect to r_j is minus that with respect to r_i: one (3, width) block
  per pair is carried instead of 3N columns (folx keeps 6 to 13);
- input features and envelopes are functions of one electron (or one pair):
  their derivatives come from 3-dimensional autodiff;
- each layer is one matmul of the stacked value, Jacobian and Laplacian,
  (n · (3N + 2), d) @ (d, out), the pair means folded into its inputs; the
  spin means' share is computed once per layer (as in ``networks``);
- determinants use their inverse: ∂ log det A = tr(A⁻¹ ∂A) and
  ∂² log det A = tr(A⁻¹ ∂²A) - tr((A⁻¹ ∂A)²).

A one-electron *stack* is an array (n, R, f) with R = 3N + 2 rows per electron:
row 0 the value, rows 1 … 3N the Jacobian with respect to the coordinates (in
the order of x) and row 3N + 1 the Laplacian. A pair stack is (n, n, 5, f): row 0
the value of h_ij, rows 1 … 3 its derivative with respect to r_i and row 4 its
Laplacian over all coordinates; the derivative with respect to r_j is minus
rows 1 … 3, and h_ii is a constant (zero derivatives).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ferminet import linalg, networks
from ferminet import system as system_lib
from ferminet.hamiltonian import LaplacianFn


def _tanh(z: jax.Array, axis: int, multiplicity: float) -> jax.Array:
  """tanh of a stack z whose rows run along ``axis``: value, Jacobian rows, Laplacian.

  ∇² tanh(z) = tanh'(z) ∇²z + tanh''(z) |∇z|², with |∇z|² the sum of the squared
  Jacobian rows times ``multiplicity`` (2 for a pair stack, whose rows stand
  for the derivatives with respect to both electrons).
  """
  n_rows = z.shape[axis]
  value = jax.lax.index_in_dim(z, 0, axis, keepdims=False)
  jac = jax.lax.slice_in_dim(z, 1, n_rows - 1, axis=axis)
  lap = jax.lax.index_in_dim(z, n_rows - 1, axis, keepdims=False)
  t = jnp.tanh(value)
  d1 = 1.0 - t * t
  d2 = -2.0 * t * d1
  new_lap = d1 * lap + d2 * (multiplicity * jnp.sum(jac * jac, axis=axis))
  t, d1, new_lap = (jnp.expand_dims(a, axis) for a in (t, d1, new_lap))
  return jnp.concatenate([t, d1 * jac, new_lap], axis=axis)


def _local_derivatives(
  fn: Callable[[jax.Array], jax.Array], pos: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Value (m, f), gradient (m, 3, f) and Laplacian (m, f) of fn: (3,) -> (f,) at rows of pos."""

  def one(r):
    jac = jax.jacfwd(fn)(r)  # (f, 3)
    hess = jax.jacfwd(jax.jacfwd(fn))(r)  # (f, 3, 3)
    return fn(r), jac.T, jnp.trace(hess, axis1=-2, axis2=-1)

  return jax.vmap(one)(pos)


def _own_block(local: jax.Array, start: int, n: int) -> jax.Array:
  """(m, 3n, f) Jacobian of rows that each depend on one electron, start + row.

  local: (m, 3, f), the derivative of row i with respect to electron start + i.
  """
  m = local.shape[0]
  eye = jnp.eye(m, n, k=start, dtype=local.dtype)
  return (eye[:, :, None, None] * local[:, None]).reshape(m, 3 * n, local.shape[-1])


def _stack(value: jax.Array, jac: jax.Array, lap: jax.Array, axis: int) -> jax.Array:
  return jnp.concatenate([jnp.expand_dims(value, axis), jac, jnp.expand_dims(lap, axis)], axis=axis)


def _envelope_derivatives(
  kind: str, p: dict, pos: jax.Array, nuclei: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Value (m, f), gradient (m, 3, f) and Laplacian (m, f) of the envelopes at m electrons.

  Isotropic, Σ_I π exp(-|σ| d_I) with d_I = |r - R_I|, by hand: ∇ = Σ_I -|σ| π e (r - R_I)/d_I,
  ∇² = Σ_I π e (σ² - 2|σ|/d_I). The others by 3-dimensional autodiff of
  ``networks.envelope_apply``.
  """
  if kind != 'isotropic':

    def envelope(r):
      ae = r[None] - nuclei
      return networks.envelope_apply(kind, p, ae[None], jnp.linalg.norm(ae, axis=-1)[None])[0]

    return _local_derivatives(envelope, pos)
  ae = pos[:, None, :] - nuclei[None]  # (m, atoms, 3)
  d = jnp.linalg.norm(ae, axis=-1)[..., None]  # (m, atoms, 1)
  rate = jnp.abs(p['sigma'])[None]  # (1, atoms, f)
  e = p['pi'][None] * jnp.exp(-rate * d)  # (m, atoms, f)
  de = -rate * e
  value = jnp.sum(e, axis=1)
  grad = jnp.sum(de[:, :, None, :] * (ae / d)[..., None], axis=1)  # (m, 3, f)
  lap = jnp.sum(e * (rate * rate) + de * (2.0 / d), axis=1)
  return value, grad, lap


def _features(
  pos: jax.Array, nuclei: jax.Array, zero_self_distance: bool = False
) -> tuple[jax.Array, jax.Array]:
  """Stacks of the input features: electron–nucleus (n, R, 4 atoms), pairs (n, n, 5, 4).

  The values are ``networks.features``'; their derivatives are written out here.
  """
  n, n_atoms = pos.shape[0], nuclei.shape[0]
  value_one, value_two, _ = networks.features(pos.reshape(-1), nuclei, zero_self_distance)
  ae_r = value_one.reshape(n, n_atoms, 4)
  ae, r_ae = ae_r[..., :3], ae_r[..., 3:]
  # ∂/∂r_i of (r_i - R_I, |r_i - R_I|): the identity and the unit vector; ∇²: 0 and 2/r.
  ident = jnp.broadcast_to(jnp.eye(3, dtype=pos.dtype)[:, None], (n, 3, n_atoms, 3))
  unit = jnp.swapaxes(ae / r_ae, 1, 2)[..., None]  # (n, 3, atoms, 1)
  grad = jnp.concatenate([ident, unit], axis=-1).reshape(n, 3, 4 * n_atoms)
  lap = jnp.concatenate([jnp.zeros_like(ae), 2.0 / r_ae], axis=-1).reshape(n, 4 * n_atoms)
  one = _stack(value_one, _own_block(grad, 0, n), lap, axis=1)

  ee, r = value_two[..., :3], value_two[..., 3:]  # r_ii is a constant (networks.features)
  off = (1.0 - jnp.eye(n, dtype=pos.dtype))[..., None]
  r = jnp.where(off > 0, r, 1.0)  # the diagonal's derivatives are masked (r_ii may be 0)
  # ∂/∂r_i of (r_i - r_j, |r_i - r_j|): the identity and the unit vector.
  ident = jnp.broadcast_to(jnp.eye(3, dtype=pos.dtype), (n, n, 3, 3))
  grad = jnp.concatenate([ident, (ee / r)[..., None]], axis=-1) * off[..., None]
  # ∇² over both electrons: 0 for the components, 2 × 2/r for the distance.
  lap = jnp.concatenate([jnp.zeros_like(ee), 4.0 / r], axis=-1) * off
  return one, _stack(value_two, grad, lap, axis=2)


def _pair_share(pair: jax.Array, present: list[slice], weights: list[jax.Array]) -> jax.Array:
  """Stack (n, R, out) of Σ_s mean_{j in s}(h_ij) @ w_s, the pair means' share of a layer.

  ∂m_i/∂r_i = mean_j ∂h_ij/∂r_i; for k in s, ∂m_i/∂r_k = -(∂h_ik/∂r_i) / n_s: each
  spin block of k is multiplied by its own weights only.
  """
  n = pair.shape[0]
  means = jnp.concatenate([jnp.mean(pair[:, s], axis=1) for s in present], axis=-1)
  m = means @ jnp.concatenate(weights, axis=0)  # (n, 5, out): value, ∂/∂r_i, Laplacian
  others = jnp.concatenate(
    [
      (pair[:, s, 1:4] @ w) * (-1.0 / (s.stop - s.start))
      for s, w in zip(present, weights, strict=True)
    ],
    axis=1,
  )  # (n, n, 3, out): the present spin blocks cover all electrons
  jac = others.reshape(n, 3 * n, -1) + _own_block(m[:, 1:4], 0, n)
  return _stack(m[:, 0], jac, m[:, 4], axis=1)


def _one_electron_layer(p: dict, one: jax.Array, pair: jax.Array, slices: list[slice]) -> jax.Array:
  """Pre-activation stack of a one-electron layer (networks._split_dense, differentiated)."""
  d, dp = one.shape[-1], pair.shape[-1]
  w = p['w']
  present = [(k, s) for k, s in enumerate(slices) if s.stop > s.start]  # empty: zero means
  shared = sum(jnp.mean(one[s], axis=0) @ w[(1 + k) * d : (2 + k) * d] for k, s in present)
  pair_w = [w[3 * d + k * dp : 3 * d + (k + 1) * dp] for k, _ in present]
  z = one @ w[:d] + _pair_share(pair, [s for _, s in present], pair_w) + shared
  if 'b' in p:
    z = z.at[:, 0].add(p['b'])  # the bias moves the value only
  return z


def _log_det(orbitals: jax.Array) -> tuple[jax.Array, ...]:
  """sign, log|det|, ∇ log|det| (K, D) and ∇² log|det| (K,) of K matrices.

  orbitals: stack (m, R, K, m): rows of the matrices are electrons, the last
  axis orbitals.
  """
  a = jnp.transpose(orbitals[:, 0], (1, 0, 2))  # (K, m, m)
  sign, logdet, inv = linalg.slogdet_inverse(a)
  jac = orbitals[:, 1:-1]  # (m, D, K, m)
  grad = jnp.einsum('koe,edko->kd', inv, jac)  # tr(A⁻¹ ∂A)
  b = jnp.einsum('koe,edkp->kdop', inv, jac)  # A⁻¹ ∂A
  lap = jnp.einsum('koe,eko->k', inv, orbitals[:, -1]) - jnp.sum(
    b * jnp.swapaxes(b, -1, -2), axis=(1, 2, 3)
  )
  return sign, logdet, grad, lap


def make(cfg: ml_collections.ConfigDict, system: system_lib.System) -> LaplacianFn:
  """(∇² log|ψ|, ∇ log|ψ| of shape (3N,)) of the network ``networks.make(cfg, system)``.

  Args:
    cfg: the ``network`` section of the config, as for ``networks.make``.
    system: nuclei and electrons.
  """
  spins = tuple(int(n) for n in system.electrons)
  n = sum(spins)
  nuclei_np = np.asarray(system.coords)
  n_det = int(cfg.determinants)
  full_det = bool(cfg.full_det)
  env_kind = cfg.envelope_type
  n_orb = networks.orbitals_per_channel(full_det, spins)
  as_reference = bool(cfg.ferminet.get('reference_layers', False))
  starts = np.cumsum((0,) + spins)
  slices = [slice(int(a), int(b)) for a, b in zip(starts[:-1], starts[1:], strict=True)]

  def orbital_stack(p_orb, p_env, one, s, pos, nuclei):
    """Orbitals times envelopes of the electrons in s: a stack (n_s, R, f)."""
    n_s = s.stop - s.start
    phi = one[s] @ p_orb['w']
    if 'b' in p_orb:
      phi = phi.at[:, 0].add(p_orb['b'])

    env, env_grad, env_lap = _envelope_derivatives(env_kind, p_env, pos[s], nuclei)
    own = phi[:, 1:-1].reshape(n_s, n, 3, -1)[np.arange(n_s), np.arange(n_s) + s.start]
    value = phi[:, 0]
    # Product rule; only electron i's own rows see the envelope's gradient.
    correction = _stack(
      jnp.zeros_like(value),
      _own_block(value[:, None] * env_grad, s.start, n),
      2.0 * jnp.sum(own * env_grad, axis=1) + value * env_lap,
      axis=1,
    )
    return phi * env[:, None] + correction

  def laplacian(params: Any, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    nuclei = jnp.asarray(nuclei_np, x.dtype)
    pos = x.reshape(n, 3)
    one, pair = _features(pos, nuclei, as_reference)
    for layer in params['layers']:
      new = _tanh(_one_electron_layer(layer['single'], one, pair, slices), 1, 1.0)
      if 'double' in layer:
        q = layer['double']
        z = (pair @ q['w']).at[:, :, 0].add(q['b'])
        pair = networks.residual(_tanh(z, 2, 2.0), pair, as_reference)
      one = networks.residual(new, one, as_reference)
    mats = []
    p_orbital, p_envelope = iter(params['orbital']), iter(params['envelope'])
    for s, norb in zip(slices, n_orb, strict=True):
      if s.stop > s.start:
        stack = orbital_stack(next(p_orbital), next(p_envelope), one, s, pos, nuclei)
        mats.append(stack.reshape(stack.shape[:2] + (n_det, norb)))
    if full_det:
      mats = [jnp.concatenate(mats, axis=0)]
    sign = jnp.ones(n_det, x.dtype)
    logs = jnp.zeros(n_det, x.dtype)
    grads = jnp.zeros((n_det, 3 * n), x.dtype)
    laps = jnp.zeros(n_det, x.dtype)
    for m in mats:
      s_k, l_k, g_k, lap_k = _log_det(m)
      sign, logs, grads, laps = sign * s_k, logs + l_k, grads + g_k, laps + lap_k
    # log|Σ_K s_K e^{l_K}|: weights w_K = s_K e^{l_K} / ψ sum to one.
    weights = sign * jnp.exp(logs - jnp.max(logs))
    weights = weights / jnp.sum(weights)
    grad = weights @ grads
    lap_psi = weights @ (laps + jnp.sum(grads * grads, axis=1))  # ∇²ψ / ψ
    return lap_psi - jnp.sum(grad * grad), grad

  return laplacian
