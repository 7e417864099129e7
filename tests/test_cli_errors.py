"""Every input mistake: one line on stderr, exit status 2, no traceback (the CLI in a subprocess).

Also the signal path: SIGTERM stops a CLI run with a checkpoint and exit status 143.
"""

import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from ferminet import checkpoint
from ferminet import config as config_lib

ROOT = pathlib.Path(__file__).resolve().parent.parent
ATOM = ['--config', 'configs/atom.py']
ORGANIC = ['--config', 'configs/organic.py', '--config.system.molecule_name', '']
TINY = [
  '--config.batch_size=32',
  '--config.network.determinants=2',
  '--config.network.ferminet.hidden_dims=((8, 4), (8, 4))',
  '--config.pretrain.iterations=5',
  '--config.mcmc.burn_in=5',
  '--config.mcmc.steps=3',
]


def _cli(*args, env=None, cwd=None):
  return subprocess.run(
    [sys.executable, str(ROOT / 'bin' / 'ferminet'), *args],
    capture_output=True,
    text=True,
    timeout=300,
    cwd=cwd or ROOT,
    env=env,
  )


def _one_line_error(out, *fragments):
  assert out.returncode == 2, (out.returncode, out.stdout[-500:], out.stderr[-2000:])
  assert 'Traceback' not in out.stderr
  err = [line for line in out.stderr.splitlines() if 'xla_bridge' not in line]
  assert len(err) == 1 and err[0].startswith('ferminet: error: '), out.stderr
  for fragment in fragments:
    assert fragment in err[0], err[0]
  return err[0]


@pytest.fixture(scope='module')
def files(tmp_path_factory):
  d = tmp_path_factory.mktemp('inputs')
  (d / 'same.xyz').write_text('2\nunits=angstrom\nH 0 0 0\nH 0 0 0\n')
  (d / 'empty.xyz').write_text('0\nno atoms\n')
  (d / 'broken.py').write_text('def get_config(:\n')
  (d / 'a_file').write_text('')
  (d / 'no_checkpoints').mkdir()
  other = d / 'other_system'  # a checkpoint of a one-electron system
  checkpoint.save(other, {'step': 3, 'meta': {'electrons': (1, 0)}, 'params': {}})
  return d


