"""Turning a run's energies into numbers with honest error bars.

VMC energies along a run are autocorrelated, so the plain standard error is
too small. :func:`reblock` applies the Flyvbjerg–Petersen blocking transform
(J. Chem. Phys. 91, 461 (1989)) and picks the block size with the criterion of
Lee, Needs & Towler (Phys. Rev. E 83, 066706 (2011)). :func:`analyze_run` turns a
run folder into a :class:`RunSummary`: it reads ``inference_stats.csv`` when the folder
has one (the energy of the trained wavefunction, sampled from equilibrated walkers: no
burn-in is dropped by default), else ``train_stats.csv`` (the first half is dropped by
default); ``stats='train'`` or ``'inference'`` picks one. :func:`relative_energies`
makes a reaction profile; :func:`literature` gives the published values it is compared with. The
command line is in :mod:`ferminet.analyze_cli` (``ferminet-analyze`` or
``python -m ferminet.analysis``), the pictures in :mod:`ferminet.plots`.
"""

from __future__ import annotations

import csv
import dataclasses
import importlib.resources
import json
import math
import pathlib
from collections.abc import Sequence

import numpy as np

from ferminet import errors, writers
from ferminet import system as system_lib

# 1 hartree in kcal/mol: CODATA 2018 E_h = 4.3597447222071e-18 J, times the Avogadro
# constant 6.02214076e23 /mol, over 4184 J/kcal (thermochemical calorie).
HARTREE_TO_KCAL_PER_MOL = 627.509474

# Molecule names (ferminet.molecules, at their default geometry) whose row in
# data/energies.csv has another name. The cyclobutadiene rows are the LAVA values,
# most likely at these geometries (see the source column there).
REFERENCE_ALIASES = {
  'bicyclobutane': 'bicyclobutane (PRR geometry)',
  'cycbut-ground': 'cyclobutadiene rectangle (D2h)',
  'cycbut-trans': 'cyclobutadiene square (D4h TS)',
  'H4': 'H4 (square)',
  'H10': 'H10 chain',
}

# The statistics files a run folder can hold (ferminet.train writes one of them per run),
# by the name of the ``stats`` choice, in the order 'auto' tries them.
STATS_FILES = {'inference': 'inference_stats.csv', 'train': 'train_stats.csv'}
STATS_CHOICES = ('auto', *STATS_FILES)
# Default fraction of the rows dropped as burn-in, by file: training starts from an
# unconverged wavefunction; inference samples a fixed, trained one with the walkers of
# the restored checkpoint, already equilibrated.
DEFAULT_BURN_IN = {'train_stats.csv': 0.5, 'inference_stats.csv': 0.0}

# reactions.csv: reaction -> (baseline structure, {csv structure: molecule name}).
REACTIONS = {
  'bicyclobutane->butadiene': ('bicbut', {}),
  'cyclobutadiene automerization': ('cycbut-ground', {'square-rectangle': 'cycbut-trans'}),
}


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


@dataclasses.dataclass(frozen=True)
class Drift:
  """The two halves of a series, reblocked separately (energies in Ha)."""

  first: Reblocked
  second: Reblocked
  sigmas: float  # |second - first| in units of their combined standard error

  @property
  def significant(self) -> bool:
    """Whether the halves differ by more than DRIFT_SIGMAS combined standard errors."""
    return self.sigmas > DRIFT_SIGMAS


DRIFT_SIGMAS = 2.0  # a stationary series exceeds it in about 5% of cases


