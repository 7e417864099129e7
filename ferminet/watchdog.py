"""A run that stops making progress exits with one clear line instead of hanging.

The host dispatches iterations without waiting for them, so "progress" is
measured on the devices: the loop hands the watchdog one output of each step
(``track``), and a background thread checks, without blocking, which of them
have finished (``jax.Array.is_ready``). If work is pending and nothing has
finished for longer than the allowance, the process prints what it is stuck in
and exits with status :data:`EXIT_STALLED`: a stuck batch job fails instead of
burning its allocation. A hung device computation cannot be interrupted from
Python (a signal handler would never run), hence the hard exit.

The allowance is ``debug.stall_minutes`` (0: no watchdog), raised to
:data:`SLOW_FACTOR` times the longest gap between two finished steps seen so
far, so that a molecule whose iterations are slow is never mistaken for a
stalled one. Compilation happens before a step is tracked and never counts.
"""

from __future__ import annotations

import collections
import os
import sys
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

import jax

EXIT_STALLED = 3
SLOW_FACTOR = 10.0


def _ready(tree: Any) -> bool:
  return all(leaf.is_ready() for leaf in jax.tree.leaves(tree) if hasattr(leaf, 'is_ready'))


class Watchdog:
  """Context manager running the stall check in a daemon thread.

  Args:
    minutes: the allowance for the first step of a stage; 0 or less disables it.
    hint: appended to the message (e.g. where the last checkpoint is).
    poll_s: seconds between checks.
    on_stall: called with the message instead of printing it and exiting (tests).
  """

  def __init__(
    self,
    minutes: float,
    hint: str = '',
    poll_s: float = 2.0,
    on_stall: Callable[[str], None] | None = None,
  ) -> None:
    self.timeout_s = 60.0 * minutes
    self.hint = hint
    self.poll_s = poll_s
    self.on_stall = on_stall
    self._lock = threading.Lock()
    self._pending: collections.deque[tuple[str, Any]] = collections.deque()
    self._last_done = 'nothing yet'
    self._since = time.monotonic()  # the last finished step, or when work became pending
    self._slowest = 0.0
    self._stop = threading.Event()
    self._thread: threading.Thread | None = None

  @property
  def enabled(self) -> bool:
    return self.timeout_s > 0

  def track(self, label: str, outputs: Any) -> None:
    """Registers the (device) outputs of one dispatched step, e.g. ``'train step 12'``."""
    if not self.enabled:
      return
    with self._lock:
      if not self._pending:
        self._since = time.monotonic()
      self._pending.append((label, outputs))

  def allowance_s(self) -> float:
    """Seconds without a finished step after which a run counts as stalled."""
    return max(self.timeout_s, SLOW_FACTOR * self._slowest)

  def check(self) -> str | None:
    """Retires finished steps; returns the stall message if the run is stuck, else None."""
    now = time.monotonic()
    with self._lock:
      while self._pending and _ready(self._pending[0][1]):
        self._last_done = self._pending.popleft()[0]
        self._slowest = max(self._slowest, now - self._since)
        self._since = now
      if not self._pending or now - self._since <= self.allowance_s():
        return None
      waiting = self._pending[0][0]
    return (
      f'ferminet: stalled: {waiting} has not finished after {(now - self._since) / 60:.1f} min '
      f'(allowance {self.allowance_s() / 60:.1f} min, debug.stall_minutes; last finished: '
      f'{self._last_done}); the run is stuck, not slow: exiting with status {EXIT_STALLED}.'
      + (f' {self.hint}' if self.hint else '')
    )

  def _loop(self) -> None:
    while not self._stop.wait(self.poll_s):
      message = self.check()
      if message is None:
        continue
      if self.on_stall is not None:
        self.on_stall(message)
        return
      print(message, file=sys.stderr, flush=True)
      sys.stdout.flush()
      os._exit(EXIT_STALLED)  # the main thread is blocked inside the runtime

  def __enter__(self) -> Watchdog:
    if self.enabled:
      self._thread = threading.Thread(target=self._loop, name='ferminet-watchdog', daemon=True)
      self._thread.start()
    return self

  def __exit__(
    self,
    exc_type: type[BaseException] | None,
    exc: BaseException | None,
    tb: TracebackType | None,
  ) -> None:
    self._stop.set()
    if self._thread is not None:
      self._thread.join()
      self._thread = None