CASES = {
  'unknown element': (ATOM + ['--config.system.atom', 'Xx'], ['unknown element', 'Xx']),
  'odd electrons, spin 0': (
    ATOM + ['--config.system.atom', 'Li', '--config.system.spin_polarisation', '0'],
    ['spin polarisation 0', 'use 1'],
  ),
  'charge leaves no electrons': (
    ATOM + ['--config.system.atom', 'H', '--config.system.charge', '2'],
    ['leaves -1 electrons'],
  ),
  'negative electrons in a channel': (
    ATOM + ['--config.system.atom', 'Li', '--config.system.electrons', '(-1, 4)'],
    ['>= 0 electrons'],
  ),
  'zero electrons': (
    ATOM + ['--config.system.atom', 'Li', '--config.system.electrons', '(0, 0)'],
    ['at least one electron'],
  ),
  'batch_size zero': (ATOM + ['--config.batch_size', '0'], ['batch_size must be > 0']),
  'misspelled key': (ATOM + ['--config.batch_sizee', '8'], ["did you mean 'batch_size'"]),
  'misspelled nested key': (
    ATOM + ['--config.optim.lr.decay_steps', '3'],
    ["did you mean 'optim.lr.decay'"],
  ),
  'wrong type': (ATOM + ['--config.batch_size', 'abc'], ['batch_size', 'abc']),
  'unknown units': (ATOM + ['--config.system.units', 'furlong'], ["'bohr' or 'angstrom'"]),
  'nuclei at one position': (
    ORGANIC + ['--config.system.xyz', '{d}/same.xyz'],
    ['same position'],
  ),
  'empty molecule': (ORGANIC + ['--config.system.xyz', '{d}/empty.xyz'], ['empty']),
  'unknown molecule_name': (
    ['--config', 'configs/organic.py', '--config.system.molecule_name', 'CH5'],
    ["unknown molecule_name 'CH5'", 'CH4'],
  ),
  'config file missing': (
    ['--config', 'configs/no_such.py'],
    ['does not exist', 'shipped configs', 'configs/atom.py', 'configs/hcl.py'],
  ),
  'config syntax error': (['--config', '{d}/broken.py'], ['syntax error', 'line 1']),
  'unknown basis': (ATOM + ['--config.pretrain.basis', 'cc-pv9z'], ['no basis set', 'cc-pv9z']),
  'restore_path missing': (
    ATOM + ['--config.log.restore_path', '{d}/nowhere'],
    ['restore_path', 'does not exist'],
  ),
  'restore_path without checkpoint': (
    ATOM + ['--config.log.restore_path', '{d}/no_checkpoints'],
    ['holds no checkpoint'],
  ),
  'negative iterations': (ATOM + ['--config.optim.iterations', '-5'], ['optim.iterations']),
  'boolean with a separate value': (
    ATOM + ['--config.debug.deterministic', 'True'],
    ['--config.KEY=True'],
  ),
  'unknown optimizer': (
    ATOM + ['--config.optim.optimizer', 'sgd'],
    ['kfac, adam, lamb, spring, none'],
  ),
  'unknown laplacian': (ATOM + ['--config.optim.laplacian', 'fd'], ['forward, folx, hessian']),
  'two system sources': (
    ATOM + ['--config.system.molecule_name', 'N2'],
    ["system.atom ('Li') and system.molecule_name ('N2')", 'set only one'],
  ),
  'KFAC periods': (
    ATOM + ['--config.optim.kfac.cov_update_every', '5'],
    ['cov_update_every (5) must not exceed', 'invert_every (1)'],
  ),
  'negative spin penalty': (
    ATOM + ['--config.optim.spin_energy', '-0.5'],
    ['optim.spin_energy must be >= 0'],
  ),
  'pseudopotentials without symbols': (
    ATOM + ['--config.system.use_pp=True'],
    ['system.use_pp needs system.pp.symbols'],
  ),
  'pseudopotential PySCF lacks': (
    ATOM
    + [
      '--config.system.use_pp=True',
      "--config.system.pp.symbols=('Li',)",
      '--config.system.pp.type=nope',
    ],
    ["no 'nope' pseudopotential for Li"],
  ),
  'min_damping without effect': (
    ATOM + ['--config.optim.kfac.min_damping', '1e-3'],
    ['min_damping', 'no effect', 'adaptive damping'],
  ),
  'save_path not writable': (
    ATOM + ['--config.log.save_path', '{d}/a_file/run'],
    ['save_path', 'not a writable folder'],
  ),
}


@pytest.mark.parametrize('case', CASES)
def test_bad_input_is_one_clear_line(case, files):
  args, fragments = CASES[case]
  _one_line_error(_cli(*[a.format(d=files) for a in args], '--dry_run'), *fragments)


def test_batch_size_not_divisible_by_devices():
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=2', JAX_PLATFORMS='cpu')
  out = _cli(*ATOM, '--config.batch_size', '3', '--dry_run', env=env)
  _one_line_error(out, 'not divisible by the 2 devices')


def test_checkpoint_of_another_system(files, tmp_path):
  out = _cli(
    *ATOM, *TINY, '--config.system.atom', 'He',
    '--config.log.restore_path', str(files / 'other_system'),
    '--config.log.save_path', str(tmp_path),
  )  # fmt: skip
  _one_line_error(out, 'does not match this run', 'electrons')


def test_debug_shows_the_traceback():
  out = _cli(*ATOM, '--config.system.atom', 'Xx', '--dry_run', '--debug')
  assert out.returncode != 0 and 'Traceback' in out.stderr