def drift(values: np.ndarray) -> Drift:
  """Compares the reblocked means of the first and second half of ``values`` (1-D).

  A still-falling training energy shows as a significant difference, which the
  error bar of the mean of the whole series does not include. ``sigmas`` is NaN
  when a half is too short for an error bar.
  """
  x = np.asarray(values, dtype=float)
  first, second = reblock(x[: x.size // 2]), reblock(x[x.size // 2 :])
  combined = float(np.hypot(first.stderr, second.stderr))
  sigmas = abs(second.mean - first.mean) / combined if combined > 0 else float('nan')
  return Drift(first, second, sigmas)


@dataclasses.dataclass(frozen=True)
class Extrapolation:
  """Energy against local-energy variance, fitted by a line and extrapolated to zero
  variance (energies in Ha, variances in Ha²)."""

  energy: float  # the intercept: the energy at zero variance
  stderr: float
  slope: float  # dE/dσ², in 1/Ha
  slope_stderr: float
  blocks: int  # points of the fit: block means of block_size consecutive steps
  block_size: int
  variance_min: float  # range of the block-mean variances the line is fitted over
  variance_max: float


MIN_FIT_BLOCKS = 4


def extrapolate(energy: np.ndarray, variance: np.ndarray) -> Extrapolation | None:
  """Zero-variance extrapolation of a run: a least-squares line through (σ², E).

  The energies of consecutive steps are correlated, so the line is fitted to block
  means of both series. The block size is the reblocking block size of the residuals
  of a first fit to the single steps (the correlation left once the trend along the
  line is taken out; fewer steps per block when that leaves under ``MIN_FIT_BLOCKS``
  blocks). The intercept's error is the ordinary least-squares one from the residuals
  of the block means. The fit is informative only where the wavefunction, and with it
  the variance, changes along the stretch (a training run); on an inference run (fixed
  parameters) the variance changes by noise alone and the error is large. Shapes:
  (steps,) each; non-finite rows are dropped.

  Returns None with fewer than MIN_FIT_BLOCKS finite steps or no spread in variance
  (e.g. a file of DeepMind's FermiNet, which has no variance column).
  """
  e, v = np.asarray(energy, dtype=float), np.asarray(variance, dtype=float)
  keep = np.isfinite(e) & np.isfinite(v)
  e, v = e[keep], v[keep]
  if e.size < MIN_FIT_BLOCKS:
    return None
  first = _line(e, v)
  if first is None:
    return None
  size = reblock(e - first[0] - first[1] * v).block_size
  size = max(1, min(size, e.size // MIN_FIT_BLOCKS))
  m = e.size // size
  start = e.size - m * size  # the first steps are the ones left out
  eb = e[start:].reshape(m, size).mean(axis=1)
  vb = v[start:].reshape(m, size).mean(axis=1)
  fit = _line(eb, vb)
  if fit is None:
    return None
  intercept, slope = fit
  sxx = float(np.sum((vb - vb.mean()) ** 2))
  s2 = float(np.sum((eb - intercept - slope * vb) ** 2)) / (m - 2)
  return Extrapolation(
    energy=intercept,
    stderr=float(np.sqrt(s2 * (1 / m + vb.mean() ** 2 / sxx))),
    slope=slope,
    slope_stderr=float(np.sqrt(s2 / sxx)),
    blocks=m,
    block_size=size,
    variance_min=float(vb.min()),
    variance_max=float(vb.max()),
  )


def _line(y: np.ndarray, x: np.ndarray) -> tuple[float, float] | None:
  """Least-squares (intercept, slope) of y against x; None when x has no spread."""
  dx = x - x.mean()
  sxx = float(np.sum(dx**2))
  if not sxx > 0:
    return None
  slope = float(np.sum(dx * (y - y.mean())) / sxx)
  return float(y.mean() - slope * x.mean()), slope


def reference_energies() -> dict[str, dict[str, str]]:
  """The shipped reference table, keyed by system name (e.g. 'Li', 'He+', 'N2')."""
  path = importlib.resources.files('ferminet') / 'data' / 'energies.csv'
  with path.open() as f:
    return {row['system']: row for row in csv.DictReader(f)}


@dataclasses.dataclass(frozen=True)
class Reference:
  """A row of the reference table; energies in hartree."""

  system: str  # the row's name in data/energies.csv
  energy: float
  method: str
  hf_limit: float | None  # Hartree–Fock (CBS) energy, when known


def reference(name: str, electrons: Sequence[int] | None = None) -> Reference | None:
  """The reference energy of system ``name`` (e.g. 'Li', 'N2', 'H4'), if the table has it.

  ``name`` is ``config.system.name`` (geometry parameters are appended off the default
  geometry, so such a name has no reference). With ``electrons`` ((n_alpha, n_beta)),
  a row with another electron count does not match.
  """
  table = reference_energies()
  row = table.get(name) or table.get(REFERENCE_ALIASES.get(name, ''))
  if row is None:
    return None
  if electrons is not None and (
    (int(row['electrons_alpha']), int(row['electrons_beta'])) != tuple(int(n) for n in electrons)
  ):
    return None
  try:
    energy = float(row['reference_Ha'])
  except ValueError:
    return None
  try:
    hf = float(row['hf_cbs_Ha'])
  except ValueError:
    hf = None
  return Reference(row['system'], energy, row['reference_method'], hf)


def reference_for(system: system_lib.System, name: str) -> tuple[float, str] | None:
  """(reference energy in Ha, method) when the table lists ``name`` (e.g. 'Li', 'He+',
  'N2', as set by config.resolve) with this system's electrons."""
  ref = reference(name, system.electrons)
  return None if ref is None else (ref.energy, ref.method)


@dataclasses.dataclass(frozen=True)
class RunSummary:
  """The numbers of one run folder. Energies in Ha, variances in Ha²."""

  name: str  # system name: --name, else config.json's system.name, else the folder name
  path: str
  stats_file: str  # 'inference_stats.csv' or 'train_stats.csv'
  steps: int  # rows in the statistics file
  discarded: int  # rows dropped as burn-in
  burn_in_fraction: float  # the fraction used for this file (asked, else its default)
  energy: Reblocked  # reblocked energy of the kept rows
  pmove: float  # mean Metropolis acceptance of the kept rows
  variance: float  # mean local-energy variance of the kept rows
  reference: Reference | None
  error_mha: float | None  # (energy - reference) in mHa
  correlation_pct: float | None  # % of the correlation energy (E_HF - E_ref) recovered
  extrapolated: Extrapolation | None = None  # zero-variance fit over the averaged steps
  batch_size: int | None = None  # walkers per step, from the run's config file
  ansatz: str | None = None  # config.describe_network of the run's network, if it has one
  # The checkpoint the run started from (log.started_from: a warm start's source, or
  # the training checkpoint an inference run evaluates): {path, step, system}, or None.
  started_from: dict | None = None
  # Every observable column of the file (s2, mu_x, dipole_x, ... : writers.OBSERVABLE_UNITS),
  # reblocked over the same kept rows as the energy.
  observables: dict[str, Reblocked] = dataclasses.field(default_factory=dict)
  # |⟨μ⟩| in debye from the reblocked dipole_x..z, and its error (propagated), or None.
  # Unlike the mean of the dipole_debye column (each step's |mean|), it is not biased upwards
  # by the noise of single steps.
  dipole_debye: tuple[float, float] | None = None

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class RunData:
  """The raw series of a run folder, shape (steps,) each (variance NaN where unknown)."""

  step: np.ndarray
  energy: np.ndarray
  pmove: np.ndarray
  variance: np.ndarray
  # The observable columns present (writers.OBSERVABLE_UNITS), NaN where a row has none.
  observables: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)


def stats_path(run_dir: str | pathlib.Path, stats: str = 'auto') -> pathlib.Path:
  """The statistics CSV of a run folder.

  Args:
    run_dir: a ferminet run folder.
    stats: 'auto': inference_stats.csv when the folder has one, else train_stats.csv;
      'train' or 'inference': that file, an error when the folder lacks it.
  """
  if stats not in STATS_CHOICES:
    raise errors.AnalysisError(f'stats must be one of {", ".join(STATS_CHOICES)}, got {stats!r}')
  run_dir = pathlib.Path(run_dir)
  if not run_dir.is_dir():
    raise errors.AnalysisError(f'run folder {str(run_dir)!r} does not exist')
  present = [name for name in STATS_FILES.values() if (run_dir / name).is_file()]
  if not present:
    raise errors.AnalysisError(
      f'{str(run_dir)!r} holds no train_stats.csv or inference_stats.csv: '
      'is it a ferminet run folder?'
    )
  if stats == 'auto':
    return run_dir / present[0]
  name = STATS_FILES[stats]
  if name not in present:
    raise errors.AnalysisError(
      f'{str(run_dir)!r} has no {name} (it holds {", ".join(present)}): choose another --stats'
    )
  return run_dir / name


def read_run(run_dir: str | pathlib.Path, stats: str = 'auto') -> RunData:
  """The per-step statistics of a run folder (``stats`` as in :func:`stats_path`)."""
  return _read_stats(stats_path(run_dir, stats))


def _read_stats(path: pathlib.Path) -> RunData:
  """The rows of one statistics CSV as arrays."""
  try:
    rows = writers.read_rows(path)
  except errors.FermiNetError as e:
    raise errors.AnalysisError(str(e)) from None
  if not rows:
    raise errors.AnalysisError(f'{path} has no complete rows yet')
  columns = {c: np.array([float(r[c]) for r in rows]) for c in ('energy', 'pmove', 'variance')}
  observed = {
    c: np.array([_number(r.get(c)) for r in rows]) for c in writers.OBSERVABLE_UNITS if c in rows[0]
  }
  return RunData(np.array([int(r['step']) for r in rows]), **columns, observables=observed)


def _number(text: str | None) -> float:
  """A CSV cell as a float; NaN when empty (rows written before the column existed)."""
  try:
    return float(text)
  except (TypeError, ValueError):
    return float('nan')


def _finite_mean(values: np.ndarray) -> float:
  """Mean of the finite values; NaN (without a warning) when there are none."""
  finite = values[np.isfinite(values)]
  return float(finite.mean()) if finite.size else float('nan')


def run_config(run_dir: str | pathlib.Path, stats_file: str = 'train_stats.csv') -> dict:
  """The config file of the run that wrote ``stats_file``, as a dict ({} when none).

  config.json, except for inference_stats.csv of an inference run in a training folder,
  whose config is inference_config.json.
  """
  path = pathlib.Path(run_dir) / 'config.json'
  if stats_file == STATS_FILES['inference'] and path.with_name('inference_config.json').is_file():
    path = path.with_name('inference_config.json')
  if not path.is_file():
    return {}
  try:
    return json.loads(path.read_text())
  except (OSError, ValueError) as e:
    raise errors.AnalysisError(f'cannot read {path}: {e}') from None


def _ansatz(cfg: dict) -> str | None:
  """The run's ansatz in one line, None when its config file has no (complete) network."""
  from ferminet import config as config_lib

  try:
    return config_lib.describe_network(cfg['network'])
  except (KeyError, TypeError, ValueError):
    return None


def analyze_run(
  run_dir: str | pathlib.Path,
  burn_in: float | None = None,
  name: str | None = None,
  stats: str = 'auto',
  average: int | None = None,
) -> tuple[RunSummary, RunData]:
  """Reblocked energy and averages of a run folder after dropping a burn-in.

  Args:
    run_dir: a folder with inference_stats.csv and/or train_stats.csv.
    burn_in: fraction of the rows of the file read that is dropped from the start, in
      [0, 1); None: 0.5 for train_stats.csv, 0 for inference_stats.csv.
    name: system name for the reference lookup; None: config.json's system.name,
      else the folder name.
    stats: which file: 'auto' (inference_stats.csv if present, else train_stats.csv),
      'train' or 'inference'.
    average: average only the last ``average`` rows of those kept after the burn-in
      (``--match-length``); None: all kept rows.
  """
  if burn_in is not None and not 0 <= burn_in < 1:
    raise errors.AnalysisError(f'burn-in fraction must be in [0, 1), got {burn_in}')
  path = stats_path(run_dir, stats)
  if burn_in is None:
    burn_in = DEFAULT_BURN_IN[path.name]
  data = _read_stats(path)
  cfg = run_config(run_dir, path.name)
  system = cfg.get('system', {})
  if name is None:
    name = system.get('name') or pathlib.Path(run_dir).resolve().name
  n = data.energy.size
  start = _burn_in_rows(n, burn_in)
  if average is not None:
    if average < 1:
      raise errors.AnalysisError(f'rows to average must be at least 1, got {average}')
    start = max(start, n - average)
  kept = slice(start, None)
  blocked = reblock(data.energy[kept])
  observed = {c: reblock(v[kept]) for c, v in data.observables.items()}
  fit = extrapolate(data.energy[kept], data.variance[kept])
  started = (cfg.get('log') or {}).get('started_from') or {}
  ref = reference(name, system.get('electrons') or None)
  error = corr = None
  if ref is not None:
    error = (blocked.mean - ref.energy) * 1000
    if ref.hf_limit is not None and ref.hf_limit != ref.energy:
      corr = 100 * (ref.hf_limit - blocked.mean) / (ref.hf_limit - ref.energy)
  summary = RunSummary(
    name=name,
    path=str(run_dir),
    stats_file=path.name,
    steps=n,
    discarded=start,
    burn_in_fraction=float(burn_in),
    energy=blocked,
    pmove=_finite_mean(data.pmove[kept]),
    # Rolled-back rows hold NaN, and every row of a file of DeepMind's FermiNet (no column).
    variance=_finite_mean(data.variance[kept]),
    reference=ref,
    error_mha=error,
    correlation_pct=corr,
    extrapolated=fit,
    batch_size=cfg.get('batch_size'),
    ansatz=_ansatz(cfg),
    started_from=started if started.get('path') else None,
    observables=observed,
    dipole_debye=dipole_magnitude(observed),
  )
  return summary, data


def dipole_magnitude(observed: dict[str, Reblocked]) -> tuple[float, float] | None:
  """(|⟨μ⟩|, its standard error) in debye from reblocked dipole_x, _y, _z (e·bohr), the
  error propagated to first order; None without those columns."""
  parts = [observed.get(f'dipole_{c}') for c in 'xyz']
  if any(p is None for p in parts):
    return None
  mean = np.array([p.mean for p in parts])
  err = np.array([p.stderr for p in parts])
  size = float(np.linalg.norm(mean))
  stderr = float(np.sqrt(np.sum((mean / size) ** 2 * err**2))) if size > 0 else float(err.max())
  return size * system_lib.DEBYE_PER_AU, stderr * system_lib.DEBYE_PER_AU


def kept_rows(run_dir: str | pathlib.Path, burn_in: float | None, stats: str = 'auto') -> int:
  """How many rows :func:`analyze_run` would average (after the burn-in)."""
  path = stats_path(run_dir, stats)
  n = _read_stats(path).energy.size
  return n - _burn_in_rows(n, DEFAULT_BURN_IN[path.name] if burn_in is None else burn_in)


def _burn_in_rows(n: int, fraction: float) -> int:
  """Rows dropped from the start of ``n``: the ``fraction``, keeping at least one."""
  return min(int(n * fraction), n - 1)


def comparability(runs: Sequence[RunSummary]) -> list[str]:
  """Notes on what makes the error bars of these runs not comparable: different
  statistics files, batch sizes, averaged steps, or training steps evaluated."""
  notes = []

  def differ(what: str, values: dict[str, object]) -> None:
    if len(set(map(str, values.values()))) > 1:
      listed = ', '.join(f'{k} {v}' for k, v in values.items())
      notes.append(f'{what} differ: {listed}')

  differ('statistics files', {r.name: r.stats_file for r in runs})
  differ('batch sizes', {r.name: r.batch_size for r in runs})
  differ('ansätze', {r.name: r.ansatz for r in runs if r.ansatz})
  differ('averaged steps', {r.name: r.energy.n for r in runs})
  inference = [r for r in runs if r.stats_file == STATS_FILES['inference']]
  differ(
    'training steps evaluated',
    {r.name: (r.started_from or {}).get('step', 'unknown') for r in inference},
  )
  return notes


@dataclasses.dataclass(frozen=True)
class Relative:
  """E(name) - E(relative_to) in kcal/mol with its standard error."""

  name: str
  energy: float
  stderr: float


def relative_energies(
  energies: Sequence[tuple[str, float, float]], relative_to: str
) -> list[Relative]:
  """Relative energies in kcal/mol from (name, energy Ha, stderr Ha) triples.

  The runs are independent, so the errors add in quadrature:
  σ(E_i - E_0) = sqrt(σ_i² + σ_0²); the baseline itself gets 0 +/- 0.
  """
  names = [n for n, _, _ in energies]
  if relative_to not in names:
    raise errors.AnalysisError(
      f'--relative-to {relative_to!r} is none of the runs ({", ".join(names)})'
    )
  if len(set(names)) != len(names):
    raise errors.AnalysisError(f'two runs have the same name ({", ".join(names)}): use --name')
  _, e0, s0 = energies[names.index(relative_to)]
  out = []
  for name, e, s in energies:
    if name == relative_to:
      out.append(Relative(name, 0.0, 0.0))
    else:
      diff = (e - e0) * HARTREE_TO_KCAL_PER_MOL
      out.append(Relative(name, diff, math.hypot(s, s0) * HARTREE_TO_KCAL_PER_MOL))
  return out


@dataclasses.dataclass(frozen=True)
class Literature:
  """A published relative energy in kcal/mol (from data/reactions.csv)."""

  name: str  # molecule name of the structure
  relative_to: str  # molecule name of the baseline
  method: str
  energy: float
  zpve: str  # whether zero-point energy is included, as the source says
  source: str


def literature(relative_to: str | None = None) -> list[Literature]:
  """Published relative energies, optionally only those against ``relative_to``.

  Rows without a single value (an experimental range) and rows that are not
  relative energies (the ZPVE values themselves) are left out.
  """
  path = importlib.resources.files('ferminet') / 'data' / 'reactions.csv'
  out = []
  with path.open() as f:
    for row in csv.DictReader(f):
      if row['reaction'] not in REACTIONS or row['zpve_included'] == 'n/a':
        continue
      try:
        value = float(row['value_kcal_mol'])
      except ValueError:
        continue
      baseline, names = REACTIONS[row['reaction']]
      name = names.get(row['structure'], row['structure'])
      if relative_to is None or baseline == relative_to:
        out.append(
          Literature(name, baseline, row['method'], value, row['zpve_included'], row['source'])
        )
  return out


if __name__ == '__main__':
  from ferminet import analyze_cli

  analyze_cli.main()
