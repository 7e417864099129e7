"""Shared test set-up: float64 everywhere and tiny networks (compile time dominates)."""

import jax
import ml_collections
import pytest

jax.config.update('jax_enable_x64', True)

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
