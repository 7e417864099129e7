"""Outputs of a run: the statistics CSV and the progress line."""

from __future__ import annotations

import contextlib
import csv
import os
import pathlib
import sys
import time
from collections.abc import Iterator
from typing import IO

from ferminet import errors

COLUMNS = ('step', 'energy', 'ewmean', 'ewvar', 'pmove', 'variance')
EW_ALPHA = 0.1  # weight of the newest energy in the exponentially weighted mean


@contextlib.contextmanager
def atomic_open(path: pathlib.Path, mode: str = 'w', **kwargs) -> Iterator[IO]:
  """Writes to ``path.tmp``; on success fsyncs it and renames it over ``path``.

  Readers see the old file or the complete new one, never a partial write.
  """
  path = pathlib.Path(path)
  tmp = path.with_name(path.name + '.tmp')
  with tmp.open(mode, **kwargs) as f:
    yield f
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


class StatsWriter:
  """Appends one row per iteration to a CSV with the reference's columns.

  A resumed run appends: rows at or after the first new step, and a
  half-written last row, are dropped from the existing file first, so steps are
  never duplicated.
  """

  def __init__(self, path: pathlib.Path, first_step: int):
    self.path = pathlib.Path(path)
    rows = read_rows(self.path)
    kept = [r for r in rows if int(r['step']) < first_step]
    self.ewmean = float(kept[-1]['ewmean']) if kept else None
    self.ewvar = float(kept[-1]['ewvar']) if kept else 0.0
    # Rewrite the kept rows (dropping later or half-written ones) to a temporary
    # file and rename it over the old one, so the history survives a crash here.
    with atomic_open(self.path, 'w', newline='') as f:
      writer = csv.writer(f)
      writer.writerow(COLUMNS)
      for r in kept:
        writer.writerow([r[c] for c in COLUMNS])
    self.last: dict[str, float] = {}
    self._file = self.path.open('a', newline='')
    self._writer = csv.writer(self._file)

  def write(self, step: int, energy: float, pmove: float, variance: float) -> None:
    self.last = {'step': step, 'energy': energy, 'pmove': pmove, 'variance': variance}
    if self.ewmean is None:
      self.ewmean, self.ewvar = energy, 0.0
    else:
      delta = energy - self.ewmean
      self.ewmean += EW_ALPHA * delta
      self.ewvar = (1 - EW_ALPHA) * (self.ewvar + EW_ALPHA * delta**2)
    self._writer.writerow(
        [step, f'{energy:.10g}', f'{self.ewmean:.10g}', f'{self.ewvar:.6g}', f'{pmove:.4f}',
         f'{variance:.6g}']
    )  # fmt: skip

  def flush(self) -> None:
    self._file.flush()

  def close(self) -> None:
    self._file.close()


def read_rows(path: pathlib.Path) -> list[dict[str, str]]:
  """The complete rows of a stats CSV ([] if it does not exist).

  A half-written last row (a job killed while writing) is dropped; a file with
  other columns is an error, so another program's CSV is never overwritten.
  """
  path = pathlib.Path(path)
  if not path.exists():
    return []
  with path.open(newline='') as f:
    reader = csv.DictReader(f)
    if reader.fieldnames is not None and tuple(reader.fieldnames) != COLUMNS:
      raise errors.ConfigError(
        f"{path} has columns {reader.fieldnames}, not ferminet's {list(COLUMNS)}: "
        'use another log.save_path'
      )
    return [row for row in reader if _complete(row)]


def _complete(row: dict[str, str | None]) -> bool:
  try:
    return all(row[c] is not None for c in COLUMNS) and bool(int(row['step']) >= 0)
  except ValueError:
    return False


class Progress:
  """A one-line progress report at most every ``interval`` seconds (and at the end)."""

  def __init__(self, label: str, total: int, interval: float = 10.0, stream=None, start: int = 0):
    self.label, self.total, self.interval = label, total, interval
    self.stream = stream or sys.stdout
    self.last = self.mark = time.monotonic()
    self.done = start

  def due(self, done: int) -> bool:
    """Whether a line is due (interval elapsed, or the last iteration)."""
    return done >= self.total or time.monotonic() - self.last >= self.interval

  def update(self, done: int, message: str) -> None:
    """Prints ``message`` with iterations/s and ETA if a line is due."""
    if not self.due(done):
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
