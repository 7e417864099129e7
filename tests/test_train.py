"""The training engine end to end, on tiny networks."""

import csv
import dataclasses
import itertools
import json
import os
import pathlib
import shutil
import signal
import types

import jax
import numpy as np
import pytest
from conftest import tiny_network_cfg

from ferminet import (
  analysis,
  checkpoint,
  errors,
  optimizers,
  parallel,
  pretrain,
  scf,
  train,
  writers,
)
from ferminet import config as config_lib

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
  cfg.debug.deterministic = True
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
  assert list(rows[0]) == ['step', 'energy', 'ewmean', 'ewvar', 'pmove', 'variance', 'rolled_back']
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
  assert result.reference == -0.5
  # Variational: no iteration's mean over its 32 walkers lies below the exact -0.5 Ha by more
  # than 4 of its standard errors (sqrt(Var E_L / 32)), and neither does the summary.
  for r in rows:
    assert float(r['energy']) > -0.5 - 4 * np.sqrt(float(r['variance']) / 32), r
  assert -0.5 - 3 * result.stderr < result.energy < 0.0  # 11 iterations in: -0.23 +/- 0.07
  assert (path / 'ckpt_00000006_final.pkl').exists()
  assert (path / 'ckpt_00000000.pkl').exists()  # after pretraining and burn-in


@pytest.fixture(scope='module')
def straight_run(tmp_path_factory):
  """An uninterrupted run of 10 iterations (same seed as kfac_run)."""
  path = tmp_path_factory.mktemp('straight')
  return train.train(tiny_config(path, iterations=10)), path


def _assert_same_run(path, result, straight_run):
  """Bitwise: the same train_stats.csv and final parameters as the uninterrupted run."""
  straight, straight_path = straight_run
  assert (path / 'train_stats.csv').read_bytes() == (straight_path / 'train_stats.csv').read_bytes()
  for a, b in zip(
    jax.tree.leaves(result.state.params), jax.tree.leaves(straight.state.params), strict=True
  ):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_deterministic_runs_are_identical(kfac_run, straight_run):
  """debug.deterministic: two fresh runs write the same rows (6 of 10 here)."""
  _, path = kfac_run
  _, straight_path = straight_run
  rows = (path / 'train_stats.csv').read_text().splitlines()
  assert len(rows) == 7
  assert rows == (straight_path / 'train_stats.csv').read_text().splitlines()[:7]


def test_restore_continues_csv(kfac_run, straight_run):
  _, path = kfac_run
  # A row written after the last checkpoint (as if the job died) must be replaced, not duplicated.
  with open(path / 'train_stats.csv', 'a') as f:
    f.write('6,-0.5,-0.5,0,0.5,0.01,0\n')
  result = train.train(tiny_config(path, iterations=10))
  steps, _ = _steps(path / 'train_stats.csv')
  assert steps == list(range(10))
  assert result.state.step == 10
  _assert_same_run(path, result, straight_run)


@pytest.mark.slow  # about 20 s; the CLI's SIGTERM test stays in the default run
def test_sigterm_saves_then_resume_is_exact(straight_run, tmp_path, monkeypatch):
  before = signal.getsignal(signal.SIGTERM)
  iteration = train.iteration

  def terminated_during_step_3(run, state):
    if state.step == 3:
      os.kill(os.getpid(), signal.SIGTERM)  # as a cluster pre-empting the job
    return iteration(run, state)

  monkeypatch.setattr(train, 'iteration', terminated_during_step_3)
  with pytest.raises(errors.Interrupted, match='SIGTERM after step 4') as info:
    train.train(tiny_config(tmp_path, iterations=10))
  assert info.value.signum == signal.SIGTERM
  assert signal.getsignal(signal.SIGTERM) == before  # handlers restored
  steps, _ = _steps(tmp_path / 'train_stats.csv')
  assert steps == [0, 1, 2, 3]  # the step in progress was finished and written
  assert (tmp_path / 'ckpt_00000004.pkl').exists()
  monkeypatch.undo()
  result = train.train(tiny_config(tmp_path, iterations=10))
  _assert_same_run(tmp_path, result, straight_run)


