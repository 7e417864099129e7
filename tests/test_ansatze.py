"""Ansätze beyond the basic FermiNet, and the views they are built from.

- every operation of the forward-Laplacian view (``ops.Stacks``) against
  ``jax.hessian`` of the same operation in the plain view (``ops.Values``);
- the reference's FermiNet options and the Psiformer: forward Laplacian (or folx)
  against the exact Hessian loop, antisymmetry, the tagged view equals the plain one;
- the simple_ee Jastrow factor gives Kato's electron–electron cusp.
All in float64 (conftest enables x64).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_network_cfg

from ferminet import checkpoint, hamiltonian, linalg, molecules, networks
from ferminet import system as system_lib
from ferminet.networks import envelopes, jastrow, ops
from ferminet.networks import ferminet as ferminet_lib

SPINS = (2, 1)  # three electrons: a pair of each kind, an α channel of two
N = sum(SPINS)
CENTRES = jnp.array([[0.0, 0.0, 0.0], [0.3, -0.2, 1.4]])
X = jnp.array([0.4, -0.3, 0.2, -0.5, 0.6, 0.9, 0.1, 0.7, -0.8])


def _derivatives(values_fn, stacks_fn, x):
  """The stacks, and the values with their Jacobian and Hessian, in one compilation."""
  return jax.jit(
    lambda y: (stacks_fn(y), values_fn(y), jax.jacfwd(values_fn)(y), jax.hessian(values_fn)(y))
  )(x)


def _check_one_electron(values_fn, stacks_fn, x=X):
  """Stack rows (n, R, f) of stacks_fn(x) == value, Jacobian, Laplacian of values_fn."""
  out, value, jac, hess = _derivatives(values_fn, stacks_fn, x)  # jac (n, f, 3N)
  lap = jnp.trace(hess, axis1=-2, axis2=-1)
  np.testing.assert_allclose(out[:, 0], value, rtol=1e-12, atol=1e-12)
  np.testing.assert_allclose(out[:, 1:-1], jnp.swapaxes(jac, 1, 2), rtol=1e-10, atol=1e-12)
  np.testing.assert_allclose(out[:, -1], lap, rtol=1e-10, atol=1e-10)


def _check_pairs(values_fn, stacks_fn, x=X):
  """Pair stack (n, n, 5, f): value, ∂/∂r_i, Laplacian over both electrons."""
  out, value, jac, hess = _derivatives(values_fn, stacks_fn, x)
  jac = jac.reshape(N, N, -1, N, 3)  # (i, j, f, k, 3)
  own = jac[np.arange(N)[:, None], np.arange(N)[None], :, np.arange(N)[:, None]]  # k = i
  lap = jnp.trace(hess, axis1=-2, axis2=-1)
  np.testing.assert_allclose(out[:, :, 0], value, rtol=1e-12, atol=1e-12)
  np.testing.assert_allclose(out[:, :, 1:4], jnp.swapaxes(own, -1, -2), rtol=1e-10, atol=1e-12)
  np.testing.assert_allclose(out[:, :, 4], lap, rtol=1e-10, atol=1e-10)


def _views():
  return ops.Values(SPINS), ops.Stacks(SPINS)


@pytest.mark.parametrize('rescale', [False, True])
def test_electron_features(rescale):
  fn = lambda d, r: ferminet_lib.vector_features(d, r, rescale).reshape(-1)  # noqa: E731
  values, stacks = _views()
  _check_one_electron(
    lambda x: values.electrons(fn, x.reshape(N, 3), CENTRES),
    lambda x: stacks.electrons(fn, x.reshape(N, 3), CENTRES),
  )


@pytest.mark.parametrize('rescale, zero_self', [(False, True), (True, True), (False, False)])
def test_pair_features(rescale, zero_self):
  fn = lambda d, r: ferminet_lib.vector_features(d, r, rescale)  # noqa: E731
  values, stacks = _views()
  _check_pairs(
    lambda x: values.pairs(fn, x.reshape(N, 3), zero_self),
    lambda x: stacks.pairs(fn, x.reshape(N, 3), zero_self),
  )


def _streams(view, x):
  """A one-electron and a pair stream after one tanh layer each (widths 5 and 3)."""
  pos = x.reshape(N, 3)
  one = view.electrons(
    lambda d, r: ferminet_lib.vector_features(d, r, False).reshape(-1), pos, CENTRES
  )
  two = view.pairs(lambda d, r: ferminet_lib.vector_features(d, r, False), pos, True)
  keys = jax.random.split(jax.random.PRNGKey(0), 2)
  one = view.tanh(view.dense(ops.dense_init(keys[0], 8, 5), one))
  two = view.tanh(view.dense(ops.dense_init(keys[1], 4, 3), two), pair=True)
  return one, two


@pytest.mark.parametrize(
  'op', ['one_electron_layer', 'symmetric_features', 'attention', 'layer_norm']
)
def test_layer_ops(op):
  p = ops.dense_init(jax.random.PRNGKey(1), 3 * 5 + 2 * 3, 6)
  qkv = [ops.dense_init(k, 6, 4, bias=False) for k in jax.random.split(jax.random.PRNGKey(2), 3)]
  norm = {'scale': jnp.array([0.5, 1.5, -1.0, 2.0, 0.7, 1.1]), 'offset': jnp.arange(6.0)}

  def build(view, x):
    one, two = _streams(view, x)
    if op == 'one_electron_layer':
      return view.tanh(view.one_electron_layer(p, one, two))
    if op == 'symmetric_features':
      return view.symmetric_features(one, two)
    spins = jnp.asarray(np.array([[1.0], [1.0], [-1.0]]))  # a constant feature
    h = view.dense(ops.dense_init(jax.random.PRNGKey(3), 6, 6), view.with_constant(one, spins))
    if op == 'layer_norm':
      return view.layer_norm(norm, h, 1e-5)
    q, k, v = (view.dense(w, h).reshape(h.shape[:-1] + (2, 2)) for w in qkv)  # 2 heads of 2
    return view.attention(q, k, v).reshape(h.shape[:-1] + (4,))

  values, stacks = _views()
  _check_one_electron(lambda x: build(values, x), lambda x: build(stacks, x))


@pytest.mark.parametrize('kind', ['isotropic', 'diagonal', 'full', 'null', 'bottleneck', 'sto'])
def test_envelope_product(kind):
  env = envelopes.make(kind, num_envelopes=3)
  p = jax.tree.map(
    lambda a: a * (1.0 + 0.3 * jnp.cos(jnp.arange(a.size).reshape(a.shape))),
    env.init(2, 5, jnp.float64),
  )
  if kind == 'sto':
    p['n'] = jnp.full_like(p['n'], 0.2)  # a power of e^0.2, not ~0: the log term matters

  def build(view, x):
    one, _ = _streams(view, x)
    s = slice(1, 3)  # electrons 1 and 2: rows of another electron than their own
    return view.envelope(one[s], env, p, x.reshape(N, 3)[s], CENTRES, s.start)

  values, stacks = _views()
  _check_one_electron(lambda x: build(values, x), lambda x: build(stacks, x))


def test_pair_sum_is_the_jastrow_and_has_the_cusps():
  jas = jastrow.simple_ee(SPINS)
  p = {'ee_par': jnp.array([0.7]), 'ee_anti': jnp.array([1.3])}
  values, stacks = _views()
  fn = jas.pair_fn(p)
  f = lambda x: values.pair_sum(fn, x.reshape(N, 3))  # noqa: E731
  (value, grad, lap), plain, hess = jax.jit(
    lambda x: (stacks.pair_sum(fn, x.reshape(N, 3)), f(x), jax.hessian(f)(x))
  )(X)
  np.testing.assert_allclose(value, plain, rtol=1e-12)
  np.testing.assert_allclose(grad, jax.jit(jax.grad(f))(X), rtol=1e-10)
  np.testing.assert_allclose(lap, jnp.trace(hess), rtol=1e-10)
  # Explicitly: u(r) = -c α²/(α + r) summed over the pairs, slope c at r = 0.
  pos = X.reshape(N, 3)
  r = lambda i, j: jnp.linalg.norm(pos[i] - pos[j])  # noqa: E731
  u = lambda r, c, a: -c * a**2 / (a + r)  # noqa: E731
  expected = u(r(0, 1), 0.25, 0.7) + u(r(0, 2), 0.5, 1.3) + u(r(1, 2), 0.5, 1.3)
  np.testing.assert_allclose(value, expected, rtol=1e-12)
  same = jnp.asarray(ops.same_spin(SPINS))
  slope = jax.jvp(fn, (jnp.zeros((N, N)),), (jnp.ones((N, N)),))[1]
  np.testing.assert_allclose(slope, jnp.where(same, 0.25, 0.5))


LIH = system_lib.make_system(
  molecules.build('LiH', bond_length=2.5), charge=-1, spin_polarisation=1
)


_BUILT = {}


def _network(network_type='ferminet', **options):
  """The network and perturbed parameters, built once per setting for the module."""
  key = (network_type, tuple(sorted(options.items())))
  if key not in _BUILT:
    _BUILT[key] = _build(network_type, **options)
  return _BUILT[key]


def _build(network_type, **options):
  cfg = tiny_network_cfg()
  cfg.network_type = network_type
  cfg.psiformer.update(num_layers=1, num_heads=2, heads_dim=4, mlp_hidden_dims=(6,))
  for key, value in options.items():
    (cfg.ferminet if key in ('use_last_layer', 'separate_spin_channels') else cfg)[key] = value
  net = networks.make(cfg, LIH)
  # Away from the initial values (σ = π = 1, α = 1, layer norm scale 1) so they matter.
  params = jax.jit(
    lambda key: jax.tree.map(
      lambda a: a * (1.0 + 0.2 * jnp.sin(jnp.arange(a.size).reshape(a.shape) + 1.0)),
      net.init(key),
    )
  )(jax.random.PRNGKey(0))
  return net, params


# Every new FermiNet option in one network, and the envelopes that change the
# layout (pre-orbital sto, parameter-free null) in spin-factored determinants.
NETWORKS = {
  'ferminet options': (
    'ferminet',
    dict(
      jastrow='simple_ee',
      use_last_layer=True,
      separate_spin_channels=True,
      rescale_inputs=True,
      envelope_type='bottleneck',
      num_envelopes=3,
    ),
  ),
  'sto, spin-factored': ('ferminet', dict(envelope_type='sto', full_det=False)),
  'null envelope': ('ferminet', dict(envelope_type='null', jastrow='simple_ee')),
  'psiformer': ('psiformer', dict(rescale_inputs=True)),
}


# The two layouts' envelopes are tested as operations in the default run.
SLOW = {'sto, spin-factored', 'null envelope'}


@pytest.fixture(
  scope='module',
  params=[pytest.param(n, marks=[pytest.mark.slow] if n in SLOW else []) for n in NETWORKS],
)
def built(request):
  return request.param, *_named(request.param)


def _named(name):
  network_type, options = NETWORKS[name]
  return _network(network_type, **options)


def _swap(x, i, j):
  pos = x.reshape(-1, 3)
  return pos.at[jnp.array([i, j])].set(pos[jnp.array([j, i])]).reshape(-1)


def test_laplacian_matches_hessian(built):
  """float64: the network's forward Laplacian and gradient equal the exact Hessian
  loop's to 1e-10."""
  _, net, params = built
  x = 1.2 * jax.random.normal(jax.random.PRNGKey(3), (LIH.n_electrons * 3,))
  f = lambda y: net.log_abs(params, y)  # noqa: E731
  lap_h, grad_h = jax.jit(lambda y: hamiltonian.laplacian_hessian(f, y))(x)
  lap, grad = jax.jit(lambda y: net.laplacian(params, y))(x)
  np.testing.assert_allclose(lap, lap_h, rtol=1e-10)
  np.testing.assert_allclose(grad, grad_h, rtol=1e-10, atol=1e-12)


