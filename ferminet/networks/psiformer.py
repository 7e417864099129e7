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

Every view exists: in the forward-Laplacian stacks, attention and the layer norm
are written with the chain and product rules (``ops.Stacks.attention``,
``layer_norm``). Attention mixes every electron with every other, so after the
first layer every feature has a dense 3N-row Jacobian, as in folx; what the
stacks save is folx's bookkeeping (measured at N2 with the reference's sizes,
float32, 2 CPU cores: 70 local energies/s against folx's 62 and the Hessian
loop's 28).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ferminet import system as system_lib
from ferminet.networks import common as common_lib
from ferminet.networks import ferminet as ferminet_lib
from ferminet.networks import ops

LAYER_NORM_EPS = 1e-5


def make(
  cfg: ml_collections.ConfigDict, system: system_lib.System, dtype: Any = None
) -> ops.Architecture:
  """The Psiformer for ``system`` from ``cfg.network`` (``cfg.psiformer``: num_layers,
  num_heads, heads_dim, mlp_hidden_dims, use_layer_norm), in every view of ``ops``."""
  c = common_lib.common(cfg, system, dtype, 'psiformer')
  dtype, spins, n, nuclei, n_det = c.dtype, c.spins, c.n, c.nuclei, c.determinants
  envelope, jastrow, occupied, slices = c.envelope, c.jastrow, c.occupied, c.slices
  n_atoms = nuclei.shape[0]
  opts = cfg.psiformer
  n_layers, n_heads, d_head = int(opts.num_layers), int(opts.num_heads), int(opts.heads_dim)
  mlp_dims = tuple(int(d) for d in opts.mlp_hidden_dims)
  layer_norm = bool(opts.use_layer_norm)
  width = n_heads * d_head
  rescale = bool(cfg.rescale_inputs)
  if envelope.pre_orbital:
    raise ValueError(f'the Psiformer takes pre-determinant envelopes, not {cfg.envelope_type!r}')
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
    heads = h.shape[:-1] + (n_heads, d_head)  # (n, [rows,] heads, d)
    q, k, v = (view.dense(p[name], h).reshape(heads) for name in 'qkv')
    return view.dense(p['o'], view.attention(q, k, v).reshape(h.shape[:-1] + (width,)))

  def matrices(view, params: Any, x: jax.Array) -> list[jax.Array]:
    pos = x.reshape(n, 3)
    centres = jnp.asarray(nuclei, x.dtype)
    one = view.electrons(
      lambda d, r: ferminet_lib.vector_features(d, r, rescale).reshape(-1), pos, centres
    )
    h = view.dense(params['embed'], view.with_constant(one, jnp.asarray(spin_feature)))
    for layer in params['layers']:
      h = h + attention(view, layer, h)
      if layer_norm:
        h = view.layer_norm(layer['norm_attention'], h, LAYER_NORM_EPS)
      m = h
      for p in layer['mlp']:
        m = view.tanh(view.dense(p, m))
      h = h + m
      if layer_norm:
        h = view.layer_norm(layer['norm_mlp'], h, LAYER_NORM_EPS)
    mats = []
    for k, p_orb, p_env in zip(occupied, params['orbital'], params['envelope'], strict=True):
      s = slices[k]
      phi = view.envelope(view.dense(p_orb, h[s]), envelope, p_env, pos[s], centres, s.start)
      mats.append(view.orbital_matrices(phi, n_det, n))
    return mats

  return ops.Architecture(
    init, matrices, spins, n_det, [n for _ in spins], True, jastrow, structured=True
  )


def widest_feature(cfg: ml_collections.ConfigDict, system: system_lib.System) -> int:
  """The widest per-electron vector (for the forward Laplacian's memory estimate)."""
  p = cfg.psiformer
  widths = [int(p.num_heads) * int(p.heads_dim), *(int(d) for d in p.mlp_hidden_dims)]
  return max(widths + [int(cfg.determinants) * system.n_electrons])
