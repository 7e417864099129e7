"""The operations every ansatz is written against, and their two views.

An architecture (``ferminet.py``, ``psiformer.py``) is one function of a *view*
and the parameters. A view implements a handful of operations — per-electron and
per-pair functions of the coordinates, dense layers, activations, the FermiNet's
one-electron layer, orbitals times envelopes, the determinant sum and pairwise
sums such as a Jastrow factor — on its own kind of array:

- :class:`Values`: plain values, one-electron arrays (n, f) and pair arrays
  (n, n, f); with ``tag=True`` every dense layer (and the isotropic envelope) is
  registered with kfac-jax, the view KFAC differentiates.
- :class:`Stacks`: forward-Laplacian stacks (Li et al., Nat. Mach. Intell. 2024),
  the value, the Jacobian with respect to the 3N coordinates and the Laplacian of
  every feature carried together in one forward pass; nonlinear operations by the
  chain rule (``_apply``), products by the product rule (``_mul``, ``_bilinear``).

Dispatch happens in Python while tracing, so each view compiles to what a
hand-written network would.

A one-electron *stack* is an array (n, R, f) with R = 3N + 2 rows per electron:
row 0 the value, rows 1 … 3N the Jacobian with respect to the coordinates (in
the order of x) and row R - 1 the Laplacian. A pair stack is (n, n, 5, f) for a
feature that depends on r_i - r_j only: row 0 its value, rows 1 … 3 its
derivative with respect to r_i (that with respect to r_j is minus it) and row 4
its Laplacian over both electrons; the self pair h_ii is a constant. In both the
rows are the second-to-last axis, so linear maps on the last axis act on stacks
unchanged. What the network exploits that a generic tracer (folx) has to discover:

- the pair stream carries one (3, width) block per pair instead of 3N columns;
- input features, envelopes and Jastrow terms are functions of one electron or
  one pair: their derivatives come from 3-dimensional autodiff;
- each layer is one matmul of the stacked rows, the spin means' share computed
  once per layer;
- determinants use their inverse: ∂ log det A = tr(A⁻¹ ∂A) and
  ∂² log det A = tr(A⁻¹ ∂²A) - tr((A⁻¹ ∂A)²).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from ferminet import _compat  # noqa: F401  (first: gives jax.core the names kfac_jax reads)

# isort: split
import jax
import jax.numpy as jnp
import kfac_jax
import numpy as np

from ferminet import linalg

# (d (..., 3), r (..., 1)) -> (..., f): a feature of one electron–nucleus or
# electron–electron vector d and its length r.
VectorFn = Callable[[jax.Array, jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True)
class Architecture:
  """An ansatz written once: ``matrices(view, params, x)`` are the orbital matrices of
  the occupied spin channels in the view's layout; ``networks.make`` adds the
  determinant sum and the Jastrow factor and builds every view from it."""

  init: Callable[[jax.Array], Any]
  matrices: Callable[..., list[jax.Array]]
  spins: tuple[int, ...]
  determinants: int
  orbitals_per_channel: list[int]
  full_det: bool
  jastrow: Any  # jastrow.Jastrow or None
  structured: bool  # has the Stacks view (a forward Laplacian of its own)


# --- shared pieces -------------------------------------------------------------


def dense_init(key: jax.Array, n_in: int, n_out: int, bias: bool = True) -> dict:
  """Weights ~ N(0, 1/n_in), biases ~ N(0, 1)."""
  kw, kb = jax.random.split(key)
  p = {'w': jax.random.normal(kw, (n_in, n_out)) / np.sqrt(n_in)}
  if bias:
    p['b'] = jax.random.normal(kb, (n_out,))
  return p


def dense(p: dict, x: jax.Array) -> jax.Array:
  """x @ w + b for x of shape (..., n_in) (plain values)."""
  y = x @ p['w']
  return y + p['b'] if 'b' in p else y


def tag_dense(y: jax.Array, x: jax.Array, p: dict) -> jax.Array:
  """Registers y = x @ w (+ b) with kfac-jax as a dense layer repeated over electrons.

  The tag only tells KFAC the layer's inputs and outputs (its Kronecker factors come
  from x and from the gradient at y), so y may be computed any equivalent way. Every
  weight matrix is tagged by hand: once one layer is, kfac-jax's automatic matching
  no longer finds the others reliably (the pair layer fell to a generic block).
  """
  return kfac_jax.register_dense(y, x, p['w'], p.get('b'), variant='repeated_dense')


def residual(new: jax.Array, old: jax.Array, scaled: bool = False) -> jax.Array:
  """new + old when their shapes match (else new); divided by sqrt(2) when ``scaled``.

  Linear in both, so it is the same operation on values and on stacks.
  """
  if new.shape != old.shape:
    return new
  return (new + old) / 2.0**0.5 if scaled else new + old  # a Python float keeps the dtype


def spin_slices(spins: Sequence[int]) -> list[slice]:
  """The α and β electrons' slices of the electron axis."""
  starts = np.cumsum((0,) + tuple(spins))
  return [slice(int(a), int(b)) for a, b in zip(starts[:-1], starts[1:], strict=True)]


