"""Turning a run's energies into numbers with honest error bars.

VMC energies along a run are autocorrelated, so the plain standard error is
too small. :func:`reblock` applies the Flyvbjerg–Petersen blocking transform
(J. Chem. Phys. 91, 461 (1989)) and picks the block size with the criterion of
Lee, Needs & Towler (Phys. Rev. E 83, 066706 (2011)).
"""

from __future__ import annotations

import csv
import dataclasses
import importlib.resources

import numpy as np

from ferminet import system as system_lib


@dataclasses.dataclass(frozen=True)
class Reblocked:
  mean: float
  stderr: float  # standard error of the mean at the chosen block size
  naive_stderr: float  # assuming independent samples
  block_size: int
  autocorrelation_time: float  # in samples: (stderr / naive_stderr)²
  n: int
  converged: bool  # False when no block size met the criterion


def reblock(values: np.ndarray) -> Reblocked:
  """Mean and blocked standard error of a correlated series (1-D)."""
  x = np.asarray(values, dtype=float)
  x = x[np.isfinite(x)]
  n = x.size
  if n < 2:
    mean = float(x.mean()) if n else float('nan')
    return Reblocked(mean, float('nan'), float('nan'), 1, float('nan'), n, False)
  errors, sizes = [], []
  block, size = x, 1
  while block.size >= 2:
    errors.append(np.std(block, ddof=1) / np.sqrt(block.size))
    sizes.append(size)
    if block.size % 2:
      block = block[:-1]
    block = 0.5 * (block[0::2] + block[1::2])
    size *= 2
  naive = errors[0]
  chosen, converged = len(errors) - 1, False
  for k, (err, size) in enumerate(zip(errors, sizes, strict=True)):
    ratio = (err / naive) ** 2 if naive > 0 else 1.0
    if size**3 > 2 * n * ratio**2:
      chosen, converged = k, True
      break
  err = errors[chosen]
  tau = (err / naive) ** 2 if naive > 0 else 1.0
  return Reblocked(
    float(x.mean()), float(err), float(naive), sizes[chosen], float(tau), n, converged
  )


def reference_energies() -> dict[str, dict[str, str]]:
  """The shipped reference table, keyed by system name (e.g. 'Li', 'He+', 'N2')."""
  path = importlib.resources.files('ferminet') / 'data' / 'energies.csv'
  with path.open() as f:
    return {row['system']: row for row in csv.DictReader(f)}


def reference_for(system: system_lib.System, name: str) -> tuple[float, str] | None:
  """(reference energy in Ha, method) when the table lists ``name`` (e.g. 'Li', 'He+',
  'N2', as set by config.resolve) with this system's electrons."""
  row = reference_energies().get(name)
  if row is None:
    return None
  if (int(row['electrons_alpha']), int(row['electrons_beta'])) != tuple(system.electrons):
    return None
  try:
    return float(row['reference_Ha']), row['reference_method']
  except ValueError:
    return None
