"""The stall watchdog: a stuck step ends the run with one line and status 3."""

import os
import pathlib
import shutil
import subprocess
import sys
import textwrap
import time

import pytest

from ferminet import watchdog

ROOT = pathlib.Path(__file__).resolve().parent.parent


class _Step:
  """Stands in for a device array: ``is_ready`` is whatever the test sets."""

  def __init__(self, ready=False):
    self.ready = ready

  def is_ready(self):
    return self.ready


def test_finished_steps_keep_it_quiet_and_a_stuck_one_is_named(monkeypatch):
  clock = [100.0]
  monkeypatch.setattr(watchdog.time, 'monotonic', lambda: clock[0])
  dog = watchdog.Watchdog(1.0, hint='Checkpoints are in out/.')
  assert dog.check() is None  # nothing pending: never stalled
  first, second = _Step(), _Step()
  dog.track('train step 1', first)
  dog.track('train step 2', second)
  clock[0] += 50
  assert dog.check() is None
  first.ready = True
  clock[0] += 5  # step 1 took 55 s
  assert dog.check() is None
  assert dog.allowance_s() == watchdog.SLOW_FACTOR * 55  # raised above the 60 s
  clock[0] += 60.0  # within 10 x the slowest step: slow, not stuck
  assert dog.check() is None
  clock[0] += 10 * 55 - 60 + 1
  message = dog.check()
  assert message.startswith('ferminet: stalled: train step 2 has not finished after')
  assert 'last finished: train step 1' in message and 'status 3' in message
  assert message.endswith('Checkpoints are in out/.')


def test_idle_time_between_stages_does_not_count(monkeypatch):
  clock = [0.0]
  monkeypatch.setattr(watchdog.time, 'monotonic', lambda: clock[0])
  dog = watchdog.Watchdog(1.0)
  dog.track('burn-in step 1', _Step(ready=True))
  assert dog.check() is None
  clock[0] += 3600  # e.g. compiling the training step: nothing is pending
  dog.track('train step 1', _Step())
  clock[0] += 59
  assert dog.check() is None


def test_disabled_with_zero_minutes():
  dog = watchdog.Watchdog(0.0)
  dog.track('train step 1', _Step())
  with dog:
    assert not dog.enabled and dog._thread is None


def test_thread_reports_a_stall():
  seen = []
  with watchdog.Watchdog(0.5 / 60, poll_s=0.05, on_stall=seen.append) as dog:
    dog.track('pretraining step 3', _Step())
    deadline = time.monotonic() + 10
    while not seen and time.monotonic() < deadline:
      time.sleep(0.05)
  assert seen and 'pretraining step 3' in seen[0]


@pytest.mark.slow  # 20-30 s (a real run in a subprocess); the thread test above is quick
@pytest.mark.compat  # so CI's compat runs include it
def test_stalled_training_run_exits_with_the_message(tmp_path):
  """A real run whose third training step never finishes.

  The step's energy is replaced by an output that is never ready and blocks the
  main thread when the loop fetches it, as a hung device computation does.
  """
  code = textwrap.dedent(
    f"""
    import sys, time
    sys.path.insert(0, {str(ROOT / 'tests')!r})
    from test_train import tiny_config
    from ferminet import train

    class Hung:
      def is_ready(self):
        return False

      def __array__(self, *args, **kwargs):
        time.sleep(3600)

    original = train.iteration

    def iteration(run, state):
      state, stats = original(run, state)
      if state.step == 3:
        stats['energy'] = Hung()
      return state, stats

    train.iteration = iteration
    cfg = tiny_config({str(tmp_path)!r}, optimizer='adam', iterations=50)
    cfg.debug.stall_minutes = 3 / 60
    cfg.pretrain.iterations = 0
    cfg.mcmc.burn_in = 1
    train.train(cfg)
    """
  )
  start = time.monotonic()
  out = subprocess.run(
    [sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True, timeout=300
  )
  assert out.returncode == watchdog.EXIT_STALLED, out.stderr[-2000:]
  last = out.stderr.strip().splitlines()[-1]
  assert last.startswith('ferminet: stalled: train step 3 has not finished'), last
  assert str(tmp_path) in last
  assert time.monotonic() - start < 240


def _on_two_cpus(command):
  """The command on at most two CPUs: XLA sizes its thread pool from the affinity."""
  cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else []
  if len(cpus) > 2 and shutil.which('taskset'):
    return ['taskset', '-c', f'{cpus[0]},{cpus[1]}', *command]
  return command


@pytest.mark.slow  # about 30 s; CI's compat runs (pytest -m compat) include it
@pytest.mark.compat  # most telling on jaxlib 0.10.x (Python 3.11's newest), run there in CI
def test_default_n2_kfac_iterations_finish_on_two_threads(tmp_path):
  """The jaxlib 0.10 deadlock case: default network, KFAC and forward Laplacian, N2.

  Before ferminet.linalg this hung after the first iteration in 7 of 8 tries on
  jaxlib 0.10.2 with two cores. A stall ends the child with the watchdog's
  message (status 3) rather than at the timeout.
  """
  out = subprocess.run(
    _on_two_cpus([sys.executable, str(ROOT / 'bin' / 'ferminet'), '--config', 'configs/diatomic.py',
     '--config.system.molecule_name', 'N2', '--config.batch_size', '64',
     '--config.pretrain.iterations', '2', '--config.mcmc.burn_in', '2',
     '--config.optim.iterations', '3',
     '--config.debug.stall_minutes', '1', '--config.log.save_path', str(tmp_path)]),
    cwd=ROOT, capture_output=True, text=True, timeout=480,
  )  # fmt: skip
  assert out.returncode == 0, out.stderr[-2000:]
  steps = [line.split(',')[0] for line in (tmp_path / 'train_stats.csv').read_text().splitlines()]
  assert steps[1:] == ['0', '1', '2']
