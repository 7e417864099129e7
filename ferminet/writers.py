"""Outputs of a run: the statistics CSV and the progress line."""

from __future__ import annotations

import contextlib
import csv
import math
import os
import pathlib
import sys
import time
from collections.abc import Iterator, Sequence
from typing import IO

from ferminet import errors

# The reference's columns, then the local-energy variance (Ha²) and whether the
# iteration was rolled back because its energy or parameters were not finite (0/1).
COLUMNS = ('step', 'energy', 'ewmean', 'ewvar', 'pmove', 'variance', 'rolled_back')
# The columns every statistics file starts with: DeepMind's FermiNet writes these, then
# its observables (s2; mu_x, mu_y, mu_z).
REFERENCE_COLUMNS = COLUMNS[:5]
# What a row lacking one of our columns means: no variance known, not rolled back (a
# file of the reference, or of ours from before rolled_back existed).
ABSENT = {'variance': 'nan', 'rolled_back': '0'}
EW_ALPHA = 0.1  # weight of the newest energy in the exponentially weighted mean
# The observable columns a run may write (observables.*), after COLUMNS, with their units:
# s2 and mu_x..mu_z as the reference writes them (mu: the batch mean of Σ_i r_i, the sum of
# electron positions), and the physical dipole moment Σ_I Z_I R_I − Σ_i r_i about the origin.
OBSERVABLE_UNITS = {
  's2': 'hbar2',
  'mu_x': 'bohr',
  'mu_y': 'bohr',
  'mu_z': 'bohr',
  'dipole_x': 'e*bohr',
  'dipole_y': 'e*bohr',
  'dipole_z': 'e*bohr',
  'dipole_debye': 'D',
}


@contextlib.contextmanager
def atomic_open(path: pathlib.Path, mode: str = 'w', **kwargs) -> Iterator[IO]:
  """Writes to ``path.tmp``; on success fsyncs it and renames it over ``path``.

  Readers see the old file or the complete new one, never a partial write.
  """
  path = pathlib.Path(path)
  tmp = path.with_name(path.name + '.tmp')
  try:
    with tmp.open(mode, **kwargs) as f:
      yield f
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    tmp.unlink(missing_ok=True)  # a failed write (e.g. disk full) leaves no debris
    raise


class StatsWriter:
  """Appends one row per iteration to a CSV with the reference's columns.

  A resumed run appends: rows at or after the first new step, and a
  half-written last row, are dropped from the existing file first, so steps are
  never duplicated. An existing file written by DeepMind's FermiNet (or an older
  ferminet) is rewritten in our columns, its rows with variance ``nan`` and
  rolled_back 0; columns we do not write (the reference's s2, mu_x, ...) are kept
  after ours, their values in the old rows and empty in the new ones.
  """

  def __init__(self, path: pathlib.Path, first_step: int, observables: Sequence[str] = ()):
    self.path = pathlib.Path(path)
    rows = read_rows(self.path)
    self.observables = tuple(observables)  # OBSERVABLE_UNITS columns written by this run
    unknown = [c for c in self.observables if c not in OBSERVABLE_UNITS]
    if unknown:
      raise ValueError(f'unknown observable columns {unknown}')
    extra = [c for c in (rows[0] if rows else {}) if c not in COLUMNS + self.observables]
    self.columns = COLUMNS + self.observables + tuple(extra)
    kept = [r for r in rows if int(r['step']) < first_step]
    self.ewmean = float(kept[-1]['ewmean']) if kept else None
    self.ewvar = float(kept[-1]['ewvar']) if kept else 0.0
    # ewmean and ewvar are written exactly (repr), so a resumed run continues them bitwise.
    # Rewrite the kept rows (dropping later or half-written ones) to a temporary
    # file and rename it over the old one, so the history survives a crash here.
    with _reporting_write_errors(self.path), atomic_open(self.path, 'w', newline='') as f:
      writer = csv.writer(f)
      writer.writerow(self.columns)
      for r in kept:
        writer.writerow([r.get(c, '') for c in self.columns])
    self.last: dict[str, float] = {}
    self._file = self.path.open('a', newline='')
    self._writer = csv.writer(self._file)

  def write(
    self,
    step: int,
    energy: float,
    pmove: float,
    variance: float,
    rolled_back: bool = False,
    observed: dict[str, float] | None = None,
  ) -> None:
    """One row: energy in Ha, variance in Ha², ``observed`` the values of this run's
    observable columns; a non-finite energy leaves ewmean as it is."""
    observed = observed or {}
    self.last = {'step': step, 'energy': energy, 'pmove': pmove, 'variance': variance, **observed}
    self.observe(energy)
    ewmean = float('nan') if self.ewmean is None else self.ewmean
    values = [f'{observed[c]:.10g}' if c in observed else '' for c in self.observables]
    with _reporting_write_errors(self.path):
      self._writer.writerow(
          [step, f'{energy:.10g}', repr(ewmean), repr(self.ewvar), f'{pmove:.4f}',
           f'{variance:.6g}', int(rolled_back)] + values
          + [''] * (len(self.columns) - len(COLUMNS) - len(values))
      )  # fmt: skip

  def observe(self, energy: float) -> None:
    """Updates ewmean and ewvar with an energy (Ha); :meth:`write` calls it, and it is
    called alone for a step without a row (``log.stats_frequency``). Non-finite: ignored."""
    if math.isfinite(energy) and self.ewmean is None:
      self.ewmean, self.ewvar = energy, 0.0
    elif math.isfinite(energy):
      delta = energy - self.ewmean
      self.ewmean += EW_ALPHA * delta
      self.ewvar = (1 - EW_ALPHA) * (self.ewvar + EW_ALPHA * delta**2)

  def flush(self) -> None:
    with _reporting_write_errors(self.path):
      self._file.flush()

  def close(self) -> None:
    with _reporting_write_errors(self.path):
      self._file.close()


