"""The FermiNet ansatz on one walker.

``make(network_cfg, system)`` returns a :class:`Network` of pure functions over a
plain parameter pytree:

- ``init(key) -> params``;
- ``apply(params, x) -> (sign, log|ψ|)`` for one walker, ``x`` of shape
  (n_electrons * 3,) in bohr with the α electrons first;
- ``orbitals(params, x) -> [alpha, beta]``: the orbital matrices, each of
  shape (determinants, n_spin, n_orbitals) (n_orbitals = n_electrons with
  ``full_det``, else n_spin), used by pretraining;
- ``log_abs(params, x) -> log|ψ|``.

Batching over walkers (vmap) and devices (pmap) is applied by the caller.

Architecture (Pfau et al., PRR 2, 033429 (2020)): electron–nucleus and
electron–electron features feed a one-electron stream h_i and a two-electron
stream h_ij. Each layer concatenates h_i with the spin-wise means of h_j and of
h_ij (permutation-equivariant), applies a dense layer and tanh, and adds the
input back when widths match (``network.ferminet.reference_layers``: as DeepMind's
FermiNet, (h + tanh(z)) / sqrt(2), with the self-pair distance r_ii = 0). Orbitals
are linear in the last one-electron features times an exponentially decaying
envelope around each nucleus; the wavefunction is a sum of determinants combined
with a signed log-sum-exp.
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
import ml_collections
import numpy as np

from ferminet import linalg
from ferminet import system as system_lib

Params = Any  # a pytree of arrays


@dataclasses.dataclass(frozen=True)
class Network:
  init: Callable[[jax.Array], Params]
  apply: Callable[[Params, jax.Array], tuple[jax.Array, jax.Array]]
  orbitals: Callable[[Params, jax.Array], list[jax.Array]]  # [α, β] matrices
  log_abs: Callable[[Params, jax.Array], jax.Array]
  # The same log|ψ| with every layer tagged for KFAC (_tag_dense; the isotropic
  # envelope's π and σ in envelope_apply); used only where KFAC estimates curvature,
  # since folx has no forward-Laplacian rule for the tags.
  log_abs_tagged: Callable[[Params, jax.Array], jax.Array]


def _dense_init(key: jax.Array, n_in: int, n_out: int, bias: bool = True) -> dict:
  """Weights ~ N(0, 1/n_in), biases ~ N(0, 1)."""
  kw, kb = jax.random.split(key)
  p = {'w': jax.random.normal(kw, (n_in, n_out)) / np.sqrt(n_in)}
  if bias:
    p['b'] = jax.random.normal(kb, (n_out,))
  return p


def dense(p: dict, x: jax.Array) -> jax.Array:
  """x @ w + b for x of shape (..., n_in)."""
  y = x @ p['w']
  return y + p['b'] if 'b' in p else y


def _tag_dense(y: jax.Array, x: jax.Array, p: dict) -> jax.Array:
  """Registers y = x @ w (+ b) with kfac-jax as a dense layer repeated over electrons.

  The tag only tells KFAC the layer's inputs and outputs (its Kronecker factors come
  from x and from the gradient at y), so y may be computed any equivalent way. Every
  weight matrix is tagged by hand: once one layer is, kfac-jax's automatic matching
  no longer finds the others reliably (the pair layer fell to a generic block).
  """
  return kfac_jax.register_dense(y, x, p['w'], p.get('b'), variant='repeated_dense')


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


def residual(new: jax.Array, old: jax.Array, scaled: bool = False) -> jax.Array:
  """new + old when their shapes match (else new); divided by sqrt(2) when ``scaled``.

  Linear in both, so it applies unchanged to forward-Laplacian stacks.
  """
  if new.shape != old.shape:
    return new
  return (new + old) / 2.0**0.5 if scaled else new + old  # a Python float keeps the dtype


def orbitals_per_channel(full_det: bool, spins: Sequence[int]) -> list[int]:
  """Orbitals per determinant of each spin channel: all electrons with ``full_det``."""
  return [sum(spins) if full_det else n for n in spins]


def _spin_mean(x: jax.Array, spins: Sequence[int], axis: int) -> list[jax.Array]:
  """Means of x over the α and β slices of ``axis`` (zeros for an empty channel)."""
  out, start = [], 0
  for n in spins:
    part = jax.lax.slice_in_dim(x, start, start + n, axis=axis)
    if n:
      out.append(jnp.mean(part, axis=axis, keepdims=True))
    else:
      shape = list(x.shape)
      shape[axis] = 1
      out.append(jnp.zeros(shape, x.dtype))
    start += n
  return out


def features(
  x: jax.Array, nuclei: jax.Array, zero_self_distance: bool = False
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Input features of one walker.

  Args:
    x: electron positions, (n * 3,) bohr.
    nuclei: nuclear positions, (n_atoms, 3) bohr.
    zero_self_distance: the self-distance r_ii is 0 (DeepMind's FermiNet) instead of
      sqrt(3); either way it is a constant.

  Returns:
    one: (n, n_atoms * 4) electron–nucleus vectors and distances;
    two: (n, n, 4) electron–electron vectors and distances;
    r_ae: (n, n_atoms) electron–nucleus distances.
  """
  pos = x.reshape(-1, 3)
  n = pos.shape[0]
  ae = pos[:, None, :] - nuclei[None, :, :]
  r_ae = jnp.linalg.norm(ae, axis=-1)
  ee = pos[:, None, :] - pos[None, :, :]
  # Adding 1 to every component on the diagonal keeps the norm differentiable
  # where r_ii = 0; the self-distance is then the constant sqrt(3).
  eye = jnp.eye(n, dtype=x.dtype)
  r_ee = jnp.linalg.norm(ee + eye[..., None], axis=-1)
  if zero_self_distance:
    r_ee = r_ee * (1.0 - eye)
  one = jnp.concatenate([ae, r_ae[..., None]], axis=-1).reshape(n, -1)
  two = jnp.concatenate([ee, r_ee[..., None]], axis=-1)
  return one, two, r_ae


