"""FermiNet ansatz: antisymmetry, finiteness for one-electron channels, determinant sums."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_network_cfg

from ferminet import molecules, networks
from ferminet import system as system_lib
from ferminet.networks import ops

# Li–H at a stretched geometry with 3 α and 2 β electrons: both spin channels
# have pairs to swap, and two nuclei make the envelopes anisotropic.
SYSTEM = system_lib.make_system(
  molecules.build('LiH', bond_length=2.5), charge=-1, spin_polarisation=1
)


def _walker(key, n):
  return jax.random.normal(key, (n * 3,)) * 1.5


def _swap(x, i, j):
  pos = x.reshape(-1, 3)
  return pos.at[jnp.array([i, j])].set(pos[jnp.array([j, i])]).reshape(-1)


@pytest.mark.parametrize(
  'envelope, full_det', list(itertools.product(['isotropic', 'diagonal', 'full'], [True, False]))
)
def test_antisymmetry(envelope, full_det):
  cfg = tiny_network_cfg(envelope_type=envelope, full_det=full_det)
  net = networks.make(cfg, SYSTEM)
  params = net.init(jax.random.PRNGKey(1))
  if envelope == 'full':  # break the identity initialisation so the test can fail
    params['envelope'] = jax.tree.map(
      lambda a: a + 0.3 * jax.random.normal(jax.random.PRNGKey(2), a.shape), params['envelope']
    )
  x = _walker(jax.random.PRNGKey(0), SYSTEM.n_electrons)
  apply = jax.jit(net.apply)
  sign, log = apply(params, x)
  assert np.isfinite(log)
  for i, j in [(0, 1), (0, 2), (1, 2), (3, 4)]:  # α–α and β–β swaps
    sign_s, log_s = apply(params, _swap(x, i, j))
    assert sign_s == -sign
    np.testing.assert_allclose(log_s, log, rtol=1e-10, atol=1e-10)
  # Swapping an α with a β electron is not a symmetry of the ansatz.
  _, log_ab = apply(params, _swap(x, 0, 3))
  assert abs(log_ab - log) > 1e-6


@pytest.mark.parametrize(
  'symbol, full_det', [('H', True), ('H', False), ('Li', False), ('Li', True)]
)
def test_one_electron_channels_finite(symbol, full_det):
  system = system_lib.make_system([system_lib.Atom(symbol)])
  net = networks.make(tiny_network_cfg(full_det=full_det), system)
  params = net.init(jax.random.PRNGKey(0))
  x = _walker(jax.random.PRNGKey(3), system.n_electrons)
  log, grad = jax.value_and_grad(net.log_abs, argnums=(0, 1))(params, x)
  assert np.isfinite(log)
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grad))


def test_logdet_sum_matches_direct_sum():
  signs = jnp.array([1.0, -1.0, 1.0])
  logs = jnp.array([-700.0, -699.5, -702.0])  # exp underflows in float64 without the shift
  sign, log = networks.logdet_sum(signs, logs)
  direct = 1.0 - np.exp(0.5) + np.exp(-2.0)  # in units of exp(-700)
  assert sign == np.sign(direct)
  np.testing.assert_allclose(log, -700.0 + np.log(abs(direct)), rtol=1e-12)


def test_full_det_is_determinant_sum_of_orbitals():
  """apply() is log|Σ_k det Φ_k| of the orbital matrices it exposes."""
  net = networks.make(tiny_network_cfg(), SYSTEM)
  params = net.init(jax.random.PRNGKey(4))
  x = _walker(jax.random.PRNGKey(5), SYSTEM.n_electrons)
  mats = net.orbitals(params, x)
  assert [m.shape for m in mats] == [(2, 3, 5), (2, 2, 5)]
  psi = np.sum(np.linalg.det(np.concatenate([np.asarray(m) for m in mats], axis=1)))
  sign, log = net.apply(params, x)
  np.testing.assert_allclose(sign * np.exp(log), psi, rtol=1e-10)


def test_default_parameter_count_and_decay():
  """Default network size is the paper's; ψ decays far from the nuclei (the envelope)."""
  system = system_lib.make_system([system_lib.Atom('Li')])
  from ferminet import config

  net = networks.make(config.default().network, system)
  params = jax.eval_shape(net.init, jax.random.PRNGKey(0))
  # Hand count for Li (1 atom, 3 electrons, 16 determinants, hidden ((256, 32),) * 4):
  first = (3 * 4 + 2 * 4) * 256 + 256 + 4 * 32 + 32  # one- and two-electron layer 1
  middle = 3 * ((3 * 256 + 2 * 32) * 256 + 256) + 2 * (32 * 32 + 32)
  orbitals = 2 * (256 * 16 * 3) + 2 * 2 * 16 * 3  # weights, envelope pi and sigma
  assert networks.count_parameters(params) == first + middle + orbitals
  small = networks.make(tiny_network_cfg(), system)
  p = small.init(jax.random.PRNGKey(0))
  x = _walker(jax.random.PRNGKey(1), 3)
  assert small.log_abs(p, x * 20) < small.log_abs(p, x) - 10


@pytest.mark.parametrize('bias', [True, False])
def test_split_dense_is_dense_on_concatenated_inputs(bias):
  """A one-electron layer applied to the spin means once equals the plain dense layer on
  [h_i, mean_α h, mean_β h, mean_α h_i·, mean_β h_i·] (7 electrons, widths 5 and 3)."""
  keys = jax.random.split(jax.random.PRNGKey(3), 6)
  h = jax.random.normal(keys[0], (7, 5))
  means = [jax.random.normal(k, (1, 5)) for k in keys[1:3]]
  pairs = [jax.random.normal(k, (7, 3)) for k in keys[3:5]]
  p = ops.dense_init(keys[5], 3 * 5 + 2 * 3, 4, bias=bias)
  concatenated = jnp.concatenate([h] + [jnp.broadcast_to(m, h.shape) for m in means] + pairs, -1)
  np.testing.assert_allclose(
    ops._split_dense(p, h, means, pairs), networks.dense(p, concatenated), rtol=1e-12
  )


def test_kfac_form_matches_plain():
  """log|ψ| as KFAC sees it (every layer and the envelope tagged) equals the plain one,
  values and gradients, to rounding."""
  net = networks.make(tiny_network_cfg(), SYSTEM)
  params = net.init(jax.random.PRNGKey(0))
  params['envelope'][0]['sigma'] = params['envelope'][0]['sigma'].at[0, 0].set(-0.7)  # |σ| used
  x = _walker(jax.random.PRNGKey(1), sum(SYSTEM.electrons))
  np.testing.assert_allclose(net.log_abs_tagged(params, x), net.log_abs(params, x), rtol=1e-13)
  g_plain = jax.grad(net.log_abs)(params, x)
  g_tagged = jax.grad(net.log_abs_tagged)(params, x)
  for a, b in zip(jax.tree.leaves(g_plain), jax.tree.leaves(g_tagged), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-13)
  assert float(g_plain['envelope'][0]['sigma'][0, 0]) != 0.0
