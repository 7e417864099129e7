"""What every ansatz reads from the config and the system."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ferminet import system as system_lib
from ferminet.networks import envelopes as envelopes_lib
from ferminet.networks import jastrow as jastrow_lib
from ferminet.networks import ops


@dataclasses.dataclass(frozen=True)
class Common:
  dtype: Any  # parameter dtype
  spins: tuple[int, ...]  # (n_α, n_β)
  n: int  # electrons
  nuclei: np.ndarray  # (n_atoms, 3) bohr
  determinants: int
  envelope: envelopes_lib.Envelope
  jastrow: jastrow_lib.Jastrow | None
  occupied: list[int]  # spin channels holding electrons
  slices: list[slice]  # each channel's electrons


def common(
  cfg: ml_collections.ConfigDict, system: system_lib.System, dtype: Any, network_type: str
) -> Common:
  """The shared settings of ``cfg.network`` for ``system``; dtype None: float64 with x64."""
  spins = tuple(int(n) for n in system.electrons)
  return Common(
    dtype=dtype or (jnp.float64 if jax.config.jax_enable_x64 else jnp.float32),
    spins=spins,
    n=sum(spins),
    nuclei=np.asarray(system.coords),
    determinants=int(cfg.determinants),
    envelope=envelopes_lib.make(cfg.envelope_type, int(cfg.num_envelopes)),
    jastrow=jastrow_lib.make(cfg.jastrow, network_type, spins),
    occupied=[k for k, s in enumerate(spins) if s],
    slices=ops.spin_slices(spins),
  )