def test_antisymmetric_and_tagged_equals_plain(built):
  _, net, params = built
  x = 1.2 * jax.random.normal(jax.random.PRNGKey(4), (LIH.n_electrons * 3,))
  apply = jax.jit(net.apply)
  sign, log = apply(params, x)
  assert np.isfinite(log)
  for i, j in [(0, 1), (1, 2), (3, 4)]:  # α–α and β–β swaps
    sign_s, log_s = apply(params, _swap(x, i, j))
    assert sign_s == -sign
    np.testing.assert_allclose(log_s, log, rtol=1e-10, atol=1e-10)
  _, log_ab = apply(params, _swap(x, 0, 3))
  assert abs(log_ab - log) > 1e-6  # α–β is no symmetry
  np.testing.assert_allclose(jax.jit(net.log_abs_tagged)(params, x), log, rtol=1e-12)
  # Pretraining's orbitals give the same ψ (the Jastrow inside, as the reference).
  mats = jax.jit(net.orbitals)(params, x)
  if mats[0].shape[-1] == LIH.n_electrons:  # full determinant
    s, logdets = linalg.slogdet(jnp.concatenate(mats, axis=1))
  else:
    logdets = jnp.sum(jnp.stack([linalg.slogdet(m)[1] for m in mats]), axis=0)
    s = jnp.prod(jnp.stack([linalg.slogdet(m)[0] for m in mats]), axis=0)
  np.testing.assert_allclose(networks.logdet_sum(s, logdets)[1], log, rtol=1e-10)


