"""The training engine end to end, on tiny networks."""

import csv
import os
import pathlib
import re
import subprocess
import sys

import jax
import numpy as np
import pytest
from conftest import tiny_network_cfg

from ferminet import config as config_lib
from ferminet import parallel, pretrain, scf, train

ROOT = pathlib.Path(__file__).resolve().parent.parent


def tiny_config(save_path, atom='H', optimizer='kfac', iterations=6, **overrides):
  cfg = config_lib.default()
  cfg.system.atom = atom
  cfg.batch_size = 32
  cfg.network = tiny_network_cfg()
  cfg.pretrain.iterations = 5
  cfg.mcmc.burn_in = 5
  cfg.mcmc.steps = 3
  cfg.optim.optimizer = optimizer
  cfg.optim.iterations = iterations
  cfg.log.save_path = str(save_path)
  for key, value in overrides.items():
    section, _, leaf = key.rpartition('.')
    node = cfg
    for part in section.split('.') if section else []:
      node = node[part]
    node[leaf] = value
  return cfg


def _steps(path):
  with open(path, newline='') as f:
    rows = list(csv.DictReader(f))
  assert list(rows[0]) == ['step', 'energy', 'ewmean', 'ewvar', 'pmove', 'variance']
  return [int(r['step']) for r in rows], rows


@pytest.fixture(scope='module')
def kfac_run(tmp_path_factory):
  path = tmp_path_factory.mktemp('kfac')
  return train.train(tiny_config(path, iterations=6)), path


@pytest.mark.compat
def test_kfac_end_to_end(kfac_run):
  result, path = kfac_run
  steps, rows = _steps(path / 'train_stats.csv')
  assert steps == list(range(6))
  assert all(np.isfinite(float(r['energy'])) for r in rows)
  assert all(0.0 < float(r['pmove']) <= 1.0 for r in rows)
  assert -1.0 < result.energy < 0.0  # H atom: near -0.5 Ha after pretraining
  assert result.reference == -0.5
  assert (path / 'ckpt_00000006.pkl').exists()


def test_restore_continues_csv(kfac_run, tmp_path):
  _, path = kfac_run
  # A row written after the last checkpoint (as if the job died) must be replaced, not duplicated.
  with open(path / 'train_stats.csv', 'a') as f:
    f.write('6,-0.5,-0.5,0,0.5,0.01\n')
  result = train.train(tiny_config(path, iterations=10))
  steps, rows = _steps(path / 'train_stats.csv')
  assert steps == list(range(10))
  assert result.state.step == 10
  # Continuing is exact: the same energies as one uninterrupted run of 10 iterations.
  train.train(tiny_config(tmp_path, iterations=10))
  _, straight = _steps(tmp_path / 'train_stats.csv')
  np.testing.assert_allclose(
    [float(r['energy']) for r in rows], [float(r['energy']) for r in straight], rtol=1e-9
  )


@pytest.mark.parametrize('optimizer', ['adam', 'none'])
def test_other_optimizers(tmp_path, optimizer):
  result = train.train(tiny_config(tmp_path, optimizer=optimizer, iterations=4))
  name = 'inference_stats.csv' if optimizer == 'none' else 'train_stats.csv'
  steps, _ = _steps(tmp_path / name)
  assert steps == list(range(4))
  assert np.isfinite(result.energy)


def test_inference_restores_trained_run(kfac_run, tmp_path):
  _, trained = kfac_run
  cfg = tiny_config(tmp_path, optimizer='none', iterations=3, **{'log.restore_path': str(trained)})
  result = train.train(cfg)
  assert not list(tmp_path.glob('ckpt_*'))  # inference never writes checkpoints
  assert -1.0 < result.energy < 0.0


def test_pretraining_fits_hartree_fock(tmp_path):
  """Pretraining lowers the orbital error; the pretrained VMC energy is near HF."""
  cfg = tiny_config(
    tmp_path,
    atom='He',
    optimizer='none',
    iterations=30,
    **{'pretrain.iterations': 300, 'pretrain.lr': 3e-3, 'batch_size': 256, 'mcmc.burn_in': 20},
  )
  run = train.setup(cfg)
  hf = scf.hartree_fock(run.system, cfg.pretrain.basis)
  init_opt, step = pretrain.make_step(run.network, hf, (1, 1), True, 3e-3, 1.0, 3)
  state = train.fresh_state(run)
  params, opt_state, walkers, losses = state.params, init_opt(state.params), state.walkers, []
  width = state.width
  for i in range(60):
    keys = parallel.device_keys(jax.random.PRNGKey(i))
    params, opt_state, walkers, width, fit, _ = step(params, opt_state, walkers, keys, width)
    losses.append(float(fit[0]))
  assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:5])
  # The whole path: fresh state -> 300 pretraining steps -> burn-in -> inference.
  result = train.train(cfg)
  assert abs(result.energy - hf.energy) < 0.1, (result.energy, hf.energy)


@pytest.mark.compat
@pytest.mark.skipif(sys.platform != 'linux', reason='fake CPU devices')
def test_two_devices(tmp_path):
  """Tiny kfac, adam and none runs on 2 (fake CPU) devices, in a fresh process.

  kfac must register every FermiNet weight matrix as a repeated dense layer
  (kfac-jax logs its registrations at INFO level).
  """
  code = f"""
import pathlib, sys
sys.path.insert(0, 'tests')
import warnings
warnings.filterwarnings('error', category=DeprecationWarning, module='ferminet|test_')
from absl import logging
logging.set_verbosity(logging.INFO)
import jax
assert jax.local_device_count() == 2
from test_train import tiny_config
from ferminet import train
for opt in ('kfac', 'adam', 'none'):
  train.train(tiny_config(pathlib.Path({str(tmp_path)!r}) / opt, optimizer=opt, iterations=4))
"""
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=2', JAX_PLATFORMS='cpu')
  out = subprocess.run(
    [sys.executable, '-c', code], capture_output=True, text=True, cwd=ROOT, env=env, timeout=600
  )
  assert out.returncode == 0, out.stderr[-3000:]
  weights = re.findall(r"'w': '([^']*)'", out.stderr)
  assert len(weights) == 4, out.stderr[-3000:]  # 2 single-stream, 1 pair-stream, 1 orbital
  assert all('repeated_dense' in label for label in weights), weights
  for opt in ('kfac', 'adam', 'none'):
    name = 'inference_stats.csv' if opt == 'none' else 'train_stats.csv'
    steps, _ = _steps(tmp_path / opt / name)
    assert steps == list(range(4))