@contextlib.contextmanager
def _reporting_write_errors(path: pathlib.Path) -> Iterator[None]:
  """Turns an OSError (disk full, permissions) into errors.OutputError naming ``path``."""
  try:
    yield
  except OSError as e:
    raise errors.OutputError(f'cannot write {path}: {e.strerror or e}') from None


def read_rows(path: pathlib.Path) -> list[dict[str, str]]:
  """The complete rows of a stats CSV ([] if it does not exist), every one with our columns.

  Reads ours and the reference's (``step, energy, ewmean, ewvar, pmove`` and perhaps
  ``s2, mu_x, mu_y, mu_z``): a column of ours that the file lacks reads as absent
  (variance ``'nan'``, rolled_back ``'0'``); other columns are kept, in the file's
  order. A half-written last row (a job killed while writing) is dropped; a file that
  does not start with the reference's five columns is an error, so another program's
  CSV is never overwritten.
  """
  path = pathlib.Path(path)
  if not path.exists():
    return []
  with path.open(newline='') as f:
    reader = csv.DictReader(f)
    fields = tuple(reader.fieldnames or COLUMNS)
    if fields[: len(REFERENCE_COLUMNS)] != REFERENCE_COLUMNS or len(set(fields)) != len(fields):
      raise errors.ConfigError(
        f"{path} has columns {reader.fieldnames}, not ferminet's {list(COLUMNS)} (nor "
        f"DeepMind FermiNet's {list(REFERENCE_COLUMNS)} and more): use another log.save_path"
      )
    rows = [row for row in reader if _complete(row, fields)]
  return [{**row, **{k: v for k, v in ABSENT.items() if k not in row}} for row in rows]


def _complete(row: dict[str, str | None], fields: tuple[str, ...]) -> bool:
  try:
    return all(row[c] is not None for c in fields) and bool(int(row['step']) >= 0)
  except ValueError:
    return False


class Progress:
  """A one-line progress report at most every ``interval`` seconds (and at the end)."""

  def __init__(
    self,
    label: str,
    total: int,
    interval: float = 10.0,
    stream=None,
    start: int = 0,
    enabled: bool = True,
  ):
    self.label, self.total, self.interval, self.enabled = label, total, interval, enabled
    self.stream = stream or sys.stdout
    self.last = self.mark = time.monotonic()
    self.done = start

  def due(self, done: int) -> bool:
    """Whether a line is due (interval elapsed, or the last iteration)."""
    return done >= self.total or time.monotonic() - self.last >= self.interval

  def update(self, done: int, message: str) -> None:
    """Prints ``message`` with iterations/s and ETA if a line is due."""
    if not (self.enabled and self.due(done)):
      return
    now = time.monotonic()
    self.last = now
    speed = (done - self.done) / max(now - self.mark, 1e-9)
    self.done, self.mark = done, now
    eta = (self.total - done) / max(speed, 1e-9)
    print(
      f'{self.label} {done}/{self.total} | {message} | {speed:.3g} it/s | eta {eta:.0f} s',
      file=self.stream,
      flush=True,
    )
