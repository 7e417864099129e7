"""The VMC gradient estimator with clipping, against a hand computation."""

import jax
import jax.numpy as jnp
import numpy as np

from ferminet import loss, parallel


def test_clipped_gradient_matches_hand_computation():
  # log|ψ| = -a |x| + b x_0 on 3-d walkers; E_L is an arbitrary function with an outlier.
  def log_abs(p, x):
    return -p['a'] * jnp.linalg.norm(x) + p['b'] * x[0]

  def local_energy(p, k, x):
    return jnp.sum(x**2) * p['a'] - 1.0, {}

  walkers = jnp.array(
    [[0.1, 0.2, 0.3], [1.0, -0.5, 0.2], [-0.3, 0.4, 0.9], [0.5, 0.5, -0.5], [6.0, 5.0, 4.0]]
  )
  params = {'a': jnp.asarray(1.3), 'b': jnp.asarray(0.4)}
  vmc = loss.make_loss(log_abs, loss.make_residuals(local_energy, clip_local_energy=1.0))
  # pmean needs the device axis; a vmap over one "device" provides it.
  value_and_grad = jax.vmap(
    jax.value_and_grad(vmc, has_aux=True), in_axes=(None, None, 0), axis_name=parallel.AXIS
  )
  (energy, aux), grads = value_and_grad(params, jax.random.PRNGKey(0), walkers[None])

  x = np.asarray(walkers)
  e_l = 1.3 * np.sum(x**2, axis=1) - 1.0
  mean = e_l.mean()
  mad = np.mean(np.abs(e_l - mean))
  clipped = np.clip(e_l, mean - mad, mean + mad)
  assert clipped[-1] < e_l[-1]  # the outlier is clipped
  diff = clipped - clipped.mean()
  dlog_da = -np.linalg.norm(x, axis=1)
  dlog_db = x[:, 0]
  np.testing.assert_allclose(energy[0], mean, rtol=1e-12)
  np.testing.assert_allclose(aux.variance[0], np.mean((e_l - mean) ** 2), rtol=1e-12)
  np.testing.assert_allclose(grads['a'][0], 2 * np.mean(diff * dlog_da), rtol=1e-10)
  np.testing.assert_allclose(grads['b'][0], 2 * np.mean(diff * dlog_db), rtol=1e-10)


def test_unclipped_gradient_is_the_covariance():
  def log_abs(p, x):
    return p['c'] * jnp.sum(x)

  def local_energy(p, k, x):
    return jnp.sum(x) ** 2, {}

  walkers = jnp.array([[0.0, 1.0], [2.0, -1.0], [3.0, 3.0]])
  vmc = loss.make_loss(log_abs, loss.make_residuals(local_energy, clip_local_energy=0.0))
  grad = jax.vmap(
    jax.grad(lambda p, k, w: vmc(p, k, w)[0]), in_axes=(None, None, 0), axis_name=parallel.AXIS
  )({'c': jnp.asarray(0.7)}, jax.random.PRNGKey(0), walkers[None])
  s = np.asarray(walkers).sum(1)
  e_l = s**2
  np.testing.assert_allclose(grad['c'][0], 2 * np.mean((e_l - e_l.mean()) * s), rtol=1e-12)


def test_chunked_local_energies_match():
  """max_vmap_batch_size evaluates the same loss in chunks (with a remainder)."""

  def log_abs(p, x):
    return -p['a'] * jnp.linalg.norm(x)

  def local_energy(p, k, x):
    return jnp.sum(jnp.sin(x)) * p['a'], {}

  walkers = jax.random.normal(jax.random.PRNGKey(0), (1, 7, 3))
  params = {'a': jnp.asarray(0.9)}
  outputs = []
  for chunk in (0, 3):
    vmc = loss.make_loss(log_abs, loss.make_residuals(local_energy, max_vmap_batch_size=chunk))
    f = jax.vmap(
      jax.value_and_grad(vmc, has_aux=True), in_axes=(None, None, 0), axis_name=parallel.AXIS
    )
    outputs.append(f(params, jax.random.PRNGKey(0), walkers))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-12), *outputs)


