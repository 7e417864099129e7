"""Runs the ``ferminet`` command line as a user would and times each statistics row.

Shared by the benchmarks that measure time from launch (``warm_start.py``): the wall
time at which each row of the run's ``train_stats.csv`` appeared, measured by polling
the file while the run goes. Rows are written in batches (at each progress line, about
every 20 iterations or 30 s), so a row's time is when its batch reached the disk: at
most one batch late.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import pathlib
import platform
import signal
import subprocess
import sys
import threading
import time

import jax
import numpy as np


@dataclasses.dataclass
class Launch:
  """One finished ``ferminet`` run: what it wrote and when."""

  run_dir: pathlib.Path
  wall_s: float  # launch to exit
  steps: np.ndarray  # (rows,) the step of each row of train_stats.csv
  energy: np.ndarray  # (rows,) Ha
  variance: np.ndarray  # (rows,) Ha²
  seconds: np.ndarray  # (rows,) seconds from launch at which the row was seen on disk
  lines: list[tuple[float, str]]  # (seconds from launch, line) of the run's output

  def first_line(self, prefix: str) -> float | None:
    """Seconds from launch of the first output line starting with ``prefix``."""
    return next((t for t, line in self.lines if line.startswith(prefix)), None)

  def last_line(self, prefix: str) -> float | None:
    """Seconds from launch of the last output line starting with ``prefix``."""
    return next((t for t, line in reversed(self.lines) if line.startswith(prefix)), None)


def run_cli(
  args: list[str],
  run_dir: pathlib.Path,
  poll_s: float = 0.2,
  stop_when=None,
  env: dict | None = None,
) -> Launch:
  """Runs ``python -m ferminet.cli ARGS``; its output, each line with its time from
  launch, goes to ``run_dir/../<name>.log``.

  ``stop_when(energies)``, given the energies of the rows seen so far ((rows,) Ha), may
  end the run early: once it returns True the run gets SIGTERM (it saves and exits 143,
  which then counts as success). ``env``: the run's environment (default this one's).

  Raises:
    RuntimeError: the run failed (the log's last lines are in the message).
  """
  run_dir = pathlib.Path(run_dir)
  log = run_dir.parent / f'{run_dir.name}.log'
  run_dir.parent.mkdir(parents=True, exist_ok=True)
  csv = run_dir / 'train_stats.csv'
  seen: list[float] = []
  lines: list[tuple[float, str]] = []
  start = time.monotonic()
  proc = subprocess.Popen(
    [sys.executable, '-m', 'ferminet.cli', *args],
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    text=True,
    bufsize=1,
    env=env,
  )
  reader = threading.Thread(target=_read_lines, args=(proc.stdout, lines, start, log))
  reader.start()
  stopped = False
  checked = 0
  while proc.poll() is None:
    time.sleep(poll_s)
    _count_rows(csv, seen, time.monotonic() - start)
    if stop_when is not None and not stopped and len(seen) > checked:
      checked = len(seen)
      if stop_when(_read_rows(csv)[1]):
        proc.send_signal(signal.SIGTERM)
        stopped = True
  wall = time.monotonic() - start
  reader.join()
  _count_rows(csv, seen, wall)
  if proc.returncode != 0 and not (stopped and proc.returncode == 128 + signal.SIGTERM):
    tail = '\n'.join(log.read_text().splitlines()[-15:])
    raise RuntimeError(f'ferminet exited with {proc.returncode}; {log}:\n{tail}')
  steps, energy, variance = _read_rows(csv)
  return Launch(run_dir, wall, steps, energy, variance, np.array(seen[: steps.size]), lines)


def _read_rows(csv: pathlib.Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(steps, energies, variances) of the complete rows of a train_stats.csv."""
  text = csv.read_text()
  rows = [line.split(',') for line in text[: text.rfind('\n') + 1].splitlines()]
  header, rows = rows[0], rows[1:]
  col = {name: header.index(name) for name in ('step', 'energy', 'variance')}
  return (
    np.array([int(r[col['step']]) for r in rows], dtype=int),
    np.array([float(r[col['energy']]) for r in rows]),
    np.array([float(r[col['variance']]) for r in rows]),
  )


def _read_lines(stream, lines: list, start: float, log: pathlib.Path) -> None:
  """Collects (seconds from launch, line) from ``stream`` and writes them to ``log``."""
  with log.open('w') as out:
    for line in stream:
      now = time.monotonic() - start
      lines.append((now, line.rstrip('\n')))
      out.write(f'[{now:8.2f} s] {line}')
      out.flush()


def _count_rows(csv: pathlib.Path, seen: list[float], now: float) -> None:
  """Appends ``now`` once for every complete row that appeared since the last call."""
  try:
    text = csv.read_text()
  except OSError:
    return
  complete = max(text.count('\n') - 1, 0)  # without the header; a partial row has no \n
  seen.extend([now] * (complete - len(seen)))


def rolling_mean(values: np.ndarray, window: int) -> np.ndarray:
  """Trailing means: entry i is the mean of values[i - window + 1 : i + 1], shape
  (len - window + 1,)."""
  c = np.cumsum(np.concatenate([[0.0], values]))
  return (c[window:] - c[:-window]) / window


def first_where(values: np.ndarray, window: int, condition) -> int | None:
  """Index (into ``values``) of the first row whose trailing ``window``-row mean satisfies
  ``condition`` (an array function of the means); None when none does."""
  if values.size < window:
    return None
  hits = np.nonzero(condition(rolling_mean(values, window)))[0]
  return None if hits.size == 0 else int(hits[0]) + window - 1


def first_within(values: np.ndarray, target: float, tolerance: float, window: int) -> int | None:
  """Index of the first row whose trailing ``window``-row mean is within ``tolerance`` of
  ``target`` (either side); None when none is."""
  return first_where(values, window, lambda mean: np.abs(mean - target) <= tolerance)


def never(value, spec: str = 'd') -> str:
  """``value`` formatted, or 'never' for None (a threshold not reached)."""
  return 'never' if value is None else format(value, spec)


def write_result(stem: str, payload: dict) -> pathlib.Path:
  """Writes ``payload`` with the date, jax version and machine to
  ``benchmarks/results/<stem>_<date>_jax<version><suffix>.json``; ``payload['suffix']``
  (popped, default '') ends the name."""
  suffix = payload.pop('suffix', '')
  record = {
    'date': datetime.date.today().isoformat(),
    'jax': jax.__version__,
    'machine': f'{platform.machine()}, {len(jax.devices())} x {jax.devices()[0].device_kind}',
    **payload,
  }
  out = pathlib.Path(__file__).parent / 'results'
  out.mkdir(exist_ok=True)
  path = out / f'{stem}_{record["date"]}_jax{jax.__version__}{suffix}.json'
  path.write_text(json.dumps(record, indent=1))
  print(f'wrote {path}')
  return path