# --- envelopes: exp(-|σ (r - R_I)|) summed over nuclei with weights π -----------


def _envelope_init(kind: str, n_atoms: int, n_out: int, dtype) -> dict:
  pi = jnp.ones((n_atoms, n_out), dtype)
  if kind == 'isotropic':
    sigma = jnp.ones((n_atoms, n_out), dtype)
  elif kind == 'diagonal':
    sigma = jnp.ones((n_atoms, 3, n_out), dtype)
  elif kind == 'full':
    sigma = jnp.tile(jnp.eye(3, dtype=dtype)[None, :, :, None], (n_atoms, 1, 1, n_out))
  else:
    raise ValueError(f'unknown envelope {kind!r}')
  return {'pi': pi, 'sigma': sigma}


def envelope_apply(
  kind: str, p: dict, ae: jax.Array, r_ae: jax.Array, tag: bool = False
) -> jax.Array:
  """Envelope values, (n_spin, n_out), from ae (n_spin, n_atoms, 3), r_ae (n_spin, n_atoms).

  ``tag``: register the isotropic envelope's σ and π with kfac-jax as scale layers
  (y = x·σ with x = r·sign(σ), and y = exp(-|σ| r)·π), so KFAC gets their Fisher
  diagonal from per-walker gradients. Untagged, they fall to kfac-jax's generic
  diagonal blocks, which square each device's gradient summed over its walkers: a
  cruder estimate, and one that changes with the number of devices.
  """
  if kind == 'isotropic':
    sigma = p['sigma']
    x = r_ae[..., None] * jnp.sign(sigma)  # x·σ = r·|σ|; dy/dσ = x
    exponent = x * sigma
    if tag:
      exponent = kfac_jax.register_scale_and_shift(exponent, x, sigma)
    decay = jnp.exp(-exponent)
    weighted = decay * p['pi'][None]
    if tag:
      weighted = kfac_jax.register_scale_and_shift(weighted, decay, p['pi'])
    return jnp.sum(weighted, axis=1)
  if kind == 'diagonal':
    scaled = ae[..., None] * p['sigma'][None]  # (n, atoms, 3, out)
    exponent = jnp.sqrt(jnp.sum(scaled**2, axis=2))
  else:  # full
    scaled = jnp.einsum('nad,adeo->naeo', ae, p['sigma'])
    exponent = jnp.sqrt(jnp.sum(scaled**2, axis=2))
  return jnp.sum(jnp.exp(-exponent) * p['pi'][None], axis=1)


def logdet_sum(signs: jax.Array, logs: jax.Array) -> tuple[jax.Array, jax.Array]:
  """sign and log|Σ_k s_k exp(l_k)| for determinant signs/logs of shape (K,).

  Shifts by the largest log (a constant for the gradient), so it is finite
  whenever one determinant is, including one-electron spin channels.
  """
  shift = jax.lax.stop_gradient(jnp.max(logs))
  total = jnp.sum(signs * jnp.exp(logs - shift))
  return jnp.sign(total), jnp.log(jnp.abs(total)) + shift


