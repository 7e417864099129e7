"""The Psiformer (von Glehn, Spencer & Pfau, ICLR 2023): self-attention over electrons.

As DeepMind's FermiNet's ``network.network_type = 'psiformer'``:

- input per electron: its electron–nucleus vectors and distances for every atom
  (log-rescaled with ``network.rescale_inputs``) and its spin, +1 for α and -1 for
  β (the network sees no electron–electron features: the Jastrow factor gives
  the cusps), mapped to num_heads · heads_dim by a dense layer without bias;
- ``num_layers`` layers of x ← x + attention(x), then x ← x + MLP(x), each followed
  by a layer norm (``use_layer_norm``; post-norm, scale 1 and offset 0 at start,
  ε = 1e-5). Attention: ``num_heads`` heads of width ``heads_dim``, queries, keys,
  values and the output projection without bias, softmax(q·k / sqrt(heads_dim))
  over all electrons. The MLP: dense layers with bias through ``mlp_hidden_dims``
  back to the attention width, tanh after every one (the last included);
- orbitals: a dense layer per spin channel times a pre-determinant envelope,
  always one N × N determinant per term (the reference ignores ``full_det`` here),
  and the ``simple_ee`` Jastrow factor unless ``network.jastrow`` says otherwise.

Only the plain and KFAC-tagged views exist: attention mixes every electron with
every other, so the structured stacks would be dense 3N-row Jacobians for all
features, what folx's generic forward Laplacian already carries (the local energy
uses folx, and says so).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import kfac_jax
import ml_collections
import numpy as np

from ferminet import system as system_lib
from ferminet.networks import envelopes as envelopes_lib
from ferminet.networks import ferminet as ferminet_lib
from ferminet.networks import jastrow as jastrow_lib
from ferminet.networks import ops

LAYER_NORM_EPS = 1e-5


def _layer_norm(view, p: dict, x: jax.Array) -> jax.Array:
  """(x - mean) / sqrt(var + ε) · scale + offset over the feature axis."""
  mean = jnp.mean(x, axis=-1, keepdims=True)
  var = jnp.mean((x - mean) ** 2, axis=-1, keepdims=True)
  normed = (x - mean) / jnp.sqrt(var + LAYER_NORM_EPS)
  y = normed * p['scale'] + p['offset']
  if view.tag:
    y = kfac_jax.register_scale_and_shift(y, normed, p['scale'], p['offset'])
  return y


def make(
  cfg: ml_collections.ConfigDict, system: system_lib.System, dtype: Any = None
) -> ops.Architecture:
  """The Psiformer for ``system`` from ``cfg.network`` (``cfg.psiformer``: num_layers,
  num_heads, heads_dim, mlp_hidden_dims, use_layer_norm), plain and tagged views."""
  dtype = dtype or (jnp.float64 if jax.config.jax_enable_x64 else jnp.float32)
  spins = tuple(int(n) for n in system.electrons)
  n = sum(spins)
  nuclei = np.asarray(system.coords)
  n_atoms = nuclei.shape[0]
  n_det = int(cfg.determinants)
  opts = cfg.psiformer
  n_layers, n_heads, d_head = int(opts.num_layers), int(opts.num_heads), int(opts.heads_dim)
  mlp_dims = tuple(int(d) for d in opts.mlp_hidden_dims)
  layer_norm = bool(opts.use_layer_norm)
  width = n_heads * d_head
  rescale = bool(cfg.get('rescale_inputs', False))
  envelope = envelopes_lib.make(cfg.envelope_type, int(cfg.get('num_envelopes', 16)))
  if envelope.pre_orbital:
    raise ValueError(f'the Psiformer takes pre-determinant envelopes, not {cfg.envelope_type!r}')
  jastrow = jastrow_lib.make(cfg.get('jastrow', 'default'), 'psiformer', spins)
  occupied = [k for k, s in enumerate(spins) if s]
  slices = ops.spin_slices(spins)
  spin_feature = np.repeat(np.array([1.0, -1.0]), spins)[:, None]

  def init(key: jax.Array) -> Any:
    keys = iter(jax.random.split(key, 6 * n_layers + len(mlp_dims) * n_layers + 4))
    params: dict[str, Any] = {
      'embed': ops.dense_init(next(keys), 4 * n_atoms + 1, width, bias=False),
      'layers': [],
    }
    for _ in range(n_layers):
      layer = {
        name: ops.dense_init(next(keys), width, width, bias=False) for name in ('q', 'k', 'v', 'o')
      }
      dims = (width,) + mlp_dims + (width,)
      layer['mlp'] = [
        ops.dense_init(next(keys), a, b) for a, b in zip(dims[:-1], dims[1:], strict=True)
      ]
      if layer_norm:
        for name in ('norm_attention', 'norm_mlp'):
          layer[name] = {'scale': jnp.ones((width,)), 'offset': jnp.zeros((width,))}
      params['layers'].append(layer)
    params['orbital'] = [
      ops.dense_init(next(keys), width, n_det * n, bias=cfg.bias_orbitals) for _ in occupied
    ]
    params['envelope'] = [envelope.init(n_atoms, n_det * n, dtype) for _ in occupied]
    if jastrow:
      params['jastrow'] = jastrow.init(dtype)
    return jax.tree.map(lambda a: a.astype(dtype), params)

  def attention(view, p: dict, h: jax.Array) -> jax.Array:
    q, k, v = (view.dense(p[name], h).reshape(n, n_heads, d_head) for name in 'qkv')
    logits = jnp.einsum('ihd,jhd->hij', q, k) / np.sqrt(d_head)
    mixed = jnp.einsum('hij,jhd->ihd', jax.nn.softmax(logits, axis=-1), v)
    return view.dense(p['o'], mixed.reshape(n, width))

  def matrices(view, params: Any, x: jax.Array) -> list[jax.Array]:
    if view.laplacian:
      raise NotImplementedError('the Psiformer has no forward-Laplacian view (folx is used)')
    pos = x.reshape(n, 3)
    centres = jnp.asarray(nuclei, x.dtype)
    one = view.electrons(
      lambda d, r: ferminet_lib._rescaled(d, r, rescale).reshape(-1), pos, centres
    )
    h = view.dense(params['embed'], jnp.concatenate([one, spin_feature.astype(x.dtype)], axis=-1))
    for layer in params['layers']:
      h = h + attention(view, layer, h)
      if layer_norm:
        h = _layer_norm(view, layer['norm_attention'], h)
      m = h
      for p in layer['mlp']:
        m = view.tanh(view.dense(p, m))
      h = h + m
      if layer_norm:
        h = _layer_norm(view, layer['norm_mlp'], h)
    mats = []
    for k, p_orb, p_env in zip(occupied, params['orbital'], params['envelope'], strict=True):
      s = slices[k]
      phi = view.envelope(view.dense(p_orb, h[s]), envelope, p_env, pos[s], centres, s.start)
      mats.append(view.orbital_matrices(phi, n_det, n))
    return mats

  return ops.Architecture(
    init, matrices, spins, n_det, [n for _ in spins], True, jastrow, structured=False
  )


def widest_feature(cfg: ml_collections.ConfigDict, system: system_lib.System) -> int:
  """The widest per-electron vector (for the forward Laplacian's memory estimate)."""
  p = cfg.psiformer
  widths = [int(p.num_heads) * int(p.heads_dim), *(int(d) for d in p.mlp_hidden_dims)]
  return max(widths + [int(cfg.determinants) * system.n_electrons])
