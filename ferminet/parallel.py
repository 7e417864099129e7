"""Devices: the pmap axis, means over devices, replication and sharding helpers.

Arrays that live on every local device carry a leading axis of size
``jax.local_device_count()`` and are processed with ``jax.pmap`` over
``AXIS``. Walkers are sharded over that axis; parameters are replicated.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

AXIS = 'devices'


def pmean(x: Any) -> Any:
  """Mean over all devices (inside a pmapped function)."""
  return jax.lax.pmean(x, AXIS)


def device_count() -> int:
  return jax.local_device_count()


def replicate(tree: Any) -> Any:
  """Adds a leading device axis by copying ``tree`` to every local device."""
  n = device_count()
  return jax.tree.map(lambda x: jnp.broadcast_to(jnp.asarray(x), (n, *jnp.shape(x))), tree)


def shard(x: jax.Array) -> jax.Array:
  """Splits the leading (walker) axis of x over local devices: (B, ...) -> (D, B/D, ...)."""
  n = device_count()
  return x.reshape(n, x.shape[0] // n, *x.shape[1:])


def unshard(x: jax.Array) -> jax.Array:
  """Inverse of :func:`shard`: (D, B/D, ...) -> (B, ...)."""
  return x.reshape(-1, *x.shape[2:])


def first(tree: Any) -> Any:
  """The copy of a replicated tree held by the first device, on the host."""
  return jax.device_get(jax.tree.map(lambda x: x[0], tree))


def device_keys(key: jax.Array) -> jax.Array:
  """One PRNG key per local device, shape (D, 2)."""
  return jax.random.split(key, device_count())