def test_psiformer_has_the_antiparallel_cusp():
  """The Psiformer sees no electron–electron features, so at the coalescence of an α
  and a β electron its only kink is the Jastrow's: the mean slope of log|ψ| over two
  opposite directions is 1/2 (Kato), the smooth rest cancelling."""
  net, params = _named('psiformer')
  x = 1.2 * jax.random.normal(jax.random.PRNGKey(5), (LIH.n_electrons * 3,))
  pos = x.reshape(-1, 3)
  pos = pos.at[3].set(pos[0])  # β electron 3 on α electron 0
  u = jnp.array([0.6, -0.48, 0.64])
  log = jax.jit(net.log_abs)
  eps = 1e-4
  moved = lambda t: log(params, pos.at[3].add(t * u).reshape(-1))  # noqa: E731
  slope = (moved(eps) + moved(-eps) - 2 * moved(0.0)) / (2 * eps)
  np.testing.assert_allclose(slope, 0.5, rtol=2e-3)


def test_parameter_layout_of_the_options():
  """What each option adds: pair weights in the last layer, separate same/opposite
  pair weights, the bottleneck's mixing, the Jastrow's two α."""
  net, _ = _named('ferminet options')
  params = jax.eval_shape(net.init, jax.random.PRNGKey(0))
  assert 'double' in params['layers'][-1]
  assert isinstance(params['layers'][0]['double'], list) and len(params['layers'][0]['double']) == 2
  assert params['envelope'][0]['w'].shape == (3, 2 * LIH.n_electrons)
  assert set(params['jastrow']) == {'ee_par', 'ee_anti'}
  width = 3 * 8 + 2 * 4  # use_last_layer: [h_i, 2 spin means of h, 2 of h_ij]
  assert params['orbital'][0]['w'].shape[0] == width
  assert ferminet_lib.widest_feature(tiny_network_cfg(), LIH) == 2 * LIH.n_electrons


