"""The FermiNet's structured forward Laplacian against the exact Hessian loop."""

import jax
import numpy as np
import pytest
from conftest import tiny_network_cfg

from ferminet import hamiltonian, molecules, networks
from ferminet import system as system_lib


def _perturbed(params, key):
  """Parameters with envelopes away from their all-ones start (so σ and π matter)."""
  envelope = [
    jax.tree.map(lambda a, k=k: a * (1.0 + 0.3 * jax.random.uniform(k, a.shape)), e)
    for e, k in zip(params['envelope'], jax.random.split(key, len(params['envelope'])), strict=True)
  ]
  return {**params, 'envelope': envelope}


def _both(system, cfg, seed=0):
  net = networks.make(cfg, system)
  params = _perturbed(net.init(jax.random.PRNGKey(seed)), jax.random.PRNGKey(seed + 1))
  x = jax.random.normal(jax.random.PRNGKey(seed + 2), (system.n_electrons * 3,))
  exact = jax.jit(lambda y: hamiltonian.laplacian_hessian(lambda z: net.log_abs(params, z), y))
  structured = jax.jit(lambda y: net.laplacian(params, y))
  return exact(x), structured(x)


@pytest.mark.parametrize(
  'molecule, overrides',
  [
    # LiH (diagonal envelope) and N2 (isotropic, full_det; slow) are in test_hamiltonian.
    ('LiH', {'bias_orbitals': True, 'hidden_dims': ((8, 4), (8, 4), (6, 4))}),
    pytest.param(  # the full envelope's stack: test_ansatze.py::test_envelope_product
      'NH3', {'envelope_type': 'full', 'full_det': False}, marks=pytest.mark.slow
    ),
    # DeepMind's layers: residuals (h + tanh z)/sqrt(2), r_ii = 0 (0/0 on the diagonal).
    ('LiH', {'reference_layers': True, 'hidden_dims': ((8, 4), (8, 4), (8, 4))}),
  ],
)
def test_matches_hessian(molecule, overrides):
  """float64: Laplacian and gradient equal the exact Hessian loop's to 1e-10."""
  system = system_lib.make_system(molecules.build(molecule))
  overrides = dict(overrides)
  hidden = overrides.pop('hidden_dims', None)
  reference_layers = overrides.pop('reference_layers', False)
  cfg = tiny_network_cfg(**overrides)
  cfg.ferminet.reference_layers = reference_layers
  if hidden:  # a width change (no residual) after a residual layer
    cfg.ferminet.hidden_dims = hidden
  (lap_h, grad_h), (lap_s, grad_s) = _both(system, cfg)
  np.testing.assert_allclose(lap_s, lap_h, rtol=1e-10)
  np.testing.assert_allclose(grad_s, grad_h, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize('symbol, charge', [('H', 0), ('Li', 0)])
def test_small_spin_channels(symbol, charge):
  """An empty β channel (H) and a one-electron one (Li) need no special case."""
  system = system_lib.make_system([system_lib.Atom(symbol)], charge=charge)
  (lap_h, grad_h), (lap_s, grad_s) = _both(system, tiny_network_cfg(full_det=False))
  np.testing.assert_allclose(lap_s, lap_h, rtol=1e-10)
  np.testing.assert_allclose(grad_s, grad_h, rtol=1e-10, atol=1e-12)
