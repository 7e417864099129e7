"""KFAC's step is the reference's: the natural gradient F⁻¹g of |ψ|², checked densely.

For log|ψ| = φ(x)·w, linear in its parameters with one output, the Kronecker
factors are exact (the output-side factor is a constant), so kfac-jax's first
step (debiased statistics, tiny damping, a norm constraint that does not bind)
must equal -lr F⁻¹g with F = 4⟨φφᵀ⟩ (the Fisher of |ψ|² in the uncentred form
kfac-jax estimates) and g = 2⟨(E_L - E)φ⟩ the energy gradient. Before the
gradient given to kfac-jax was halved (optimizers._half_gradient) the step was
twice that, unlike the reference's for the same lr.rate, damping and norm_constraint.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ferminet import config as config_lib
from ferminet import loss, optimizers, parallel
from ferminet.networks import ops


def _features(x):
  return jnp.stack([x[0], x[1] ** 2, jnp.sin(x[2]), 1.0 + 0.0 * x[0]])[None]  # (1, 4)


def _log_abs(params, x):
  return (_features(x) @ params['w'])[0, 0]


def _log_abs_tagged(params, x):
  phi = _features(x)
  return ops.tag_dense(phi @ params['w'], phi, params)[0, 0]


def _local_energy(params, key, x):
  return jnp.sum(x**2) - 1.5 + 0.3 * jnp.cos(x[0]), {}


@pytest.mark.compat
def test_kfac_step_is_the_natural_gradient_of_psi_squared():
  cfg = config_lib.default()
  cfg.optim.lr.rate = 0.1
  cfg.optim.kfac.damping = 1e-7
  cfg.optim.kfac.norm_constraint = 1e9
  residuals = loss.make_residuals(_local_energy, clip_local_energy=0.0)
  vmc = loss.make_loss(_log_abs, residuals, log_abs_tagged=_log_abs_tagged)
  optimizer = optimizers.make(vmc, cfg)
  walkers = jax.random.normal(jax.random.PRNGKey(0), (512, 3))
  w = jnp.array([[0.3], [-0.2], [0.5], [0.1]])
  params = parallel.replicate({'w': w})
  shard = parallel.shard(walkers)
  keys = parallel.same_keys(jax.random.PRNGKey(1))
  state = optimizer.init(params, keys, shard)
  new, _, energy, _ = optimizer.step(params, state, keys, shard)
  step = np.asarray(new['w'][0] - w, dtype=np.float64).ravel()

  phi = np.asarray(jax.vmap(_features)(walkers)[:, 0], dtype=np.float64)  # (B, 4)
  e_l = np.asarray(jax.vmap(lambda x: _local_energy(None, None, x)[0])(walkers), dtype=np.float64)
  fisher = 4 * phi.T @ phi / len(phi)
  gradient = 2 * phi.T @ (e_l - e_l.mean()) / len(phi)
  expected = -0.1 * np.linalg.solve(fisher, gradient)
  np.testing.assert_allclose(float(energy[0]), e_l.mean(), rtol=1e-5)
  np.testing.assert_allclose(step, expected, rtol=2e-3, atol=1e-6)
