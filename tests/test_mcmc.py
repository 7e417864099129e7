"""Metropolis sampling: known densities, width adaptation, initial walkers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ferminet import mcmc
from ferminet import system as system_lib


def test_samples_hydrogen_1s_density():
  """|ψ|² = exp(-2r)/π: ⟨r⟩ = 1.5 bohr and ⟨r²⟩ = 3 bohr²."""
  step = jax.jit(mcmc.make_step(lambda p, x: -2.0 * jnp.linalg.norm(x), steps=5))
  n = 2000
  key = jax.random.PRNGKey(0)
  x = jax.random.normal(key, (n, 3))
  log_p = -2.0 * jnp.linalg.norm(x, axis=-1)
  ids = jnp.arange(n)
  width = 0.5
  for i in range(40):  # equilibrate and adapt the width
    x, log_p, pmove = step(None, x, log_p, jax.random.PRNGKey(i + 1), ids, width)
    width = float(mcmc.adapt_width(width, pmove, 0.5))
  r_sum, r2_sum, n_samples = np.zeros(n), np.zeros(n), 60
  for i in range(n_samples):
    x, log_p, pmove = step(None, x, log_p, jax.random.PRNGKey(100 + i), ids, width)
    r = np.linalg.norm(np.asarray(x), axis=-1)
    r_sum += r
    r2_sum += r**2
  # Walkers are independent: the spread of their time averages gives the error bar.
  r_walker = r_sum / n_samples
  r_mean, r_err = r_walker.mean(), r_walker.std(ddof=1) / np.sqrt(n)
  assert abs(r_mean - 1.5) < 4 * r_err, (r_mean, r_err)
  r2_walker = r2_sum / n_samples
  assert abs(r2_walker.mean() - 3.0) < 4 * r2_walker.std(ddof=1) / np.sqrt(n)
  assert abs(float(pmove) - 0.5) < 0.1


def test_width_adaptation_reaches_target_quickly():
  """From the default 0.02 bohr the acceptance reaches 0.5 ± 0.1 within 20 iterations."""
  step = jax.jit(
    mcmc.make_step(lambda p, x: -2.0 * jnp.sum(jnp.linalg.norm(x.reshape(-1, 3), axis=-1)), 10)
  )
  x = jax.random.normal(jax.random.PRNGKey(0), (256, 9))
  log_p = -2.0 * jnp.sum(jnp.linalg.norm(x.reshape(256, 3, 3), axis=-1), axis=-1)
  ids = jnp.arange(256)
  width, trace = 0.02, []
  for i in range(40):
    x, log_p, pmove = step(None, x, log_p, jax.random.PRNGKey(i), ids, width)
    trace.append(float(pmove))
    width = float(mcmc.adapt_width(width, pmove, 0.5))
  assert trace[0] > 0.9  # the default width is far too small
  assert all(abs(p - 0.5) < 0.1 for p in trace[20:]), trace


@pytest.mark.parametrize(
  'atoms, kwargs',
  [
    ([('O', (0, 0, 0)), ('O', (2.28, 0, 0))], {'spin_polarisation': 2}),  # triplet O2
    ([('Li', (0, 0, 0)), ('H', (3.0, 0, 0))], {'charge': 1}),
    ([('H', (0, 0, 0)), ('H', (1.4, 0, 0))], {'charge': -1}),
    ([('N', (0, 0, 0))], {'charge': -2, 'spin_polarisation': 5}),
    ([('C', (0, 0, 0)), ('H', (2, 0, 0))], {'spin_polarisation': 5}),
  ],
)
def test_initial_walkers_any_charge_and_spin(atoms, kwargs):
  system = system_lib.make_system([system_lib.Atom(s, c) for s, c in atoms], **kwargs)
  per_atom = mcmc.electrons_per_atom(system)
  assert tuple(np.sum(per_atom, axis=0)) == system.electrons
  walkers = mcmc.init_walkers(jax.random.PRNGKey(0), system, 16, 0.5)
  assert walkers.shape == (16, system.n_electrons * 3)
  # Every electron starts near a nucleus.
  pos = np.asarray(walkers).reshape(16, -1, 3)
  dist = np.linalg.norm(pos[:, :, None] - system.coords[None, None], axis=-1).min(-1)
  assert np.median(dist) < 1.5


def test_samples_do_not_depend_on_the_split_of_walkers():
  """Per-walker random numbers: stepping 8 walkers at once or as 2 + 6 gives the same walkers."""
  step = jax.jit(mcmc.make_step(lambda p, x: -2.0 * jnp.sum(jnp.abs(x)), steps=3))
  x = jax.random.normal(jax.random.PRNGKey(0), (8, 6))
  log_p = -2.0 * jnp.sum(jnp.abs(x), axis=-1)
  key, ids = jax.random.PRNGKey(7), jnp.arange(8)
  whole, _, _ = step(None, x, log_p, key, ids, 0.3)
  parts = [step(None, x[s], log_p[s], key, ids[s], 0.3)[0] for s in (slice(0, 2), slice(2, 8))]
  np.testing.assert_array_equal(np.asarray(whole), np.concatenate(parts))
  assert not np.array_equal(np.asarray(whole), np.asarray(x))
