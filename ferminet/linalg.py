"""Determinants and inverses of the small matrices of a wavefunction, safe on every CPU jaxlib.

Why this exists
---------------
jaxlib 0.10.0 to 0.11.0 split a *batched* LAPACK call (``getrf``, ``trsm``, …)
into chunks scheduled on XLA's intra-op thread pool and then wait for them
(``jax::ParallelBatchMap`` → ``absl::BlockingCounter::Wait``) from inside a
task of that same pool. When every pool thread is such a task — two
independent batched solves in one executable on a 2-core machine, as in the
KFAC step, whose gradient and curvature passes both differentiate the
determinants — no thread is left to run the chunks and the process hangs
forever. The batch-1 calls (KFAC's factor inverses) run inline and are safe.
From jaxlib 0.11.1 on the parallel path is compiled out of the public wheels.

What this does
--------------
On the CPU backend the determinants go through :func:`_gauss_jordan`, plain
XLA operations (a loop of ``n`` vectorised elimination steps over the whole
batch), so no executable of ours contains a batched LAPACK call. Derivatives
are given by hand (``custom_jvp``): d log|det A| = tr(A⁻¹ dA) and
d A⁻¹ = −A⁻¹ dA A⁻¹, so gradients, Hessians and forward Laplacians never
differentiate through the elimination loop. On other backends the functions
are ``jnp.linalg``'s. The choice is made when a function is traced.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _gauss_jordan(a: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """sign, log|det| and inverse of ``a`` (..., n, n) by Gauss–Jordan elimination.

  Partial pivoting without moving rows: step k takes as pivot the not yet used
  row p_k of largest |entry| in column k, scales it to 1 there and removes
  column k from every other row of [A | I]. The left block ends as the
  permutation Q with Q[p_k, k] = 1 and the right one as Q A⁻¹, so row k of
  A⁻¹ is row p_k of it and det A = sign(k ↦ p_k) ∏ pivots. A singular matrix
  gives sign 0 and log|det| −inf, as ``jnp.linalg.slogdet`` does; its inverse
  is not finite.
  """
  n = a.shape[-1]
  rows = jnp.arange(n)
  eye = jnp.broadcast_to(jnp.eye(n, dtype=a.dtype), a.shape)
  batch = a.shape[:-2]

  def step(k, carry):
    m, used, order, sign, logdet = carry
    col = m[..., :, k]
    p = jnp.argmax(jnp.where(used, -1.0, jnp.abs(col)), axis=-1)  # (...,)
    at_p = rows == p[..., None]  # (..., n)
    row_p = jnp.take_along_axis(m, p[..., None, None], axis=-2)  # (..., 1, 2n)
    pivot = row_p[..., 0, k]
    unit = row_p / pivot[..., None, None]
    m = jnp.where(at_p[..., None], unit, m - jnp.where(at_p, 0.0, col)[..., None] * unit)
    sign = sign * jnp.sign(pivot)
    logdet = logdet + jnp.log(jnp.abs(pivot))
    return m, used | at_p, order.at[..., k].set(p), sign, logdet

  init = (
    jnp.concatenate([a, eye], axis=-1),  # [A | I]
    jnp.zeros(batch + (n,), bool),
    jnp.zeros(batch + (n,), rows.dtype),
    jnp.ones(batch, a.dtype),
    jnp.zeros(batch, a.dtype),
  )
  m, _, order, sign, logdet = jax.lax.fori_loop(0, n, step, init)
  inverse = jnp.take_along_axis(m[..., n:], order[..., :, None], axis=-2)
  inversions = jnp.sum(jnp.triu(order[..., :, None] > order[..., None, :], 1), axis=(-2, -1))
  singular = ~jnp.isfinite(logdet) | (sign == 0)
  sign = jnp.where(singular, 0.0, sign * (1 - 2 * (inversions % 2))).astype(a.dtype)
  return sign, jnp.where(singular, -jnp.inf, logdet), inverse


@jax.custom_jvp
def _native_slogdet_inverse(a: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  return _gauss_jordan(a)


@_native_slogdet_inverse.defjvp
def _native_slogdet_inverse_jvp(primals, tangents):
  (a,), (da,) = primals, tangents
  sign, logdet, inv = _native_slogdet_inverse(a)
  inv_da = inv @ da
  dlogdet = jnp.trace(inv_da, axis1=-2, axis2=-1)  # tr(A⁻¹ dA)
  dinv = -inv_da @ inv  # −A⁻¹ dA A⁻¹
  return (sign, logdet, inv), (jnp.zeros_like(sign), dlogdet, dinv)


def uses_native() -> bool:
  """Whether functions traced now avoid LAPACK (the default backend is the CPU)."""
  return jax.default_backend() == 'cpu'


def slogdet(a: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(sign, log|det a|) of ``a`` (..., n, n), like ``jnp.linalg.slogdet``."""
  if uses_native():
    sign, logdet, _ = _native_slogdet_inverse(a)
    return sign, logdet
  return jnp.linalg.slogdet(a)


def slogdet_inverse(a: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(sign, log|det a|, a⁻¹) of ``a`` (..., n, n), from one factorisation on CPU."""
  if uses_native():
    return _native_slogdet_inverse(a)
  sign, logdet = jnp.linalg.slogdet(a)
  return sign, logdet, jnp.linalg.inv(a)
