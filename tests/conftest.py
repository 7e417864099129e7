"""Shared test set-up: float64 everywhere and tiny networks (compile time dominates)."""

import os

import jax
import ml_collections
import pytest

jax.config.update('jax_enable_x64', True)
# No persistent compilation cache in the tests, in this process or the CLIs they start: each
# run compiles as on a fresh machine (debug.compilation_cache leaves JAX's variable alone).
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR', '')

from ferminet import config as config_lib  # noqa: E402


def tiny_network_cfg(**overrides) -> ml_collections.ConfigDict:
  """A network config small enough to compile in about a second."""
  cfg = config_lib.default().network
  cfg.determinants = 2
  cfg.ferminet.hidden_dims = ((8, 4), (8, 4))
  for key, value in overrides.items():
    cfg[key] = value
  return cfg


@pytest.fixture
def tiny_network():
  return tiny_network_cfg
