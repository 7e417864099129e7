"""Envelopes: functions of one electron's position that make the orbitals decay.

Each kind (``config.ENVELOPES``) has parameters per occupied spin channel and

- ``apply(p, pos, centres, tag) -> (m, f)``: its values at m electrons pos (m, 3)
  bohr, centres (n_atoms, 3) bohr; ``tag`` registers its layers with kfac-jax;
- ``derivatives(p, pos, centres)``: value (m, f), gradient (m, 3, f) and
  Laplacian (m, f) for the forward-Laplacian view, by 3-dimensional autodiff of
  ``apply`` unless the kind has a rule of its own.

Pre-determinant envelopes (all but ``sto``) multiply the orbitals; ``sto``
multiplies the last one-electron features before the orbital layer (DeepMind's
FermiNet's ``PRE_ORBITAL`` type). With d_I = r - R_I:

- isotropic: Σ_I π_I exp(-|σ_I| |d_I|) (parameters (atoms, f), ones);
- diagonal: Σ_I π_I exp(-|diag(σ_I) d_I|) (σ (atoms, 3, f), ones);
- full: Σ_I π_I exp(-|Σ_I d_I|) (Σ (atoms, 3, 3, f), identities);
- bottleneck: ``network.num_envelopes`` isotropic envelopes e_m shared by all
  orbitals, mixed linearly, Σ_m e_m w_mk (w starts at 1/num_envelopes);
- null: 1 (no parameters);
- sto: Σ_I π_I ρ_I^{exp(n_I)} exp(-ρ_I), ρ_I = |Σ_I d_I| (Slater-type; n starts
  at -50, a power of about 0). π starts at 1: the reference starts it at 0,
  which makes ψ vanish unless its Hartree–Fock initialisation sets it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import kfac_jax

from ferminet.config import ENVELOPES
from ferminet.networks import ops


@dataclasses.dataclass(frozen=True)
class Envelope:
  init: Callable[[int, int, Any], dict]  # (n_atoms, n_out, dtype) -> parameters
  apply: Callable[..., jax.Array]  # (p, pos (m, 3), centres, tag) -> (m, f)
  derivatives: Callable[..., tuple[jax.Array, jax.Array, jax.Array]]
  pre_orbital: bool = False  # multiplies the features before the orbital layer


def _autodiff(apply):
  """Value, gradient and Laplacian of ``apply`` at each electron, by 3-d autodiff."""

  def derivatives(p, pos, centres):
    return ops.local_derivatives(lambda r: apply(p, r[None], centres, False)[0], pos)

  return derivatives


def _isotropic_sum(sigma, pi, r_ae, tag):
  """Σ_I π_I exp(-|σ_I| r_I), (m, f) from r_ae (m, atoms), σ and π (atoms, f).

  ``tag``: register σ and π with kfac-jax as scale layers (y = x·σ with x = r·sign(σ),
  and y = exp(-|σ| r)·π), so KFAC gets their Fisher diagonal from per-walker
  gradients. Untagged, they fall to kfac-jax's generic diagonal blocks, which square
  each device's gradient summed over its walkers: a cruder estimate, and one that
  changes with the number of devices.
  """
  x = r_ae[..., None] * jnp.sign(sigma)  # x·σ = r·|σ|; dy/dσ = x
  exponent = x * sigma
  if tag:
    exponent = kfac_jax.register_scale_and_shift(exponent, x, sigma)
  decay = jnp.exp(-exponent)
  weighted = decay * pi[None]
  if tag:
    weighted = kfac_jax.register_scale_and_shift(weighted, decay, pi)
  return jnp.sum(weighted, axis=1)


def _vectors(pos, centres):
  ae = pos[:, None, :] - centres[None]
  return ae, jnp.linalg.norm(ae, axis=-1)


def _isotropic() -> Envelope:
  def init(n_atoms, n_out, dtype):
    return {'pi': jnp.ones((n_atoms, n_out), dtype), 'sigma': jnp.ones((n_atoms, n_out), dtype)}

  def apply(p, pos, centres, tag=False):
    return _isotropic_sum(p['sigma'], p['pi'], _vectors(pos, centres)[1], tag)

  def derivatives(p, pos, centres):
    """By hand: ∇ = Σ_I -|σ| π e d_I/|d_I|, ∇² = Σ_I π e (σ² - 2|σ|/|d_I|)."""
    ae = pos[:, None, :] - centres[None]  # (m, atoms, 3)
    d = jnp.linalg.norm(ae, axis=-1)[..., None]  # (m, atoms, 1)
    rate = jnp.abs(p['sigma'])[None]  # (1, atoms, f)
    e = p['pi'][None] * jnp.exp(-rate * d)  # (m, atoms, f)
    de = -rate * e
    value = jnp.sum(e, axis=1)
    grad = jnp.sum(de[:, :, None, :] * (ae / d)[..., None], axis=1)  # (m, 3, f)
    lap = jnp.sum(e * (rate * rate) + de * (2.0 / d), axis=1)
    return value, grad, lap

  return Envelope(init, apply, derivatives)


def _diagonal() -> Envelope:
  def init(n_atoms, n_out, dtype):
    return {'pi': jnp.ones((n_atoms, n_out), dtype), 'sigma': jnp.ones((n_atoms, 3, n_out), dtype)}

  def apply(p, pos, centres, tag=False):
    del tag  # generic blocks
    scaled = _vectors(pos, centres)[0][..., None] * p['sigma'][None]  # (m, atoms, 3, f)
    exponent = jnp.sqrt(jnp.sum(scaled**2, axis=2))
    return jnp.sum(jnp.exp(-exponent) * p['pi'][None], axis=1)

  return Envelope(init, apply, _autodiff(apply))


def _full_exponent(sigma, pos, centres):
  scaled = jnp.einsum('nad,adeo->naeo', _vectors(pos, centres)[0], sigma)
  return jnp.sqrt(jnp.sum(scaled**2, axis=2))  # (m, atoms, f)


def _identities(n_atoms, n_out, dtype):
  return jnp.tile(jnp.eye(3, dtype=dtype)[None, :, :, None], (n_atoms, 1, 1, n_out))


def _full() -> Envelope:
  def init(n_atoms, n_out, dtype):
    return {'pi': jnp.ones((n_atoms, n_out), dtype), 'sigma': _identities(n_atoms, n_out, dtype)}

  def apply(p, pos, centres, tag=False):
    del tag
    return jnp.sum(jnp.exp(-_full_exponent(p['sigma'], pos, centres)) * p['pi'][None], axis=1)

  return Envelope(init, apply, _autodiff(apply))


def _null() -> Envelope:
  def apply(p, pos, centres, tag=False):
    return jnp.ones((pos.shape[0], 1), pos.dtype)

  def derivatives(p, pos, centres):
    m = pos.shape[0]
    return (
      jnp.ones((m, 1), pos.dtype),
      jnp.zeros((m, 3, 1), pos.dtype),
      jnp.zeros((m, 1), pos.dtype),
    )

  return Envelope(lambda n_atoms, n_out, dtype: {}, apply, derivatives)


def _bottleneck(n_env: int) -> Envelope:
  def init(n_atoms, n_out, dtype):
    return {
      'pi': jnp.ones((n_atoms, n_env), dtype),
      'sigma': jnp.ones((n_atoms, n_env), dtype),
      'w': jnp.full((n_env, n_out), 1.0 / n_env, dtype),
    }

  def apply(p, pos, centres, tag=False):
    shared = _isotropic_sum(p['sigma'], p['pi'], _vectors(pos, centres)[1], tag)  # (m, n_env)
    out = shared @ p['w']
    if tag:
      out = kfac_jax.register_dense(out, shared, p['w'], None, variant='repeated_dense')
    return out

  return Envelope(init, apply, _autodiff(apply))


def _sto() -> Envelope:
  def init(n_atoms, n_out, dtype):
    return {
      'pi': jnp.ones((n_atoms, n_out), dtype),
      'sigma': _identities(n_atoms, n_out, dtype),
      'n': jnp.full((n_atoms, n_out), -50.0, dtype),
    }

  def apply(p, pos, centres, tag=False):
    del tag
    rho = _full_exponent(p['sigma'], pos, centres)
    return jnp.sum(jnp.exp(-rho + jnp.exp(p['n'])[None] * jnp.log(rho)) * p['pi'][None], axis=1)

  return Envelope(init, apply, _autodiff(apply), pre_orbital=True)


_KINDS: dict[str, Callable[..., Envelope]] = {
  'isotropic': _isotropic,
  'diagonal': _diagonal,
  'full': _full,
  'null': _null,
  'bottleneck': _bottleneck,
  'sto': _sto,
}
assert tuple(_KINDS) == ENVELOPES, 'config.ENVELOPES and the envelope registry disagree'


def make(kind: str, num_envelopes: int) -> Envelope:
  """The envelope ``kind`` (one of ``config.ENVELOPES``)."""
  if kind not in _KINDS:
    raise ValueError(f'unknown envelope {kind!r}: one of {", ".join(_KINDS)}')
  return _KINDS[kind](num_envelopes) if kind == 'bottleneck' else _KINDS[kind]()
