"""Pictures of runs: the energy convergence of one run and a reaction profile.

matplotlib with the Agg backend (files only, no display needed). Energies are
in hartree, relative energies in kcal/mol.
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence

import matplotlib
import numpy as np

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402

from ferminet import analysis  # noqa: E402


def rolling_mean(values: np.ndarray, window: int) -> np.ndarray:
  """Mean of the finite values among the last ``window`` at each point (fewer at the
  start; rolled-back steps hold NaN and are skipped); shape (n,)."""
  values = np.asarray(values, dtype=float)
  finite = np.isfinite(values)
  window = max(1, int(window))
  cumulative = np.concatenate([[0.0], np.cumsum(np.where(finite, values, 0.0))])
  counts = np.concatenate([[0], np.cumsum(finite)])
  idx = np.arange(1, values.size + 1)
  lo = np.maximum(idx - window, 0)
  with np.errstate(invalid='ignore', divide='ignore'):
    return (cumulative[idx] - cumulative[lo]) / (counts[idx] - counts[lo])


def _save(fig: plt.Figure, path: str | pathlib.Path) -> pathlib.Path:
  """Writes ``fig`` as a PNG to ``path`` and frees it."""
  fig.tight_layout()
  path = pathlib.Path(path)
  fig.savefig(path)
  plt.close(fig)
  return path


def convergence(
  data: analysis.RunData, summary: analysis.RunSummary, path: str | pathlib.Path
) -> pathlib.Path:
  """Energy per step, its rolling mean, the averaged window with its mean ± error,
  and the reference energy when known. Writes a PNG to ``path``."""
  fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
  n = data.energy.size
  ax.plot(data.step, data.energy, lw=0.5, color='0.65', label='energy per step')
  window = max(1, n // 50)
  rolling = rolling_mean(data.energy, window)
  ax.plot(data.step, rolling, color='C0', label=f'rolling mean ({window})')
  start = data.step[summary.discarded]
  if summary.discarded:  # none by default for an inference run
    ax.axvspan(data.step[0], start, color='0.92', label='burn-in (discarded)')
  mean, err = summary.energy.mean, summary.energy.stderr
  ax.hlines(mean, start, data.step[-1], color='C1', label=f'mean {mean:.5f} ± {err:.5f} Ha')
  if np.isfinite(err):
    ax.fill_between([start, data.step[-1]], mean - err, mean + err, color='C1', alpha=0.3, lw=0)
  shown = [data.energy[summary.discarded :], rolling[n // 10 :]]
  if summary.reference is not None:
    ref = summary.reference.energy
    ax.axhline(ref, color='C3', ls='--', label=f'reference {ref:.5f} Ha')
    shown.append(np.array([ref]))
  # Early steps can be far off: scale the axis to the averaged part, the rolling mean
  # after the first tenth of the run and the reference.
  lo, hi = np.percentile(np.concatenate(shown), [0.5, 99.5])
  pad = max(hi - lo, 1e-3) * 0.6
  ax.set_ylim(lo - pad, hi + pad)
  ax.set_xlabel('step')
  ax.set_ylabel('energy (Ha)')
  ax.set_title(summary.name)
  ax.legend(fontsize=7, loc='upper right')
  return _save(fig, path)


def profile(
  relative: Sequence[analysis.Relative],
  literature: Sequence[analysis.Literature],
  relative_to: str,
  path: str | pathlib.Path,
) -> pathlib.Path:
  """Relative energies (kcal/mol) with error bars, one column per structure in the
  given order, with the published values of each method beside them. Writes a PNG."""
  fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(relative) + 3), 4.5), dpi=110)
  x = {r.name: i for i, r in enumerate(relative)}
  ax.errorbar(
    [x[r.name] for r in relative],
    [r.energy for r in relative],
    yerr=[r.stderr for r in relative],
    fmt='o-',
    color='k',
    capsize=4,
    label='this work (VMC)',
    zorder=3,
  )
  methods = list(dict.fromkeys(lit.method for lit in literature if lit.name in x))
  markers = 'sD^v<>phx*+'
  for k, method in enumerate(methods):
    points = [
      (x[lit.name], lit.energy) for lit in literature if lit.method == method and lit.name in x
    ]
    offset = 0.08 * (k + 1)
    ax.plot(
      [p[0] + offset for p in points],
      [p[1] for p in points],
      markers[k % len(markers)],
      ms=5,
      alpha=0.8,
      label=method if len(method) < 45 else method[:42] + '...',
    )
  ax.axhline(0.0, color='0.8', lw=0.8)
  ax.set_xticks(range(len(relative)), [r.name for r in relative])
  ax.set_ylabel(f'E - E({relative_to}) (kcal/mol)')
  ax.set_title(f'relative energies against {relative_to}')
  ax.legend(fontsize=6, loc='best')
  return _save(fig, path)