def same_spin(spins: Sequence[int]) -> np.ndarray:
  """(n, n) boolean: electrons i and j have the same spin."""
  label = np.repeat(np.arange(len(spins)), spins)
  return label[:, None] == label[None, :]


def logdet_sum(signs: jax.Array, logs: jax.Array) -> tuple[jax.Array, jax.Array]:
  """sign and log|Σ_k s_k exp(l_k)| for determinant signs/logs of shape (K,).

  Shifts by the largest log (a constant for the gradient), so it is finite
  whenever one determinant is, including one-electron spin channels.
  """
  shift = jax.lax.stop_gradient(jnp.max(logs))
  total = jnp.sum(signs * jnp.exp(logs - shift))
  return jnp.sign(total), jnp.log(jnp.abs(total)) + shift


def _pair_geometry(pos: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """ee (n, n, 3) = r_i - r_j, r (n, n, 1) with the self distance sqrt(3), off-diagonal mask.

  Adding 1 to every component on the diagonal keeps the norm differentiable where
  r_ii = 0; the self-distance is then the constant sqrt(3).
  """
  n = pos.shape[0]
  ee = pos[:, None, :] - pos[None, :, :]
  eye = jnp.eye(n, dtype=pos.dtype)
  r = jnp.linalg.norm(ee + eye[..., None], axis=-1, keepdims=True)
  return ee, r, (1.0 - eye)[..., None]


def _pair_values(fn: VectorFn, ee, r, off, zero_self: bool) -> jax.Array:
  """fn(r_i - r_j, r_ij) of every pair, (n, n, f); the self pair 0 with ``zero_self``."""
  out = fn(ee, r)
  return out * off if zero_self else out


def _split_dense(
  p: dict, h_one: jax.Array, means: list[jax.Array], pair_means: list[jax.Array]
) -> jax.Array:
  """dense(p, [h_i, mean_α h, mean_β h, mean_α h_i·, mean_β h_i·]) without the broadcast.

  The spin means are the same for every electron, so their share of the layer,
  (1, d) @ (d, out), is computed once instead of once per electron: at N2 with
  (256, 32) layers this removes about 60% of the layer's multiply-adds, and as
  much again from each column of a forward-Laplacian Jacobian.
  """
  d, w = h_one.shape[-1], p['w']
  shared = sum(m @ w[(1 + k) * d : (2 + k) * d] for k, m in enumerate(means))
  if 'b' in p:
    shared = shared + p['b']
  pair = jnp.concatenate(pair_means, axis=-1)
  return h_one @ w[:d] + pair @ w[3 * d :] + shared


def _spin_mean(x: jax.Array, spins: Sequence[int], axis: int) -> list[jax.Array]:
  """Means of x over the α and β slices of ``axis`` (zeros for an empty channel)."""
  out = []
  for s in spin_slices(spins):
    part = jax.lax.slice_in_dim(x, s.start, s.stop, axis=axis)
    if s.stop > s.start:
      out.append(jnp.mean(part, axis=axis, keepdims=True))
    else:
      shape = list(x.shape)
      shape[axis] = 1
      out.append(jnp.zeros(shape, x.dtype))
  return out


# --- plain values ----------------------------------------------------------------


class Values:
  """Plain values: one-electron arrays (n, f), pair arrays (n, n, f).

  ``tag``: register every dense layer (and the isotropic envelope) with kfac-jax.
  """

  def __init__(self, spins: Sequence[int], tag: bool = False):
    self.spins = tuple(int(s) for s in spins)
    self.tag = tag

  def electrons(self, fn: VectorFn, pos: jax.Array, centres: jax.Array) -> jax.Array:
    """fn of every electron's vectors to ``centres``: (n, f) from fn (m, 3), (m, 1) -> (f,)."""
    d = pos[:, None, :] - centres[None]
    return jax.vmap(fn)(d, jnp.linalg.norm(d, axis=-1, keepdims=True))

  def pairs(self, fn: VectorFn, pos: jax.Array, zero_self: bool) -> jax.Array:
    """fn(r_i - r_j, r_ij) of every pair, (n, n, f); the self pair fn(0, sqrt(3)), or 0
    with ``zero_self`` (DeepMind's FermiNet)."""
    return _pair_values(fn, *_pair_geometry(pos), zero_self)

  def pair_sum(self, fn: Callable[[jax.Array], jax.Array], pos: jax.Array) -> jax.Array:
    """Σ_{i<j} fn(r_ij) for fn elementwise on the (n, n) distances (scalar)."""
    _, r, off = _pair_geometry(pos)
    return 0.5 * jnp.sum(fn(r[..., 0]) * off[..., 0])

  def dense(self, p: dict, x: jax.Array) -> jax.Array:
    y = dense(p, x)
    return tag_dense(y, x, p) if self.tag else y

  def tanh(self, z: jax.Array, pair: bool = False) -> jax.Array:
    del pair
    return jnp.tanh(z)

  def one_electron_layer(self, p: dict, one: jax.Array, two: jax.Array | None) -> jax.Array:
    """The FermiNet's layer input [h_i, spin means of h, spin means of h_i·] @ w + b."""
    means = _spin_mean(one, self.spins, 0)
    pair_means = [] if two is None else [m[:, 0] for m in _spin_mean(two, self.spins, 1)]
    pre = _split_dense(p, one, means, pair_means)
    if self.tag:  # KFAC's view: one dense layer on the concatenated inputs
      g = jnp.concatenate(
        [one] + [jnp.broadcast_to(m, one.shape) for m in means] + pair_means, axis=-1
      )
      pre = tag_dense(pre, g, p)
    return pre

  def symmetric_features(self, one: jax.Array, two: jax.Array) -> jax.Array:
    """[h_i, means of h over occupied spin channels, means of h_ij over them] (n, f)."""
    present = [s for s in spin_slices(self.spins) if s.stop > s.start]
    parts = [one] + [jnp.broadcast_to(jnp.mean(one[s], axis=0), one.shape) for s in present]
    return jnp.concatenate(parts + [jnp.mean(two[:, s], axis=1) for s in present], axis=-1)

  def envelope(self, h, envelope, p_env, pos, centres, start: int) -> jax.Array:
    """h (m, f) times the envelope of each of its m electrons at pos (m, 3)."""
    del start
    return h * envelope.apply(p_env, pos, centres, self.tag)

  def orbital_matrices(self, phi: jax.Array, n_det: int, n_orb: int) -> jax.Array:
    """(n_s, n_det · n_orb) -> (n_det, n_s, n_orb)."""
    return jnp.transpose(phi.reshape(phi.shape[0], n_det, n_orb), (1, 0, 2))

  def log_psi(self, mats: list[jax.Array], full_det: bool) -> tuple[jax.Array, jax.Array]:
    """(sign, log|ψ|) of Σ_k Π_channels det: mats (n_det, n_s, n_orb) per occupied channel."""
    n_det = mats[0].shape[0]
    dtype = mats[0].dtype
    if full_det:
      mats = [jnp.concatenate(mats, axis=1)]
    sign, logs = jnp.ones(n_det, dtype), jnp.zeros(n_det, dtype)
    for m in mats:
      s, ld = linalg.slogdet(m)
      sign, logs = sign * s, logs + ld
    return logdet_sum(sign, logs)

  def add_log(self, out: tuple[jax.Array, jax.Array], j: jax.Array) -> tuple:
    """(sign, log|ψ| + j)."""
    return out[0], out[1] + j

  def with_constant(self, h: jax.Array, c: jax.Array) -> jax.Array:
    """[h, c] on the feature axis, c (n, k) the same for every walker (e.g. spins)."""
    return jnp.concatenate([h, c.astype(h.dtype)], axis=-1)

  def attention(self, q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
    """Σ_j softmax_j(q_i·k_j / sqrt(d)) v_j per head: q, k, v (n, heads, d) -> (n, heads, d)."""
    logits = jnp.einsum('ihd,jhd->hij', q, k) / np.sqrt(q.shape[-1])
    return jnp.einsum('hij,jhd->ihd', jax.nn.softmax(logits, axis=-1), v)

  def layer_norm(self, p: dict, x: jax.Array, eps: float) -> jax.Array:
    """(x - mean) / sqrt(var + eps) · scale + offset over the feature axis."""
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean((x - mean) ** 2, axis=-1, keepdims=True)
    normed = (x - mean) / jnp.sqrt(var + eps)
    y = normed * p['scale'] + p['offset']
    if self.tag:
      y = kfac_jax.register_scale_and_shift(y, normed, p['scale'], p['offset'])
    return y


# --- forward-Laplacian stacks ------------------------------------------------------


def local_derivatives(
  fn: Callable[[jax.Array], jax.Array], points: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Value (m, f), gradient (m, 3, f) and Laplacian (m, f) of fn: (3,) -> (f,) at points (m, 3)."""

  def one(r):
    jac = jax.jacfwd(fn)(r)  # (f, 3)
    hess = jax.jacfwd(jax.jacfwd(fn))(r)  # (f, 3, 3)
    return fn(r), jac.T, jnp.trace(hess, axis1=-2, axis2=-1)

  return jax.vmap(one)(points)


def own_block(local: jax.Array, start: int, n: int) -> jax.Array:
  """(m, 3n, f) Jacobian of rows that each depend on one electron, start + row.

  local: (m, 3, f), the derivative of row i with respect to electron start + i.
  """
  m = local.shape[0]
  eye = jnp.eye(m, n, k=start, dtype=local.dtype)
  return (eye[:, :, None, None] * local[:, None]).reshape(m, 3 * n, local.shape[-1])


def stack(value: jax.Array, jac: jax.Array, lap: jax.Array, axis: int) -> jax.Array:
  return jnp.concatenate([jnp.expand_dims(value, axis), jac, jnp.expand_dims(lap, axis)], axis=axis)


def _split(z: jax.Array, axis: int) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Value, Jacobian rows and Laplacian of a stack whose rows run along ``axis``."""
  n_rows = z.shape[axis]
  value = jax.lax.index_in_dim(z, 0, axis, keepdims=False)
  jac = jax.lax.slice_in_dim(z, 1, n_rows - 1, axis=axis)
  return value, jac, jax.lax.index_in_dim(z, n_rows - 1, axis, keepdims=False)


def _apply(z: jax.Array, axis: int, derivatives, multiplicity: float = 1.0) -> jax.Array:
  """f of a stack elementwise, ``derivatives(value) -> (f, f', f'')`` evaluated once:
  ∇f(z) = f'(z) ∇z, ∇²f(z) = f'(z) ∇²z + f''(z) |∇z|², with |∇z|² the sum of the
  squared Jacobian rows times ``multiplicity`` (2 for a pair stack, whose rows stand for
  the derivatives with respect to both electrons)."""
  value, jac, lap = _split(z, axis)
  f, g1, g2 = derivatives(value)
  new_lap = g1 * lap + g2 * (multiplicity * jnp.sum(jac * jac, axis=axis))
  return stack(f, jnp.expand_dims(g1, axis) * jac, new_lap, axis)


def _tanh_derivatives(v: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  t = jnp.tanh(v)
  d1 = 1.0 - t * t
  return t, d1, -2.0 * t * d1


def _exp_derivatives(v: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  e = jnp.exp(v)
  return e, e, e


def _log_derivatives(v: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  inv = 1.0 / v
  return jnp.log(v), inv, -inv * inv


def _rsqrt_derivatives(v: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  r = jax.lax.rsqrt(v)
  return r, -0.5 * r / v, 0.75 * r / (v * v)


def _mul(a: jax.Array, b: jax.Array, axis: int) -> jax.Array:
  """The elementwise product of two stacks (broadcasting): ∇(ab) = a∇b + b∇a,
  ∇²(ab) = a∇²b + b∇²a + 2∇a·∇b."""
  va, ja, la = _split(a, axis)
  vb, jb, lb = _split(b, axis)
  ex = lambda t: jnp.expand_dims(t, axis)  # noqa: E731
  lap = va * lb + vb * la + 2.0 * jnp.sum(ja * jb, axis=axis)
  return stack(va * vb, ex(va) * jb + ex(vb) * ja, lap, axis)


def _bilinear(spec: str, a: jax.Array, b: jax.Array, rows: tuple[int, int, int]) -> jax.Array:
  """einsum(spec) of two stacks whose rows are axis rows[0] of a and rows[1] of b; the
  result's rows are its axis rows[2]. ``spec`` names the value axes ('ihd,jhd->ijh').

  ∇(a·b) = ∇a·b + a·∇b and ∇²(a·b) = ∇²a·b + a·∇²b + 2 Σ_rows ∂a·∂b.
  """
  ins, out = spec.split('->')
  sa, sb = ins.split(',')
  row = lambda t, k: t[:k] + 'r' + t[k:]  # noqa: E731
  ra, rb, ro = row(sa, rows[0]), row(sb, rows[1]), row(out, rows[2])
  va, ja, la = _split(a, rows[0])
  vb, jb, lb = _split(b, rows[1])
  value = jnp.einsum(spec, va, vb)
  jac = jnp.einsum(f'{ra},{sb}->{ro}', ja, vb) + jnp.einsum(f'{sa},{rb}->{ro}', va, jb)
  lap = jnp.einsum(spec, la, vb) + jnp.einsum(spec, va, lb)
  lap = lap + 2.0 * jnp.einsum(f'{ra},{rb}->{out}', ja, jb)
  return stack(value, jac, lap, rows[2])


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
  jac = others.reshape(n, 3 * n, -1) + own_block(m[:, 1:4], 0, n)
  return stack(m[:, 0], jac, m[:, 4], axis=1)


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


def _value_row(n_rows: int, dtype) -> jax.Array:
  """(R, 1): 1 in the value row, 0 in the derivative rows: c · this is a constant stack."""
  return jnp.zeros((n_rows, 1), dtype).at[0].set(1.0)


class Stacks:
  """Forward-Laplacian stacks; :meth:`log_psi` gives (∇² log|ψ|, ∇ log|ψ| (3N,))."""

  def __init__(self, spins: Sequence[int]):
    self.spins = tuple(int(s) for s in spins)
    self.n = sum(self.spins)
    self.slices = spin_slices(self.spins)

  def _own(self, value, grad, lap, start: int = 0) -> jax.Array:
    """Stack (m, R, f) of m features each of one electron, start + row."""
    return stack(value, own_block(grad, start, self.n), lap, axis=1)

  def electrons(self, fn: VectorFn, pos: jax.Array, centres: jax.Array) -> jax.Array:
    def of_position(r):
      d = r[None] - centres
      return fn(d, jnp.linalg.norm(d, axis=-1, keepdims=True))

    return self._own(*local_derivatives(of_position, pos))

  def pairs(self, fn: VectorFn, pos: jax.Array, zero_self: bool) -> jax.Array:
    ee, r, off = _pair_geometry(pos)
    value = _pair_values(fn, ee, r, off, zero_self)
    eye = 1.0 - off  # derivatives at a shifted self pair, then masked (h_ii is constant)
    safe = (ee + eye).reshape(-1, 3)
    _, grad, lap = local_derivatives(lambda d: fn(d, jnp.linalg.norm(d, keepdims=True)), safe)
    n = self.n
    grad = grad.reshape(n, n, 3, -1) * off[..., None]
    lap = 2.0 * lap.reshape(n, n, -1) * off  # ∇²_i + ∇²_j of a function of r_i - r_j
    return stack(value, grad, lap, axis=2)

  def pair_sum(self, fn: Callable[[jax.Array], jax.Array], pos: jax.Array) -> tuple:
    """(value, ∇ (3N,), ∇²) of Σ_{i<j} fn(r_ij), fn elementwise on the distances."""
    ee, r, off = _pair_geometry(pos)
    r, off = r[..., 0], off[..., 0]
    ones = jnp.ones_like(r)
    first = lambda t: jax.jvp(fn, (t,), (ones,))[1]  # noqa: E731  (elementwise f')
    f, d1 = jax.jvp(fn, (r,), (ones,))
    d2 = jax.jvp(first, (r,), (ones,))[1]
    value = 0.5 * jnp.sum(f * off)
    grad = jnp.sum((d1 * off / r)[..., None] * ee, axis=1).reshape(-1)  # Σ_j f' (r_i - r_j)/r
    lap = jnp.sum((d2 + 2.0 * d1 / r) * off)  # each pair counted for both electrons
    return value, grad, lap

  def dense(self, p: dict, x: jax.Array) -> jax.Array:
    y = x @ p['w']
    return y.at[..., 0, :].add(p['b']) if 'b' in p else y  # the bias moves the value only

  def tanh(self, z: jax.Array, pair: bool = False) -> jax.Array:
    return _apply(z, z.ndim - 2, _tanh_derivatives, 2.0 if pair else 1.0)

  def one_electron_layer(self, p: dict, one: jax.Array, two: jax.Array | None) -> jax.Array:
    """Pre-activation stack of the one-electron layer (:func:`_split_dense`, differentiated)."""
    d = one.shape[-1]
    w = p['w']
    present = [(k, s) for k, s in enumerate(self.slices) if s.stop > s.start]  # empty: zeros
    z = one @ w[:d] + sum(
      jnp.mean(one[s], axis=0) @ w[(1 + k) * d : (2 + k) * d] for k, s in present
    )
    if two is not None:
      dp = two.shape[-1]
      pair_w = [w[3 * d + k * dp : 3 * d + (k + 1) * dp] for k, _ in present]
      z = z + _pair_share(two, [s for _, s in present], pair_w)
    if 'b' in p:
      z = z.at[:, 0].add(p['b'])
    return z

  def symmetric_features(self, one: jax.Array, two: jax.Array) -> jax.Array:
    present = [s for s in self.slices if s.stop > s.start]
    parts = [one] + [jnp.broadcast_to(jnp.mean(one[s], axis=0), one.shape) for s in present]
    # Each channel's mean into its own columns: block k of the weights is the identity.
    dp, k = two.shape[-1], len(present)
    eye = jnp.eye(dp * k, dtype=two.dtype)
    blocks = [eye[i * dp : (i + 1) * dp] for i in range(k)]
    return jnp.concatenate(parts + [_pair_share(two, present, blocks)], axis=-1)

  def envelope(self, h, envelope, p_env, pos, centres, start: int) -> jax.Array:
    """h stack (m, R, f) times the envelope of its m electrons, start … start + m - 1."""
    return self._product(h, *envelope.derivatives(p_env, pos, centres), start)

  def _product(self, h, env, env_grad, env_lap, start):
    """Stack of h × e for e a function of each row's own electron: value, gradient, Laplacian."""
    m = h.shape[0]
    own = h[:, 1:-1].reshape(m, self.n, 3, -1)[np.arange(m), np.arange(m) + start]
    value = h[:, 0]
    # Product rule; only electron i's own rows see the envelope's gradient.
    correction = stack(
      jnp.zeros_like(value),
      own_block(value[:, None] * env_grad, start, self.n),
      2.0 * jnp.sum(own * env_grad, axis=1) + value * env_lap,
      axis=1,
    )
    return h * env[:, None] + correction

  def orbital_matrices(self, phi: jax.Array, n_det: int, n_orb: int) -> jax.Array:
    """(n_s, R, n_det · n_orb) -> (n_s, R, n_det, n_orb)."""
    return phi.reshape(phi.shape[:2] + (n_det, n_orb))

  def log_psi(self, mats: list[jax.Array], full_det: bool) -> tuple[jax.Array, jax.Array]:
    """(∇² log|ψ|, ∇ log|ψ| (3N,)) of Σ_k Π_channels det."""
    n_det = mats[0].shape[2]
    dtype = mats[0].dtype
    if full_det:
      mats = [jnp.concatenate(mats, axis=0)]
    sign = jnp.ones(n_det, dtype)
    logs = jnp.zeros(n_det, dtype)
    grads = jnp.zeros((n_det, 3 * self.n), dtype)
    laps = jnp.zeros(n_det, dtype)
    for m in mats:
      s_k, l_k, g_k, lap_k = _log_det(m)
      sign, logs, grads, laps = sign * s_k, logs + l_k, grads + g_k, laps + lap_k
    # log|Σ_K s_K e^{l_K}|: weights w_K = s_K e^{l_K} / ψ sum to one.
    weights = sign * jnp.exp(logs - jnp.max(logs))
    weights = weights / jnp.sum(weights)
    grad = weights @ grads
    lap_psi = weights @ (laps + jnp.sum(grads * grads, axis=1))  # ∇²ψ / ψ
    return lap_psi - jnp.sum(grad * grad), grad

  def add_log(self, out: tuple[jax.Array, jax.Array], j: tuple) -> tuple:
    """(∇² log|ψ| + ∇²J, ∇ log|ψ| + ∇J) for j = (J, ∇J, ∇²J)."""
    return out[0] + j[2], out[1] + j[1]

  def with_constant(self, h: jax.Array, c: jax.Array) -> jax.Array:
    rows = jnp.zeros((c.shape[0], h.shape[1] - 1, c.shape[1]), h.dtype)
    return jnp.concatenate([h, jnp.concatenate([c.astype(h.dtype)[:, None], rows], 1)], -1)

  def attention(self, q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
    """Stacks q, k, v (n, R, heads, d) -> (n, R, heads, d); the softmax as
    exp(l - log Σ_j exp l), each piece by the chain and product rules."""
    logits = _bilinear('ihd,jhd->ijh', q, k, (1, 1, 2)) / np.sqrt(q.shape[-1])  # (i, j, R, h)
    shift = jax.lax.stop_gradient(jnp.max(logits[:, :, 0], axis=1))[:, None, None]  # (i, 1, 1, h)
    shifted = logits - shift * _value_row(logits.shape[2], logits.dtype)  # a constant shift
    e = _apply(shifted, 2, _exp_derivatives)
    lse = _apply(jnp.sum(e, axis=1), 1, _log_derivatives)
    weights = _apply(shifted - lse[:, None], 2, _exp_derivatives)  # softmax over j
    return _bilinear('ijh,jhd->ihd', weights, v, (2, 1, 1))

  def layer_norm(self, p: dict, x: jax.Array, eps: float) -> jax.Array:
    centred = x - jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean(_mul(centred, centred, 1), axis=-1, keepdims=True)
    inv = _apply(var + eps * _value_row(var.shape[1], var.dtype), 1, _rsqrt_derivatives)
    y = _mul(centred, inv, 1) * p['scale']
    return y.at[:, 0].add(p['offset'])  # the offset moves the value only