ANSATZ_FLAGS = {
  'psiformer': [
    '--config.network.network_type=psiformer',
    '--config.network.psiformer.num_layers=1',
    '--config.network.psiformer.num_heads=2',
    '--config.network.psiformer.heads_dim=4',
    '--config.network.psiformer.mlp_hidden_dims=(8,)',
    '--config.network.rescale_inputs=True',
    '--config.network.full_det=False',  # ignored by the Psiformer (as the reference)
  ],
  'ferminet options': [
    '--config.network.jastrow=simple_ee',
    '--config.network.ferminet.use_last_layer=True',
    '--config.network.ferminet.separate_spin_channels=True',
    '--config.network.envelope_type=bottleneck',
    '--config.network.num_envelopes=4',
  ],
}


@pytest.mark.slow  # about 40 s per ansatz
@pytest.mark.parametrize('ansatz', list(ANSATZ_FLAGS))
def test_cli_trains_checkpoints_and_continues_on_two_devices(ansatz, tmp_path):
  """From the command line on 2 devices: --dry_run names the ansatz and counts its
  parameters; pretraining and KFAC run; a second launch continues from the checkpoint."""
  import os

  from test_cli_errors import ATOM, TINY, _cli

  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=2', JAX_PLATFORMS='cpu')
  args = [*ATOM, '--config.system.atom=Li', *TINY, *ANSATZ_FLAGS[ansatz]]
  save = f'--config.log.save_path={tmp_path}'
  dry = _cli(*args, save, '--dry_run', env=env)
  assert dry.returncode == 0, dry.stderr[-2000:]
  ansatz_line = next(line for line in dry.stdout.splitlines() if line.startswith('ansatz:'))
  assert ('psiformer' in ansatz_line) == (ansatz == 'psiformer'), ansatz_line
  n_params = int(
    next(ln for ln in dry.stdout.splitlines() if ln.startswith('parameters:')).split()[1]
  )
  first = _cli(*args, save, '--config.optim.iterations=4', env=env)
  assert first.returncode == 0, first.stderr[-3000:]
  assert 'energy_Ha:' in first.stdout
  assert 'kinetic energy: folx' not in first.stdout  # both have their own forward Laplacian
  second = _cli(*args, save, '--config.optim.iterations=6', env=env)
  assert second.returncode == 0, second.stderr[-3000:]
  steps = [
    int(r.split(',')[0]) for r in (tmp_path / 'train_stats.csv').read_text().splitlines()[1:]
  ]
  assert steps == list(range(6))
  saved = checkpoint.load(tmp_path / 'ckpt_00000006_final.pkl')
  assert networks.count_parameters(saved['params']) == n_params