def _inject_nan(monkeypatch, bad_calls, seen=None):
  """Optimizer steps number ``bad_calls`` return NaN parameters (test-only fault injection)."""
  make = optimizers.make

  def faulty_make(loss, cfg, **kwargs):
    optimizer = make(loss, cfg, **kwargs)
    calls = itertools.count()

    def step(params, state, keys, walkers):
      if seen is not None:
        seen.append(jax.device_get(params))
      params, state, energy, variance = optimizer.step(params, state, keys, walkers)
      if next(calls) in bad_calls:
        params = jax.tree.map(lambda p: p * np.nan, params)
      return params, state, energy, variance

    return dataclasses.replace(optimizer, step=step)

  monkeypatch.setattr(train.optimizers, 'make', faulty_make)


def test_nonfinite_step_is_rolled_back(tmp_path, monkeypatch):
  seen = []
  _inject_nan(monkeypatch, {3, 4}, seen)
  result = train.train(tiny_config(tmp_path, iterations=8))
  _, rows = _steps(tmp_path / 'train_stats.csv')
  assert [r['rolled_back'] for r in rows] == ['0', '0', '0', '1', '1', '0', '0', '0']
  # Steps 4 and 5 started from the parameters step 3 started from (KFAC state alike).
  for a, b, c in zip(*(jax.tree.leaves(seen[i]) for i in (3, 4, 5)), strict=True):
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)
  before, after = (jax.tree.leaves(seen[i]) for i in (2, 3))
  assert not all(np.array_equal(a, b) for a, b in zip(before, after, strict=True))
  assert np.isfinite(result.energy)
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(result.state.params))
  assert (tmp_path / 'ckpt_00000008_final.pkl').exists()


def test_persistent_nonfinite_steps_stop_the_run(tmp_path, monkeypatch):
  _inject_nan(monkeypatch, set(range(1000)))
  cfg = tiny_config(tmp_path, optimizer='adam', iterations=50, **{'optim.max_nonfinite_steps': 3})
  with pytest.raises(errors.NonFiniteError, match='in a row'):
    train.train(cfg)
  data = checkpoint.load_latest(tmp_path)
  assert data['step'] > 0
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(data['params']))


@pytest.mark.parametrize('optimizer', ['adam', 'none'])
def test_other_optimizers(tmp_path, optimizer):
  result = train.train(tiny_config(tmp_path, optimizer=optimizer, iterations=4))
  name = 'inference_stats.csv' if optimizer == 'none' else 'train_stats.csv'
  steps, _ = _steps(tmp_path / name)
  assert steps == list(range(4))
  assert np.isfinite(result.energy)


def test_interrupted_inference_continues(kfac_run, tmp_path, capsys):
  """Inference writes its own checkpoints: rerunning an interrupted one continues it and
  appends to inference_stats.csv (it used to start again and truncate the file)."""
  _, trained = kfac_run

  def infer(path, iterations):
    restore = {'log.restore_path': str(trained)}
    return train.train(tiny_config(path, optimizer='none', iterations=iterations, **restore))

  straight = infer(tmp_path / 'straight', 6)
  assert -1.0 < straight.energy < 0.0
  assert not list((tmp_path / 'straight').glob('ckpt_*'))  # no training checkpoints
  assert (tmp_path / 'straight' / 'inference_ckpt_00000006_final.pkl').exists()
  infer(tmp_path / 'split', 3)
  capsys.readouterr()
  second = infer(tmp_path / 'split', 6)
  assert 'continuing inference at step 3' in capsys.readouterr().out
  assert len(second.energies) == 3  # only the remaining steps were computed
  csv_bytes = [(tmp_path / p / 'inference_stats.csv').read_bytes() for p in ('straight', 'split')]
  assert csv_bytes[0] == csv_bytes[1]
  # Both record the training checkpoint they evaluate, the continued one too.
  evaluated = checkpoint.find_latest(trained)[1]['step']
  for p in ('straight', 'split'):
    record = json.loads((tmp_path / p / 'config.json').read_text())['log']['started_from']
    assert record['step'] == evaluated and record['path'] == str(trained.resolve())