def test_clipping_does_not_depend_on_the_device_layout():
  """The same walkers as 1 x 16 or 2 x 8 (vmap stands in for pmap): the same gradient, also
  with clip_median, whose centre is the median of all walkers (per device, the two
  layouts gave -13.0 and -13.6 for this gradient)."""

  def log_abs(p, x):
    return -p['a'] * jnp.linalg.norm(x) + p['b'] * x[0] ** 2

  def local_energy(p, k, x):
    return jnp.sum(x**3) * p['a'] - jnp.exp(x[1]), {}

  walkers = jax.random.normal(jax.random.PRNGKey(3), (16, 3)) * 1.5
  params = {'a': jnp.asarray(1.1), 'b': jnp.asarray(0.3)}
  x = np.asarray(walkers)
  e_l = 1.1 * np.sum(x**3, axis=1) - np.exp(x[:, 1])
  for median in (False, True):
    residuals = loss.make_residuals(local_energy, clip_local_energy=0.5, clip_median=median)
    vmc = loss.make_loss(log_abs, residuals)
    grad = jax.vmap(
      jax.grad(lambda p, k, w, f=vmc: f(p, k, w)[0]),
      in_axes=(None, None, 0),
      axis_name=parallel.AXIS,
    )
    one, two = (grad(params, jax.random.PRNGKey(0), walkers.reshape(d, 16 // d, 3)) for d in (1, 2))
    for name in params:  # each device's gradient is its share; the optimizers average them
      np.testing.assert_allclose(two[name].mean(0), one[name][0], rtol=1e-6)
    centre = np.median(e_l) if median else e_l.mean()
    mad = np.mean(np.abs(e_l - centre))
    clipped = np.clip(e_l, centre - 0.5 * mad, centre + 0.5 * mad)
    assert np.sum(clipped != e_l) >= 4  # clipping is active
    dlog_da = -np.linalg.norm(x, axis=1)
    expected = 2 * np.mean((clipped - clipped.mean()) * dlog_da)
    np.testing.assert_allclose(one['a'][0], expected, rtol=1e-5)


def test_penalties_are_minimised_but_not_reported():
  """A 'spin_penalty' term (optim.spin_energy · S²) enters the gradient, not the energy or
  variance: those are of the Hamiltonian's terms."""

  def log_abs(p, x):
    return -p['a'] * jnp.linalg.norm(x)

  def local_energy(p, k, x):
    terms = {'kinetic': p['a'] * jnp.sum(x**2), 'spin_penalty': 0.5 * x[0] ** 2}
    return sum(terms.values()), terms

  walkers = jax.random.normal(jax.random.PRNGKey(5), (1, 9, 3))
  params = {'a': jnp.asarray(0.8)}
  vmc = loss.make_loss(log_abs, loss.make_residuals(local_energy, clip_local_energy=0.0))
  f = jax.vmap(
    jax.value_and_grad(vmc, has_aux=True), in_axes=(None, None, 0), axis_name=parallel.AXIS
  )
  (energy, aux), grads = f(params, jax.random.PRNGKey(0), walkers)
  x = np.asarray(walkers[0])
  e_h = 0.8 * np.sum(x**2, axis=1)
  e_l = e_h + 0.5 * x[:, 0] ** 2
  np.testing.assert_allclose(energy[0], e_h.mean(), rtol=1e-12)
  np.testing.assert_allclose(aux.variance[0], e_h.var(), rtol=1e-12)
  dlog = -np.linalg.norm(x, axis=1)
  np.testing.assert_allclose(grads['a'][0], 2 * np.mean((e_l - e_l.mean()) * dlog), rtol=1e-10)
