"""Stopping a run cleanly on SIGTERM (cluster pre-emption) or SIGINT (Ctrl-C).

The first signal only sets a flag: the training loop finishes the current
iteration, writes a checkpoint and the statistics, and stops. A second signal
of either kind ends the process at once, without saving.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from types import FrameType, TracebackType

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequests:
  """Context manager that records the first SIGTERM/SIGINT instead of dying.

  ``requested`` is the signal number received, or None. Outside the main
  thread (where Python cannot install handlers) it does nothing.
  """

  def __init__(self) -> None:
    self.requested: int | None = None
    self._previous: dict[int, object] = {}

  def _handle(self, signum: int, frame: FrameType | None) -> None:
    if self.requested is not None:  # the second signal: abort now
      print(f'\n{signal.Signals(signum).name} again: aborting without saving', file=sys.stderr)
      sys.stderr.flush()
      signal.signal(signum, signal.SIG_DFL)
      os.kill(os.getpid(), signum)
      return
    self.requested = signum
    print(
      f'\n{signal.Signals(signum).name} received: finishing this step, then saving a '
      'checkpoint (send it again to abort at once)',
      file=sys.stderr,
      flush=True,
    )

  @property
  def name(self) -> str:
    return signal.Signals(self.requested).name if self.requested is not None else ''

  def __enter__(self) -> StopRequests:
    if threading.current_thread() is threading.main_thread():
      for signum in SIGNALS:
        self._previous[signum] = signal.signal(signum, self._handle)
    return self

  def __exit__(
    self,
    exc_type: type[BaseException] | None,
    exc: BaseException | None,
    tb: TracebackType | None,
  ) -> None:
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)
    self._previous.clear()