def test_inference_in_the_training_folder_keeps_its_records(kfac_run, tmp_path, capsys):
  """Inference with save_path = the training folder: config.json, checkpoints and an
  earlier inference_stats.csv without a checkpoint are all kept."""
  run_dir = tmp_path / 'run'
  shutil.copytree(kfac_run[1], run_dir)
  before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
  (run_dir / 'inference_stats.csv').write_text((run_dir / 'train_stats.csv').read_text())
  train.train(tiny_config(run_dir, optimizer='none', iterations=2))
  assert 'kept as inference_stats.1.csv' in capsys.readouterr().out
  assert len(_steps(run_dir / 'inference_stats.1.csv')[0]) > 2
  assert _steps(run_dir / 'inference_stats.csv')[0] == [0, 1]
  for name, content in before.items():
    assert (run_dir / name).read_bytes() == content, name  # the training run's files
  config = json.loads((run_dir / 'inference_config.json').read_text())
  assert config['optim']['optimizer'] == 'none'
  # It names the training step it evaluates (ferminet-analyze --match-length compares it).
  assert config['log']['started_from']['step'] == checkpoint.find_latest(run_dir)[1]['step']
  summary, _ = analysis.analyze_run(run_dir)
  assert summary.stats_file == 'inference_stats.csv'
  assert summary.started_from == config['log']['started_from']


def _summary_of(tmp_path, energies, optimizer='kfac'):
  """What summarize prints for a run whose CSV holds ``energies`` (an H atom, Ha)."""
  tmp_path.mkdir()
  writer = writers.StatsWriter(tmp_path / 'train_stats.csv', first_step=0)
  for step, energy in enumerate(energies):
    writer.write(step, float(energy), 0.5, 0.01)
  writer.close()
  cfg = tiny_config(tmp_path, optimizer=optimizer)
  system = config_lib.system_of(config_lib.resolve(cfg))
  run = types.SimpleNamespace(
    cfg=cfg, system=system, inference=optimizer == 'none', save_path=tmp_path
  )
  return train.summarize(run, tmp_path / 'train_stats.csv', None, list(energies))


def test_summary_warns_when_the_energy_still_falls(tmp_path, capsys, monkeypatch):
  noise = np.random.default_rng(0).normal(size=400) * 0.01
  monkeypatch.setattr(
    'sys.argv', ['/somewhere/ferminet', '--config', 'configs/atom.py', '--config.system.atom=H']
  )
  falling = _summary_of(tmp_path / 'falling', np.linspace(-0.45, -0.5, 400) + noise)
  out = capsys.readouterr().out
  assert 'reblocked over steps 200-399: the second half of the run' in out
  assert 'warning: the energy is still falling' in out
  command = 'ferminet --config configs/atom.py --config.system.atom=H --config.optim.optimizer=none'
  assert command in out and f'--config.log.save_path={tmp_path / "falling"}' in out
  assert falling.energy == pytest.approx(np.mean(np.linspace(-0.45, -0.5, 400)[200:]), abs=2e-3)
  _summary_of(tmp_path / 'flat', -0.5 + noise)
  assert 'warning' not in capsys.readouterr().out