def test_sigterm_stops_cli_run_with_checkpoint(tmp_path):
  process = subprocess.Popen(
    [sys.executable, str(ROOT / 'bin' / 'ferminet'), *ATOM, *TINY,
     '--config.system.atom', 'H', '--config.optim.iterations', '100000',
     '--config.log.save_path', str(tmp_path)],
    cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
  )  # fmt: skip
  csv_path = tmp_path / 'train_stats.csv'
  deadline = time.monotonic() + 240
  # The step-0 checkpoint (after pretraining and burn-in) marks the start of the loop.
  while time.monotonic() < deadline and process.poll() is None:
    if (tmp_path / 'ckpt_00000000.pkl').exists():
      break
    time.sleep(0.2)
  process.send_signal(signal.SIGTERM)
  stdout, stderr = process.communicate(timeout=120)
  assert process.returncode == 128 + signal.SIGTERM, stderr[-2000:]
  assert 'Traceback' not in stderr
  last = stderr.strip().splitlines()[-1]
  assert last.startswith('ferminet: stopped by SIGTERM after step') and 'rerun' in last
  steps = [int(line.split(',')[0]) for line in csv_path.read_text().splitlines()[1:]]
  assert steps and steps == list(range(len(steps)))
  newest = checkpoint.load_latest(tmp_path)
  assert newest['step'] == len(steps)
  assert np.isfinite(newest['walkers']).all()


def test_second_signal_aborts_at_once(tmp_path):
  """The first SIGINT is recorded; the second ends the process without waiting."""
  code = (
    'import sys, time\n'
    'from ferminet import interrupts\n'
    'with interrupts.StopRequests() as stop:\n'
    '  print("ready", flush=True)\n'
    '  while True:\n'
    '    time.sleep(0.05)\n'
    '    if stop.requested: print("requested", flush=True); break\n'
    '  time.sleep(60)\n'
  )
  process = subprocess.Popen(
    [sys.executable, '-c', code], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    text=True,
  )  # fmt: skip
  assert process.stdout.readline().strip() == 'ready'
  process.send_signal(signal.SIGINT)
  assert process.stdout.readline().strip() == 'requested'
  start = time.monotonic()
  process.send_signal(signal.SIGINT)
  process.wait(timeout=30)
  assert process.returncode == -signal.SIGINT and time.monotonic() - start < 10
  assert 'aborting without saving' in process.stderr.read()


def test_compilation_cache_folder():
  """debug.compilation_cache: 'auto' is the user cache folder; JAX's own variable wins."""
  cfg = config_lib.default()
  assert config_lib.compilation_cache_dir(cfg, {}) == os.path.join(
    os.path.expanduser('~'), '.cache', 'ferminet', 'jax'
  )
  assert config_lib.compilation_cache_dir(cfg, {'XDG_CACHE_HOME': '/c'}) == '/c/ferminet/jax'
  assert config_lib.compilation_cache_dir(cfg, {'JAX_COMPILATION_CACHE_DIR': ''}) is None
  cfg.debug.compilation_cache = ''
  assert config_lib.compilation_cache_dir(cfg, {}) is None
  cfg.debug.compilation_cache = '/x/y'
  assert config_lib.compilation_cache_dir(cfg, {}) == '/x/y'


@pytest.mark.slow
def test_compilation_cache_gives_the_same_run(tmp_path):
  """A second launch finds every program of the first in the cache and writes the same
  train_stats.csv."""
  env = {k: v for k, v in os.environ.items() if k != 'JAX_COMPILATION_CACHE_DIR'}
  cache = tmp_path / 'cache'
  outputs, entries = [], []
  for name in ('cold', 'warm'):
    out = _cli(
      *ATOM, *TINY, '--config.system.atom=H', '--config.optim.iterations=4',
      '--config.debug.deterministic=True', f'--config.debug.compilation_cache={cache}',
      f'--config.log.save_path={tmp_path / name}', env=env,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert f'compilation cache: {cache}' in out.stdout
    outputs.append((tmp_path / name / 'train_stats.csv').read_text())
    entries.append(sorted(p.name for p in cache.iterdir() if p.name.endswith('-cache')))
  assert len(entries[0]) >= 3  # at least pretraining, sampling and the KFAC step
  # Every program the first launch compiled (and kept) is the same in the second: the HF
  # orbitals (rounded) and the KFAC step (kfac-jax's layer-tag order, ferminet._compat).
  assert entries[1] == entries[0]
  assert outputs[0] == outputs[1]
