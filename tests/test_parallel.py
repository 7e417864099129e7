"""Devices and hosts: the same run on 1 device, 2 devices and 2 processes; checkpoints move
between layouts.

Every layout draws the same per-walker random numbers, so sampling is identical
and the energies (Adam and KFAC) agree with the 1-device run up to the round-off of
means over devices. For KFAC this needs every parameter in a block whose estimate
is a mean over walkers: the envelope's π and σ are tagged as scale layers (before
that, kfac-jax's generic blocks made 1 and 2 devices differ by up to 4e-3 Ha).

Adam is invariant to the scale of the gradient, and so is KFAC while its norm
constraint binds; so the KFAC runs here use a norm constraint that does not bind
(FREE_KFAC), and the raw VMC gradient (with median clipping, whose centre is the
median of all walkers) is compared directly.
"""

import csv
import json
import os
import pathlib
import re
import socket
import subprocess
import sys

import numpy as np
import pytest
from test_train import _steps, tiny_config

from ferminet import checkpoint, loss, parallel, train

ROOT = pathlib.Path(__file__).resolve().parent.parent
ITERATIONS = 8
# KFAC with a norm constraint that does not bind: the update scales with the gradient
# (measured: 8 iterations with 1e6 and 1e9 give identical energies; with the default
# 1e-3 they differ by up to 0.39 Ha).
FREE_KFAC = {'optim.kfac.norm_constraint': 1e6}
# Median clipping, strongly active on the unpretrained network.
CLIPPED = {'optim.clip_median': True, 'optim.clip_local_energy': 1.0, 'pretrain.iterations': 0}
# Estimators that draw random numbers (the ECP's quadrature rotations) or add columns
# (observables): Mg with ccECP (2 valence electrons), S², the dipole and the density matrix.
ESTIMATORS = {
  'system.atom': 'Mg',
  'system.use_pp': True,
  'system.pp.symbols': ('Mg',),
  'observables.s2': True,
  'observables.dipole': True,
  'observables.density': True,
  'observables.density_basis': 'sto-3g',
}
pytestmark = pytest.mark.skipif(sys.platform != 'linux', reason='fake CPU devices, gloo')

# Runs the jobs given as JSON [{save, optimizer, iterations, restore}] and prints the energies.
SCRIPT = """
import json, pathlib, sys, warnings
sys.path.insert(0, 'tests')
warnings.filterwarnings('error', category=DeprecationWarning, module='ferminet|test_')
from absl import logging
logging.set_verbosity(logging.INFO)  # kfac-jax logs its layer registrations
from test_train import tiny_config
from test_parallel import raw_gradient
from ferminet import train
jobs, address, pid = json.loads(sys.argv[1]), sys.argv[2], int(sys.argv[3])
for job in jobs:
  cfg = tiny_config(pathlib.Path(job['save']), optimizer=job['optimizer'],
                    iterations=job['iterations'], **{'log.restore_path': job['restore']},
                    **job['overrides'])
  if address:
    cfg.distributed.coordinator_address = address
    cfg.distributed.num_processes = 2
    cfg.distributed.process_id = pid
  result = raw_gradient(cfg) if job['gradient'] else train.train(cfg).energies
  print('RESULT ' + json.dumps(result), flush=True)
"""


def _job(save, optimizer='kfac', iterations=ITERATIONS, restore='', gradient=False, extra=None):
  overrides = CLIPPED if gradient else FREE_KFAC if optimizer == 'kfac' else {}
  overrides = {**overrides, **(extra or {})}
  return dict(
    save=str(save), optimizer=optimizer, iterations=iterations, restore=str(restore),
    gradient=gradient, overrides=overrides,
  )  # fmt: skip


def raw_gradient(cfg):
  """The VMC gradient (averaged over devices) of a fresh network on fresh walkers, flat."""
  import jax

  run = train.setup(cfg)
  state = train.fresh_state(run)

  def grad(params, key, walkers):
    return parallel.pmean(jax.grad(lambda p: run.loss(p, key, walkers)[0])(params))

  keys = parallel.same_keys(state.key)
  batch = loss.Batch(state.walkers, run.ids)
  grads = jax.pmap(grad, axis_name=parallel.AXIS)(state.params, keys, batch)
  return np.concatenate([np.ravel(g) for g in jax.tree.leaves(parallel.first(grads))]).tolist()


