"""The FermiNet (Pfau et al., PRR 2, 033429 (2020)), written once for every view.

Electron–nucleus and electron–electron features feed a one-electron stream h_i
and a two-electron stream h_ij. Each layer concatenates h_i with the spin-wise
means of h_j and of h_ij (permutation-equivariant), applies a dense layer and
tanh, and adds the input back when widths match (``network.ferminet.reference_layers``:
as DeepMind's FermiNet, (h + tanh(z)) / sqrt(2), with the self-pair distance
r_ii = 0). Orbitals are linear in the last one-electron features times an
envelope around the nuclei (``envelopes``); the wavefunction is a sum of
determinants, combined with a signed log-sum-exp, times an optional Jastrow
factor (``jastrow``).

Options of the reference, each in every view:

- ``network.rescale_inputs``: features (log(1 + r), d·log(1 + r)/r) instead of (r, d);
- ``network.ferminet.use_last_layer``: the last layer updates the pair stream too,
  and the orbitals see [h_i, spin means of h_j and of h_ij] of the last layer;
- ``network.ferminet.separate_spin_channels``: the pair stream has separate weights
  for same-spin and opposite-spin pairs (``double`` is then [same, opposite]);
- ``network.envelope_type`` and ``network.jastrow``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from ferminet import system as system_lib
from ferminet.networks import common as common_lib
from ferminet.networks import ops


def orbitals_per_channel(full_det: bool, spins: tuple[int, ...]) -> list[int]:
  """Orbitals per determinant of each spin channel: all electrons with ``full_det``."""
  return [sum(spins) if full_det else n for n in spins]


def vector_features(d: jax.Array, r: jax.Array, rescale: bool) -> jax.Array:
  """[d, r] on the last axis, or [d·log(1 + r)/r, log(1 + r)] with ``rescale``."""
  if rescale:
    t = jnp.log1p(r)
    d, r = d * (t / r), t
  return jnp.concatenate([d, r], axis=-1)


def make(
  cfg: ml_collections.ConfigDict, system: system_lib.System, dtype: Any = None
) -> ops.Architecture:
  """The FermiNet for ``system`` from ``cfg.network``, in every view of ``ops``."""
  c = common_lib.common(cfg, system, dtype, 'ferminet')
  dtype, spins, n, nuclei, n_det = c.dtype, c.spins, c.n, c.nuclei, c.determinants
  envelope, jastrow, occupied, slices = c.envelope, c.jastrow, c.occupied, c.slices
  n_atoms = nuclei.shape[0]
  full_det = bool(cfg.full_det)
  opts = cfg.ferminet
  hidden = [tuple(int(d) for d in layer) for layer in opts.hidden_dims]
  as_reference = bool(opts.get('reference_layers', False))
  rescale = bool(cfg.rescale_inputs)
  last_layer = bool(opts.use_last_layer)
  separate = bool(opts.separate_spin_channels)
  n_orb = orbitals_per_channel(full_det, spins)
  same = ops.same_spin(spins)

  def init(key: jax.Array) -> Any:
    keys = iter(jax.random.split(key, 3 * len(hidden) + 4))
    layers = []
    d_one, d_two = n_atoms * 4, 4
    for i, (w_one, w_two) in enumerate(hidden):
      layer = {'single': ops.dense_init(next(keys), 3 * d_one + 2 * d_two, w_one)}
      if i < len(hidden) - 1 or last_layer:  # else the last pair stream feeds nothing
        double = [ops.dense_init(next(keys), d_two, w_two) for _ in range(1 + separate)]
        layer['double'] = double if separate else double[0]
      layers.append(layer)
      d_one, d_two = w_one, w_two
    d_in = (len(occupied) + 1) * d_one + len(occupied) * d_two if last_layer else d_one
    orbital, envelope_params = [], []
    for k in occupied:
      width = n_det * n_orb[k]
      orbital.append(ops.dense_init(next(keys), d_in, width, bias=cfg.bias_orbitals))
      envelope_params.append(envelope.init(n_atoms, d_in if envelope.pre_orbital else width, dtype))
    params = {'layers': layers, 'orbital': orbital, 'envelope': envelope_params}
    if jastrow:
      params['jastrow'] = jastrow.init(dtype)
    return jax.tree.map(lambda a: a.astype(dtype), params)

  def pair_layer(view, p: Any, two: jax.Array) -> jax.Array:
    if not separate:
      return view.dense(p, two)
    mask = jnp.asarray(same).reshape(same.shape + (1,) * (two.ndim - 2))
    return jnp.where(mask, view.dense(p[0], two), view.dense(p[1], two))

  def features(view, x: jax.Array):
    pos = x.reshape(n, 3)
    centres = jnp.asarray(nuclei, x.dtype)
    one = view.electrons(lambda d, r: vector_features(d, r, rescale).reshape(-1), pos, centres)
    two = view.pairs(lambda d, r: vector_features(d, r, rescale), pos, as_reference)
    return pos, centres, one, two

  def matrices(view, params: Any, x: jax.Array) -> list[jax.Array]:
    """The orbital matrices of the occupied channels, in the view's layout."""
    pos, centres, one, two = features(view, x)
    for layer in params['layers']:
      new_one = view.tanh(view.one_electron_layer(layer['single'], one, two))
      if 'double' in layer:
        new_two = view.tanh(pair_layer(view, layer['double'], two), pair=True)
        two = ops.residual(new_two, two, as_reference)
      one = ops.residual(new_one, one, as_reference)
    h = view.symmetric_features(one, two) if last_layer else one
    mats = []
    for k, p_orb, p_env in zip(occupied, params['orbital'], params['envelope'], strict=True):
      s = slices[k]
      h_s = h[s]
      if envelope.pre_orbital:
        h_s = view.envelope(h_s, envelope, p_env, pos[s], centres, s.start)
      phi = view.dense(p_orb, h_s)
      if not envelope.pre_orbital:
        phi = view.envelope(phi, envelope, p_env, pos[s], centres, s.start)
      mats.append(view.orbital_matrices(phi, n_det, n_orb[k]))
    return mats

  return ops.Architecture(init, matrices, spins, n_det, n_orb, full_det, jastrow, structured=True)


def widest_feature(cfg: ml_collections.ConfigDict, system: system_lib.System) -> int:
  """The widest per-electron vector of the network: a one-electron layer, the orbital
  layer's input or the orbitals. With the electron count it sizes the per-walker
  Jacobians of a forward Laplacian."""
  spins = tuple(int(n) for n in system.electrons)
  n_orb = orbitals_per_channel(bool(cfg.full_det), spins)
  layers = [tuple(int(d) for d in layer) for layer in cfg.ferminet.hidden_dims]
  widths = [w for w, _ in layers] + [int(cfg.determinants) * max(n_orb)]
  if cfg.ferminet.use_last_layer:
    k = sum(1 for s in spins if s)
    widths.append((k + 1) * layers[-1][0] + k * layers[-1][1])
  return max(widths)