def make(
  cfg: ml_collections.ConfigDict,
  system: system_lib.System,
  dtype: Any = None,
) -> Network:
  """Builds the FermiNet for ``system`` from ``cfg.network``.

  Args:
    cfg: the ``network`` section of the config (determinants, full_det,
      envelope_type, bias_orbitals, ferminet.hidden_dims, ferminet.reference_layers).
    system: nuclei and electrons.
    dtype: parameter dtype; default float64 if jax_enable_x64 else float32.
  """
  dtype = dtype or (jnp.float64 if jax.config.jax_enable_x64 else jnp.float32)
  spins = tuple(int(n) for n in system.electrons)
  nuclei = np.asarray(system.coords)
  n_atoms = nuclei.shape[0]
  n_det = int(cfg.determinants)
  full_det = bool(cfg.full_det)
  env_kind = cfg.envelope_type
  hidden = [tuple(int(d) for d in layer) for layer in cfg.ferminet.hidden_dims]
  as_reference = bool(cfg.ferminet.get('reference_layers', False))
  n_orb = orbitals_per_channel(full_det, spins)

  def init(key: jax.Array) -> Params:
    keys = iter(jax.random.split(key, 2 * len(hidden) + 4))
    layers = []
    d_one, d_two = n_atoms * 4, 4
    for i, (w_one, w_two) in enumerate(hidden):
      layer = {'single': _dense_init(next(keys), 3 * d_one + 2 * d_two, w_one)}
      if i < len(hidden) - 1:  # the last two-electron stream feeds nothing
        layer['double'] = _dense_init(next(keys), d_two, w_two)
      layers.append(layer)
      d_one, d_two = w_one, w_two
    orbital, envelope = [], []
    for n_spin, norb in zip(spins, n_orb, strict=True):
      if n_spin:  # an empty spin channel has no orbitals to parametrise
        orbital.append(_dense_init(next(keys), d_one, n_det * norb, bias=cfg.bias_orbitals))
        envelope.append(_envelope_init(env_kind, n_atoms, n_det * norb, dtype))
    params = {'layers': layers, 'orbital': orbital, 'envelope': envelope}
    return jax.tree.map(lambda a: a.astype(dtype), params)

  def orbitals(params: Params, x: jax.Array, tag: bool = False) -> list[jax.Array]:
    one, two, r_ae = features(x, jnp.asarray(nuclei, x.dtype), as_reference)
    h_one, h_two = one, two
    for layer in params['layers']:
      means = _spin_mean(h_one, spins, 0)
      pair_means = [m[:, 0] for m in _spin_mean(h_two, spins, 1)]
      pre = _split_dense(layer['single'], h_one, means, pair_means)
      if tag:  # KFAC's view: one dense layer on the concatenated inputs
        g = jnp.concatenate(
          [h_one] + [jnp.broadcast_to(m, h_one.shape) for m in means] + pair_means, axis=-1
        )
        pre = _tag_dense(pre, g, layer['single'])
      new_one = jnp.tanh(pre)
      h_one = residual(new_one, h_one, as_reference)
      if 'double' in layer:
        pre_two = dense(layer['double'], h_two)
        if tag:
          pre_two = _tag_dense(pre_two, h_two, layer['double'])
        new_two = jnp.tanh(pre_two)
        h_two = residual(new_two, h_two, as_reference)
    ae = x.reshape(-1, 3)[:, None, :] - jnp.asarray(nuclei, x.dtype)[None]
    mats, start = [], 0
    p_orbital, p_envelope = iter(params['orbital']), iter(params['envelope'])
    for n_spin, norb in zip(spins, n_orb, strict=True):
      if not n_spin:
        mats.append(jnp.zeros((n_det, 0, norb), x.dtype))
        continue
      sl = slice(start, start + n_spin)
      start += n_spin
      p_orb = next(p_orbital)
      phi = dense(p_orb, h_one[sl])
      if tag:
        phi = _tag_dense(phi, h_one[sl], p_orb)
      phi = phi * envelope_apply(env_kind, next(p_envelope), ae[sl], r_ae[sl], tag)
      mats.append(jnp.transpose(phi.reshape(n_spin, n_det, norb), (1, 0, 2)))
    return mats

  def apply(params: Params, x: jax.Array, tag: bool = False) -> tuple[jax.Array, jax.Array]:
    mats = orbitals(params, x, tag)
    if full_det:
      sign, logs = linalg.slogdet(jnp.concatenate(mats, axis=1))
    else:
      sign, logs = jnp.ones(n_det, x.dtype), jnp.zeros(n_det, x.dtype)
      for m in mats:
        if m.shape[1]:  # an empty channel contributes det = 1
          s, ld = linalg.slogdet(m)
          sign, logs = sign * s, logs + ld
    return logdet_sum(sign, logs)

  def log_abs(params: Params, x: jax.Array) -> jax.Array:
    return apply(params, x)[1]

  def log_abs_tagged(params: Params, x: jax.Array) -> jax.Array:
    return apply(params, x, tag=True)[1]

  return Network(
    init=init, apply=apply, orbitals=orbitals, log_abs=log_abs, log_abs_tagged=log_abs_tagged
  )


def widest_feature(cfg: ml_collections.ConfigDict, system: system_lib.System) -> int:
  """The widest per-electron vector of the network: a one-electron layer or the orbitals.

  With the electron count it sizes the per-walker Jacobians of a forward Laplacian.
  """
  n_orb = orbitals_per_channel(bool(cfg.full_det), tuple(int(n) for n in system.electrons))
  widths = [int(layer[0]) for layer in cfg.ferminet.hidden_dims]
  return max(widths + [int(cfg.determinants) * max(n_orb)])


def count_parameters(params: Params) -> int:
  """Total number of scalar parameters."""
  return int(sum(np.size(p) for p in jax.tree.leaves(params)))