def _launch(jobs, devices=1, address='', pid=0, script=SCRIPT):
  """``script`` (default: the jobs above) with ``devices`` fake CPU devices; argv: the jobs
  as JSON, the coordinator address and process id."""
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  env['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={devices}'
  return subprocess.Popen(
    [sys.executable, '-c', script, json.dumps(jobs), address, str(pid)],
    cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
  )  # fmt: skip


def _finish(process):
  """The energies of each job, and the process's stdout and stderr."""
  stdout, stderr = process.communicate(timeout=600)
  assert process.returncode == 0, stderr[-3000:]
  lines = [x for x in stdout.splitlines() if x.startswith('RESULT ')]
  return [json.loads(x[len('RESULT ') :]) for x in lines], stdout, stderr


@pytest.fixture(scope='module')
def one_device(tmp_path_factory):
  """KFAC and Adam runs, and the raw gradient, on 1 device (this process)."""
  path = tmp_path_factory.mktemp('one_device')
  kfac = train.train(tiny_config(path / 'kfac', iterations=ITERATIONS, **FREE_KFAC))
  adam = train.train(tiny_config(path / 'adam', optimizer='adam', iterations=4))
  gradient = raw_gradient(tiny_config(path / 'gradient', **CLIPPED))
  return kfac, adam, path, gradient


@pytest.fixture(scope='module')
def two_devices(tmp_path_factory, one_device):
  """The same runs on 2 devices; the 1-device KFAC checkpoint continued and used for
  inference on 2 devices."""
  path = tmp_path_factory.mktemp('two_devices')
  restore = one_device[2] / 'kfac'
  jobs = [
    _job(path / 'kfac'),
    _job(path / 'adam', 'adam', 4),
    _job(path / 'from_one', iterations=ITERATIONS + 2, restore=restore),
    _job(path / 'none', 'none', 3, restore=restore),
    _job(path / 'gradient', gradient=True),
  ]
  energies, _, stderr = _finish(_launch(jobs, devices=2))
  return energies, path, stderr


@pytest.mark.compat
def test_two_devices_sample_and_optimize_like_one(one_device, two_devices):
  kfac, adam, _, gradient = one_device
  (kfac2, adam2, _, _, gradient2), path, _ = two_devices
  np.testing.assert_allclose(adam2, adam.energies, rtol=1e-8)  # Adam: identical to round-off
  np.testing.assert_allclose(kfac2, kfac.energies, rtol=1e-8)  # KFAC too
  # The gradient itself (per-device medians made it differ by ~5% here).
  np.testing.assert_allclose(gradient2, gradient, rtol=1e-4, atol=1e-6 * np.abs(gradient).max())
  csv = [float(r['energy']) for r in _steps(path / 'kfac' / 'train_stats.csv')[1]]
  np.testing.assert_allclose(csv, kfac2, rtol=1e-9)  # 10 digits in the CSV


@pytest.mark.slow
def test_estimators_do_not_depend_on_the_device_layout(tmp_path):
  """The ECP's random rotations and the observables come from global walker indices: every
  column of the statistics file and the density matrices are the same on 1 and 2 devices (to
  the round-off of means)."""
  roots = tmp_path / 'one', tmp_path / 'two'
  train.train(tiny_config(roots[0] / 'estimators', optimizer='adam', iterations=3, **ESTIMATORS))
  _finish(_launch([_job(roots[1] / 'estimators', 'adam', 3, extra=ESTIMATORS)], devices=2))
  rows = [
    list(csv.DictReader(open(root / 'estimators' / 'train_stats.csv', newline='')))
    for root in roots
  ]
  columns = ('energy', 'variance', 's2', 'mu_z', 'dipole_x', 'dipole_debye')
  assert set(columns) <= set(rows[0][0]) and len(rows[0]) == len(rows[1]) == 3
  for column in columns:
    one, two = ([float(r[column]) for r in file] for file in rows)
    np.testing.assert_allclose(two, one, rtol=1e-7, atol=1e-9, err_msg=column)
  one, two = (np.load(root / 'estimators' / 'density_matrix.npy') for root in roots)
  assert one.shape == (3, 2, 9, 9)  # Mg in STO-3G: 9 functions
  np.testing.assert_allclose(two, one, rtol=1e-6, atol=1e-9)


def test_checkpoints_move_between_one_and_two_devices(two_devices, tmp_path):
  (_, _, continued, inference, *_), path, _ = two_devices
  # 1 device -> 2 devices: the steps continue in the new folder.
  assert _steps(path / 'from_one' / 'train_stats.csv')[0] == [ITERATIONS, ITERATIONS + 1]
  assert np.isfinite(continued).all()
  assert _steps(path / 'none' / 'inference_stats.csv')[0] == [0, 1, 2]
  assert np.isfinite(inference).all()
  # 2 devices -> 1 device.
  cfg = tiny_config(tmp_path, iterations=ITERATIONS + 2, **{'log.restore_path': str(path / 'kfac')})
  result = train.train(cfg)
  assert _steps(tmp_path / 'train_stats.csv')[0] == [ITERATIONS, ITERATIONS + 1]
  assert np.isfinite(result.energies).all()
  saved = checkpoint.load_latest(path / 'kfac')
  assert saved['walkers'].shape == (32, 3)  # all walkers, whatever the layout


@pytest.mark.compat
def test_kfac_registers_repeated_dense_layers_on_two_devices(two_devices):
  """Every FermiNet weight matrix is a repeated dense layer for KFAC (kfac-jax's INFO log)."""
  stderr = two_devices[2]
  weights = re.findall(r"'w': '([^']*)'", stderr)
  # 2 single-stream, 1 pair-stream and 1 orbital layer, for each of the 2 KFAC runs.
  assert len(weights) == 8, stderr[-3000:]
  assert all('repeated_dense' in label for label in weights), weights
  # The envelope's π and σ are scale layers, not generic blocks (2 KFAC runs x 2 tags).
  assert stderr.count('ScaleAndShiftDiagonal') == 4, stderr[-3000:]
  assert 'Generic' not in stderr


def _free_port():
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


@pytest.mark.compat
def test_two_processes(one_device, two_devices, tmp_path):
  """2 processes x 1 device: the 2-device energies and gradient on both, one writer,
  resumable on 1."""
  address = f'localhost:{_free_port()}'
  jobs = [_job(tmp_path / 'run'), _job(tmp_path / 'gradient', gradient=True)]
  processes = [_launch(jobs, address=address, pid=pid) for pid in (0, 1)]
  ((e0, g0), out0, _), ((e1, g1), out1, _) = (_finish(p) for p in processes)
  assert e0 == e1 and g0 == g1  # every statistic is a mean over all devices of all processes
  np.testing.assert_allclose(e0, two_devices[0][0], rtol=1e-8)  # = 1 process, 2 devices
  gradient = one_device[3]  # = 1 process, 1 device (median over both processes' walkers)
  np.testing.assert_allclose(g0, gradient, rtol=1e-4, atol=1e-6 * np.abs(gradient).max())
  assert _steps(tmp_path / 'run' / 'train_stats.csv')[0] == list(range(ITERATIONS))
  assert 'energy_Ha' in out0 and 'energy_Ha' not in out1  # process 0 reports
  assert 'train ' in out0 and 'train ' not in out1  # and prints the progress line
  saved = checkpoint.load_latest(tmp_path / 'run')
  assert saved['walkers'].shape == (32, 3)  # the walkers of both processes
  # Saved by 2 processes, continued by 1.
  result = train.train(tiny_config(tmp_path / 'run', iterations=ITERATIONS + 2, **FREE_KFAC))
  assert _steps(tmp_path / 'run' / 'train_stats.csv')[0] == list(range(ITERATIONS + 2))
  assert np.isfinite(result.energies).all()


def test_walker_layout_helpers():
  ids = np.asarray(parallel.walker_ids(8))
  assert ids.shape == (parallel.device_count(), 8 // parallel.device_count())
  assert ids.ravel().tolist() == list(range(8))
  walkers = np.arange(24.0).reshape(8, 3)
  np.testing.assert_array_equal(parallel.all_walkers(parallel.local_walkers(walkers)), walkers)
  assert parallel.agree((True, False), 2.5) == ((True, False), 2.5)
  assert parallel.same_on_all(7) == 7


def test_agreement_interval_is_time_based():
  """Several processes agree on signals at most AGREE_SECONDS apart, whatever the step time."""
  assert train.agreement_interval(0.1) == train.STATS_BATCH  # fast steps: every 20
  assert train.agreement_interval(float('inf')) == 1  # the compiling first iteration
  assert train.agreement_interval(5.0) == int(train.AGREE_SECONDS / 5.0)  # 6 iterations, 30 s
  assert train.agreement_interval(100.0) == 1  # slower than 30 s: every iteration
  assert train.agreement_interval(0.0) == train.STATS_BATCH