def test_pretraining_fits_hartree_fock(tmp_path):
  """Pretraining lowers the orbital error; the pretrained VMC energy is near HF."""
  cfg = tiny_config(
    tmp_path,
    atom='He',
    optimizer='none',
    iterations=30,
    **{'pretrain.iterations': 300, 'pretrain.lr': 3e-2, 'batch_size': 256, 'mcmc.burn_in': 20},
  )
  run = train.setup(cfg)
  hf = scf.hartree_fock(run.system, cfg.pretrain.basis)
  init_opt, step = pretrain.make_step(run.network, hf, (1, 1), True, 3e-3, 1.0, 3)
  state = train.fresh_state(run)
  params, opt_state, walkers, losses = state.params, init_opt(state.params), state.walkers, []
  width = state.width
  for i in range(60):
    key, ids = jax.random.PRNGKey(i), run.ids
    params, opt_state, walkers, width, fit, _ = step(params, opt_state, walkers, key, ids, width)
    losses.append(float(fit[0]))
  assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:5])
  # The whole path: fresh state -> 300 pretraining steps -> burn-in -> inference. The fitted
  # network is Hartree-Fock up to its fit (seeds 0 and 1: -8 +/- 6 and +18 +/- 14 mHa), and
  # variational: above the exact -2.903724 Ha.
  result = train.train(cfg)
  assert abs(result.energy - hf.energy) < 0.02 + 3 * result.stderr, (result, hf.energy)
  assert result.energy > result.reference - 3 * result.stderr


@pytest.mark.slow
def test_pretraining_stops_once_converged(tmp_path, capsys):
  """pretrain.tolerance: He pretraining stops at the end of a window once its mean MSE is
  less than 50% below the window before (fresh parameters: well within 300 iterations)."""
  extra = {'pretrain.iterations': 300, 'pretrain.lr': 3e-2, 'batch_size': 256}
  extra.update({'pretrain.tolerance': 0.5, 'pretrain.window': 20})
  run = train.setup(tiny_config(tmp_path, atom='He', **extra))
  capsys.readouterr()
  train.run_pretrain(run, train.fresh_state(run))
  line = next(x for x in capsys.readouterr().out.splitlines() if 'converged after' in x)
  done = int(line.split('converged after ')[1].split()[0])
  assert done % 20 == 0 and 40 <= done < 300, line


def test_pretraining_convergence_rule():
  """Window means 1, 0.5, 0.45: a 50% then a 10% drop; tolerance 0.2 stops at the third."""
  rule = train.Converged(0.2, 4)
  values = [1.0] * 4 + [0.5] * 4 + [0.45] * 4
  stops = [rule.add(jax.numpy.full((1,), v)) for v in values]
  assert stops == [False] * 11 + [True]
  assert '10.0% below the 4 before' in rule.message
  never = train.Converged(0.0, 1)
  assert not any(never.add(jax.numpy.full((1,), v)) for v in values)


def test_new_seed_per_run_is_recorded(tmp_path):
  """Without debug.deterministic each run draws its own seed and config.json records it."""
  seeds = []
  for name in ('a', 'b'):
    cfg = tiny_config(tmp_path / name, **{'debug.deterministic': False})
    run = train.setup(cfg)
    recorded = json.loads((tmp_path / name / 'config.json').read_text())['debug']['seed']
    assert recorded == run.cfg.debug.seed
    seeds.append(recorded)
  assert seeds[0] != seeds[1]


def test_rollback_checks_what_save_checks():
  """A step whose optimizer state or walkers are not finite is rolled back (save refuses
  to write them), not only one whose energy or parameters are not."""
  keep = jax.pmap(train._keep_finite, axis_name=parallel.AXIS)
  d = parallel.device_count()

  def state(opt=0.0, walker=0.0):
    tree = ({'w': np.ones(2)}, {'mu': np.array([opt, 1.0])}, np.full((3, 6), walker), 0.1)
    return parallel.replicate(tree)

  energy = np.zeros(d)
  old = state()
  for bad in (state(opt=np.inf), state(walker=np.nan)):
    kept, ok = keep(bad, old, energy)
    assert not np.asarray(ok).any()
    jax.tree.map(np.testing.assert_array_equal, kept, old)
  kept, ok = keep(state(opt=2.0), old, energy)
  assert np.asarray(ok).all() and float(kept[1]['mu'][0, 0]) == 2.0


@pytest.mark.slow  # about 25 s; the estimators themselves: tests/test_observables.py
def test_observables_in_training_inference_and_analysis(tmp_path, capsys):
  """observables.s2 and .dipole add their columns to both statistics files (training and an
  inference run continuing from it), and ferminet-analyze reblocks them."""
  from ferminet import analyze_cli, observables

  obs = {'observables.s2': True, 'observables.dipole': True}
  train.train(tiny_config(tmp_path, atom='Li', iterations=3, **obs, **{'pretrain.iterations': 0}))
  train.train(tiny_config(tmp_path, atom='Li', optimizer='none', iterations=2, **obs))
  added = ('s2', 'mu_x', 'mu_y', 'mu_z', 'dipole_x', 'dipole_y', 'dipole_z', 'dipole_debye')
  for name, steps in (('train_stats.csv', 3), ('inference_stats.csv', 2)):
    rows = list(csv.DictReader(open(tmp_path / name, newline='')))
    assert tuple(rows[0]) == writers.COLUMNS + added and len(rows) == steps
    for r in rows:  # Li at the origin: μ = Z·0 − Σ r = −(mu_x, mu_y, mu_z)
      mu = np.array([float(r[c]) for c in ('mu_x', 'mu_y', 'mu_z')])
      dipole = np.array([float(r[c]) for c in ('dipole_x', 'dipole_y', 'dipole_z')])
      np.testing.assert_allclose(dipole, -mu, rtol=1e-8)
      debye = observables.DEBYE_PER_AU * np.linalg.norm(dipole)
      np.testing.assert_allclose(float(r['dipole_debye']), debye, rtol=1e-8)
      assert 0.0 < float(r['s2']) < 4.0
  summary, _ = analysis.analyze_run(tmp_path)  # the inference file
  assert summary.stats_file == 'inference_stats.csv' and set(added) <= set(summary.observables)
  capsys.readouterr()
  analyze_cli.main([str(tmp_path)])
  out = capsys.readouterr().out
  assert f's2: {summary.observables["s2"].mean:.6f} +/- ' in out and 'hbar2' in out
  size = np.linalg.norm([summary.observables[f'dipole_{c}'].mean for c in 'xyz'])
  assert f'dipole_moment_D: {size * observables.DEBYE_PER_AU:.4f} +/- ' in out


def test_reference_observable_columns_are_read(tmp_path):
  """A train_stats.csv of DeepMind's FermiNet with its s2 and mu_* columns: analysed, and
  kept (not duplicated) when a run with the same observables continues it."""
  header = 'step,energy,ewmean,ewvar,pmove,s2,mu_x,mu_y,mu_z\n'
  rows = ''.join(
    f'{i},{-7.4 - 0.001 * (i % 3)},-7.4,0.0,0.5,0.75,0.0,0.0,{0.1 * (i % 2)}\n' for i in range(40)
  )
  (tmp_path / 'train_stats.csv').write_text(header + rows)
  summary, _ = analysis.analyze_run(tmp_path)
  np.testing.assert_allclose(summary.observables['s2'].mean, 0.75)
  np.testing.assert_allclose(summary.observables['mu_z'].mean, 0.05)
  writer = writers.StatsWriter(
    tmp_path / 'train_stats.csv', 40, observables=('s2', 'mu_x', 'mu_y', 'mu_z')
  )
  writer.write(40, -7.41, 0.5, 0.1, observed={'s2': 0.8, 'mu_x': 0.0, 'mu_y': 0.0, 'mu_z': 0.2})
  writer.close()
  lines = (tmp_path / 'train_stats.csv').read_text().splitlines()
  assert lines[0] == ','.join(writers.COLUMNS + ('s2', 'mu_x', 'mu_y', 'mu_z'))
  assert lines[1].split(',')[7] == '0.75' and lines[-1].split(',')[7] == '0.8'
