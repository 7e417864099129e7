"""ferminet-analyze: reblocking, references, relative energies, and the CLI on a real run."""

import json
import math
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from scipy import signal
from test_train import tiny_config

from ferminet import analysis, analyze_cli, errors, train
from ferminet import config as config_lib

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _ar1(phi, n, seed, sigma=1.0):
  """x_t = phi x_{t-1} + eps_t, started in its stationary distribution."""
  rng = np.random.default_rng(seed)
  eps = rng.normal(0.0, sigma, n)
  eps[0] *= 1 / math.sqrt(1 - phi**2)  # stationary start
  return signal.lfilter([1.0], [1.0, -phi], eps)


@pytest.mark.parametrize('phi', [0.5, 0.8, 0.9, 0.95])
@pytest.mark.parametrize('seed', [0, 1])
def test_reblock_ar1_matches_analytic_error(phi, seed):
  n = 2**17
  x = _ar1(phi, n, seed)
  var_x = 1.0 / (1 - phi**2)
  factor = (1 + phi) / (1 - phi)  # var(mean) = var_x / n * (1 + phi) / (1 - phi)
  expected = math.sqrt(var_x / n * factor)
  result = analysis.reblock(x)
  assert result.converged
  assert result.stderr == pytest.approx(expected, rel=0.15)
  assert result.autocorrelation_time == pytest.approx(factor, rel=0.3)
  assert result.naive_stderr < result.stderr


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_reblock_uncorrelated_gives_naive_error(seed):
  n = 20000
  x = np.random.default_rng(seed).normal(3.0, 2.0, n)
  result = analysis.reblock(x)
  assert result.naive_stderr == pytest.approx(2.0 / math.sqrt(n), rel=0.05)
  assert result.stderr == pytest.approx(result.naive_stderr, rel=0.15)
  assert result.mean == pytest.approx(3.0, abs=5 * 2.0 / math.sqrt(n))


def test_relative_energies_propagate_errors():
  ha = analysis.HARTREE_TO_KCAL_PER_MOL
  out = analysis.relative_energies(
    [('bicbut', -155.90, 0.0003), ('con_TS', -155.84, 0.0004), ('t-but', -155.95, 0.0)], 'bicbut'
  )
  assert [r.name for r in out] == ['bicbut', 'con_TS', 't-but']
  assert (out[0].energy, out[0].stderr) == (0.0, 0.0)
  assert out[1].energy == pytest.approx(0.06 * ha, rel=1e-9)
  assert out[1].stderr == pytest.approx(0.0005 * ha, rel=1e-9)  # 3-4-5
  assert out[2].energy == pytest.approx(-0.05 * ha, rel=1e-9)
  assert out[2].stderr == pytest.approx(0.0003 * ha, rel=1e-9)
  with pytest.raises(errors.AnalysisError, match='none of the runs'):
    analysis.relative_energies([('a', -1.0, 0.1)], 'b')
  with pytest.raises(errors.AnalysisError, match='same name'):
    analysis.relative_energies([('a', -1.0, 0.1), ('a', -1.1, 0.1)], 'a')


def test_literature_values():
  bicbut = analysis.literature('bicbut')
  assert {x.name for x in bicbut} == {'con_TS', 'dis_TS', 'g-but', 'gt-TS', 't-but'}
  assert not any(x.method.startswith('ZPVE used') for x in bicbut)  # ZPVEs, not energies
  ccsdt = {x.name: x.energy for x in bicbut if x.method.startswith('CCSD(T)')}
  assert ccsdt['t-but'] == -28.0 and ccsdt['con_TS'] == 40.4
  cycbut = analysis.literature('cycbut-ground')
  assert {x.name for x in cycbut} == {'cycbut-trans'}
  assert any(x.energy == 8.93 for x in cycbut)
  assert analysis.literature('H2') == []


def test_reference_lookup():
  assert analysis.reference('H4', (2, 2)).energy == -2.0155  # alias of 'H4 (square)'
  assert analysis.reference('H4 R=3.5 bohr', (2, 2)) is None  # another geometry
  assert analysis.reference('N2', (6, 8)) is None  # other electrons
  ref = analysis.reference('Li')
  assert (ref.energy, ref.hf_limit) == (-7.47806, -7.43275)


def _fake_run(path, energies, name='Li', electrons=(2, 1), stats_file='train_stats.csv'):
  """A run folder with ``stats_file`` (energies in Ha) and config.json; a second call
  on the same folder adds another statistics file."""
  path.mkdir(exist_ok=True)
  lines = ['step,energy,ewmean,ewvar,pmove,variance,rolled_back']
  lines += [f'{i},{e},{e},0,0.5,0.25,0' for i, e in enumerate(energies)]
  (path / stats_file).write_text('\n'.join(lines) + '\n')
  if name is not None:
    (path / 'config.json').write_text(
      json.dumps({'system': {'name': name, 'electrons': electrons}})
    )
  return path


def test_analyze_run_burn_in_and_reference(tmp_path):
  rng = np.random.default_rng(0)
  energies = np.concatenate([np.full(500, -7.0), -7.46 + 0.01 * rng.normal(size=500)])
  summary, _ = analysis.analyze_run(_fake_run(tmp_path / 'li', energies))
  assert summary.discarded == 500 and summary.energy.n == 500
  assert summary.energy.mean == pytest.approx(np.mean(energies[500:]))
  assert summary.error_mha == pytest.approx((summary.energy.mean + 7.47806) * 1000)
  corr = 100 * (-7.43275 - summary.energy.mean) / (-7.43275 + 7.47806)
  assert summary.correlation_pct == pytest.approx(corr)
  assert summary.pmove == 0.5 and summary.variance == 0.25
  # No config.json: the folder name; --name wins.
  nameless, _ = analysis.analyze_run(_fake_run(tmp_path / 'He', [-2.9] * 10, name=None), 0.0)
  assert nameless.name == 'He' and nameless.reference.energy == -2.903724
  assert nameless.discarded == 0
  named, _ = analysis.analyze_run(tmp_path / 'He', 0.5, name='X')
  assert named.name == 'X' and named.reference is None


def test_cli_input_errors(tmp_path, capsys):
  for args, message in [
    ([str(tmp_path / 'missing')], 'does not exist'),
    ([str(tmp_path)], 'no train_stats.csv'),
    ([str(tmp_path), '--burn-in', '1.5'], 'burn-in'),
  ]:
    with pytest.raises(SystemExit) as exit_info:
      analyze_cli.main(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


@pytest.fixture(scope='module')
def h2_run(tmp_path_factory):
  """A tiny real H2 training run (about ten seconds)."""
  path = tmp_path_factory.mktemp('h2')
  cfg = tiny_config(
    path, atom='', iterations=24, **{'system.molecule_name': 'H2', 'system.bond_length': 1.4}
  )  # 1.4 bohr: the geometry of the H2 reference energy
  train.train(cfg)
  return path


def test_cli_on_real_run_writes_png_and_json(h2_run, tmp_path):
  out = subprocess.run(
    [sys.executable, '-m', 'ferminet.analysis', str(h2_run), '--json'],
    capture_output=True,
    text=True,
    cwd=ROOT,
    timeout=300,
  )
  assert out.returncode == 0, out.stderr
  result = json.loads(out.stdout)
  (run,) = result['runs']
  assert run['name'] == 'H2' and run['steps'] == 24 and run['discarded'] == 12
  assert np.isfinite(run['energy']['mean']) and run['energy']['stderr'] > 0
  assert run['reference']['energy'] == -1.1744757
  png = pathlib.Path(run['plot'])
  assert png == h2_run / 'convergence.png'
  assert png.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  # Text output and a profile of two runs (the same folder under two names).
  text = subprocess.run(
    [sys.executable, '-m', 'ferminet.analysis', str(h2_run), str(h2_run), '--name', 'A',
     '--name', 'B', '--relative-to', 'A', '--out', str(tmp_path)],
    capture_output=True, text=True, cwd=ROOT, timeout=300,
  )  # fmt: skip
  assert text.returncode == 0, text.stderr
  lines = text.stdout.splitlines()
  assert sum(line.startswith('energy_Ha: ') for line in lines) == 2
  table = lines[lines.index(next(x for x in lines if x.startswith('relative energies to A'))) :]
  row_b = next(x.split() for x in table if x.split()[:1] == ['B'])
  assert row_b[:3] == ['B', '0.00', '+/-'] and float(row_b[3]) > 0  # same run: 0 +/- sqrt(2) σ
  assert (tmp_path / 'reaction_profile.png').read_bytes()[:4] == b'\x89PNG'
  assert (tmp_path / 'A_convergence.png').exists() and (tmp_path / 'B_convergence.png').exists()


def test_reaction_study_commands(tmp_path):
  script = ROOT / 'examples' / 'reaction_study' / 'study.py'
  out = subprocess.run(
    [sys.executable, str(script), '--print', '--tiny', '--runs', str(tmp_path / 'runs')],
    capture_output=True, text=True, cwd=ROOT, timeout=60,
  )  # fmt: skip
  assert out.returncode == 0, out.stderr
  lines = out.stdout.splitlines()
  names = ['bicbut', 'con_TS', 'dis_TS', 'g-but', 'gt-TS', 't-but']
  assert len(lines) == 7
  for line, name in zip(lines, names, strict=False):
    assert (
      line.startswith('ferminet --config configs/organic.py') and f'molecule_name={name} ' in line
    )
    assert 'init_from' not in line  # --chain none: every structure from Hartree-Fock
  assert lines[-1].startswith('ferminet-analyze') and '--relative-to bicbut' in lines[-1]
  out = subprocess.run(
    [sys.executable, str(script), '--reaction', 'cycbut', '--slurm', str(tmp_path / 'jobs'),
     '--runs', str(tmp_path / 'runs')],
    capture_output=True, text=True, cwd=ROOT, timeout=60,
  )  # fmt: skip
  assert out.returncode == 0, out.stderr
  jobs = sorted(p.name for p in (tmp_path / 'jobs').iterdir())
  assert jobs == ['cycbut-ground.sh', 'cycbut-trans.sh', 'submit.sh']
  assert '#SBATCH' in (tmp_path / 'jobs' / 'cycbut-trans.sh').read_text()
  assert '--parsable --dependency' not in (tmp_path / 'jobs' / 'submit.sh').read_text()


def _study(*args, cwd=ROOT):
  script = ROOT / 'examples' / 'reaction_study' / 'study.py'
  out = subprocess.run(
    [sys.executable, str(script), *args], capture_output=True, text=True, cwd=cwd, timeout=600
  )
  assert out.returncode == 0, out.stderr
  return out.stdout


def test_reaction_study_chains(tmp_path):
  """--chain previous: in order from the baseline, each from the one before, with the
  warm iterations; --chain reference: all from the baseline; SLURM jobs wait for their
  source."""
  runs = tmp_path / 'runs'
  lines = _study(
    '--print', '--chain', 'previous', '--structures', 't-but', 'bicbut', 'con_TS',
    '--iterations', '1000', '--runs', str(runs),
  ).splitlines()  # fmt: skip
  order = [
    next(x.split('=')[1] for x in line.split() if 'molecule_name=' in x) for line in lines[:3]
  ]
  assert order == ['bicbut', 'con_TS', 't-but']  # the baseline first, then the set's order
  assert 'init_from' not in lines[0] and 'optim.iterations=1000' in lines[0]
  assert f'--config.log.init_from={runs / "bicbut"}' in lines[1].split()
  assert f'--config.log.init_from={runs / "con_TS"}' in lines[2].split()
  assert 'optim.iterations=250' in lines[1]  # a quarter, by default
  lines = _study(
    '--print', '--chain', 'reference', '--config', 'configs/diatomic.py',
    '--set', 'system.molecule_name=LiH', '--set', 'system.units=bohr',
    '--scan', 'system.bond_length=2.8,3.0,3.2', '--warm-iterations', '7', '--runs', str(runs),
  ).splitlines()  # fmt: skip
  assert '--config.system.bond_length=2.8' in lines[0].split()
  for line in lines[1:3]:
    assert f'--config.log.init_from={runs / "bond_length_2.8"}' in line.split()
    assert 'optim.iterations=7' in line and 'system.molecule_name=LiH' in line
  assert '--relative-to bond_length_2.8' in lines[3] and lines[3].count('--name') == 3
  _study(
    '--chain', 'previous', '--reaction', 'cycbut', '--slurm', str(tmp_path / 'jobs'),
    '--runs', str(runs),
  )  # fmt: skip
  submit = (tmp_path / 'jobs' / 'submit.sh').read_text()
  assert 'job0=$(sbatch --parsable ' in submit
  assert 'job1=$(sbatch --parsable --dependency=afterok:${job0} ' in submit
  assert 'init_from' in (tmp_path / 'jobs' / 'cycbut-trans.sh').read_text()
  check = subprocess.run(['bash', '-n', str(tmp_path / 'jobs' / 'submit.sh')])
  assert check.returncode == 0  # valid shell


@pytest.mark.slow
def test_reaction_study_runs_a_warm_started_scan(tmp_path):
  """A two-point H2 scan, the second warm-started from the first, run and analysed."""
  out = _study(
    '--tiny', '--iterations', '12', '--config', 'configs/diatomic.py',
    '--set', 'system.molecule_name=H2', '--set', 'system.units=bohr',
    '--scan', 'system.bond_length=1.3,1.4', '--chain', 'previous', '--runs', 'runs',
    cwd=tmp_path,
  )  # fmt: skip
  assert 'warm start from' in out and 'relative energies to bond_length_1.3' in out
  config = json.loads((tmp_path / 'runs' / 'bond_length_1.4' / 'config.json').read_text())
  assert config['log']['started_from']['path'].endswith('.pkl')
  assert config['optim']['iterations'] == 3
  assert (tmp_path / 'runs' / 'reaction_profile.png').exists()


def test_rolled_back_rows_are_skipped(tmp_path):
  """Rows of rolled-back (NaN) iterations do not poison the averages or the plot's mean."""
  from ferminet import plots, writers

  writer = writers.StatsWriter(tmp_path / 'train_stats.csv', first_step=0)
  for step in range(40):
    bad = step == 30
    energy = float('nan') if bad else -1.0 - 0.01 * (step % 2)
    writer.write(step, energy, 0.5, float('nan') if bad else 0.1, rolled_back=bad)
  writer.close()
  summary, data = analysis.analyze_run(tmp_path, name='x')
  assert summary.energy.n == 19 and np.isfinite(summary.energy.mean)
  assert summary.variance == pytest.approx(0.1)
  rolling = plots.rolling_mean(data.energy, 4)
  assert np.isfinite(rolling).all()


def _both_runs(path):
  """A folder with a 100-step training curve (-7.0 Ha) and a 40-step inference run."""
  _fake_run(path, [-7.0] * 100)
  inference = -7.47 + 0.001 * np.sin(np.arange(40))
  return _fake_run(path, inference, stats_file='inference_stats.csv'), inference


def test_inference_stats_preferred_without_burn_in(tmp_path, capsys):
  run, inference = _both_runs(tmp_path / 'li')
  summary, data = analysis.analyze_run(run)
  assert summary.stats_file == 'inference_stats.csv' and data.energy.size == 40
  assert summary.discarded == 0 and summary.burn_in_fraction == 0.0
  assert summary.energy.mean == pytest.approx(np.mean(inference))
  # An explicit fraction applies to the file that is read.
  summary, _ = analysis.analyze_run(run, 0.25)
  assert summary.stats_file == 'inference_stats.csv' and summary.discarded == 10
  analyze_cli.main([str(run), '--no-plot'])
  lines = capsys.readouterr().out.splitlines()
  assert 'stats_file: inference_stats.csv' in lines
  assert 'averaged_steps: 40 of 40 (first 0 discarded as burn-in; inference run)' in lines
  analyze_cli.main([str(run), '--no-plot', '--json'])
  result = json.loads(capsys.readouterr().out)
  assert result['burn_in_fraction'] is None and result['stats'] == 'auto'
  (entry,) = result['runs']
  assert entry['stats_file'] == 'inference_stats.csv' and entry['burn_in_fraction'] == 0.0


def test_stats_train_reads_training_curve(tmp_path, capsys):
  run, _ = _both_runs(tmp_path / 'li')
  summary, _ = analysis.analyze_run(run, stats='train')
  assert summary.stats_file == 'train_stats.csv' and summary.steps == 100
  assert summary.discarded == 50 and summary.burn_in_fraction == 0.5
  assert summary.energy.mean == pytest.approx(-7.0)
  analyze_cli.main([str(run), '--no-plot', '--stats', 'train'])
  lines = capsys.readouterr().out.splitlines()
  assert 'stats_file: train_stats.csv' in lines
  assert 'averaged_steps: 50 of 100 (first 50 discarded as burn-in; training run)' in lines
  # Two runs with different default fractions: each entry says its own.
  only_inference = _fake_run(tmp_path / 'inf', [-7.4] * 8, stats_file='inference_stats.csv')
  analyze_cli.main([str(run), str(only_inference), '--no-plot', '--json', '--stats', 'auto'])
  result = json.loads(capsys.readouterr().out)
  assert [r['burn_in_fraction'] for r in result['runs']] == [0.0, 0.0]
  analyze_cli.main([str(tmp_path / 'li'), '--no-plot', '--json', '--stats', 'train'])
  assert json.loads(capsys.readouterr().out)['runs'][0]['burn_in_fraction'] == 0.5
  analyze_cli.main([str(run), '--no-plot', '--json', '--stats', 'train', '--burn-in', '0.2'])
  result = json.loads(capsys.readouterr().out)
  assert result['burn_in_fraction'] == 0.2 and result['runs'][0]['discarded'] == 20


def test_requested_stats_file_missing(tmp_path, capsys):
  run = _fake_run(tmp_path / 'li', [-7.0] * 10)
  with pytest.raises(errors.AnalysisError, match='no inference_stats.csv'):
    analysis.analyze_run(run, stats='inference')
  with pytest.raises(SystemExit) as exit_info:
    analyze_cli.main([str(run), '--no-plot', '--stats', 'inference'])
  assert exit_info.value.code == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1, err
  assert 'no inference_stats.csv' in err[0] and 'train_stats.csv' in err[0] and str(run) in err[0]
  only_inference = _fake_run(tmp_path / 'inf', [-7.4] * 8, stats_file='inference_stats.csv')
  with pytest.raises(errors.AnalysisError, match='no train_stats.csv.*holds inference_stats'):
    analysis.analyze_run(only_inference, stats='train')


def _training_like(seed, n=2000, e0=-8.07, slope=0.05):
  """A stretch whose variance falls from 0.4 to 0.1 Ha² while E = e0 + slope·σ² plus
  correlated noise (AR(1), 3 mHa per step)."""
  rng = np.random.default_rng(seed + 1000)
  variance = np.linspace(0.4, 0.1, n) + 0.02 * rng.normal(size=n)
  return e0 + slope * variance + _ar1(0.8, n, seed, sigma=0.003), variance


def test_extrapolation_recovers_a_known_intercept_with_honest_errors():
  e0, trials = -8.07, 300
  fits = [analysis.extrapolate(*_training_like(seed, e0=e0)) for seed in range(trials)]
  pulls = np.array([(f.energy - e0) / f.stderr for f in fits])
  # The error bar is right: about 95% of intervals of 2 sigma hold the intercept.
  assert 0.9 < np.mean(np.abs(pulls) < 2) < 0.99
  assert abs(np.mean(pulls)) < 0.2  # unbiased
  assert np.mean([f.slope for f in fits]) == pytest.approx(0.05, rel=0.05)
  # The raw mean is 12.5 mHa above the intercept (0.05 x mean variance 0.25); the fit is not.
  e, v = _training_like(0, e0=e0)
  assert np.mean(e) - e0 > 0.01
  assert abs(fits[0].energy - e0) < 3 * fits[0].stderr < 0.005
  assert fits[0].block_size > 1  # the AR(1) noise is correlated, and the blocks see it


def test_extrapolation_needs_a_variance():
  e = -1.0 + 0.01 * np.random.default_rng(0).normal(size=100)
  assert analysis.extrapolate(e, np.full(100, np.nan)) is None  # a file of the reference
  assert analysis.extrapolate(e, np.full(100, 0.3)) is None  # no spread
  assert analysis.extrapolate(e[:3], np.arange(3.0)) is None  # too few steps


def _run_with_variance(
  path, energy, variance, batch_size, started=None, stats='train_stats.csv', network=None
):
  path.mkdir(exist_ok=True)
  lines = ['step,energy,ewmean,ewvar,pmove,variance,rolled_back']
  lines += [
    f'{i},{e},{e},0,0.5,{v},0' for i, (e, v) in enumerate(zip(energy, variance, strict=True))
  ]
  (path / stats).write_text('\n'.join(lines) + '\n')
  log = {'started_from': started or {'path': '', 'step': -1, 'system': ''}}
  cfg = {'system': {'name': path.name}, 'batch_size': batch_size, 'log': log}
  if network is not None:
    cfg['network'] = network
  (path / 'config.json').write_text(json.dumps(cfg))
  return path


def test_match_length_and_extrapolated_profile(tmp_path, capsys):
  """--match-length averages the last N kept rows of every run; runs of other batch sizes
  or other evaluated training steps are named; the profile has an extrapolated column."""
  e_a, v_a = _training_like(0, n=2000, e0=-8.0)
  e_b, v_b = _training_like(1, n=1200, e0=-7.99)
  ferminet = config_lib.default().network.to_dict()
  psiformer = {**ferminet, 'network_type': 'psiformer'}
  a = _run_with_variance(tmp_path / 'a', e_a, v_a, 512, network=ferminet)
  b = _run_with_variance(tmp_path / 'b', e_b, v_b, 256, network=psiformer)
  analyze_cli.main([str(a), str(b), '--relative-to', 'a', '--match-length', '--json', '--no-plot'])
  result = json.loads(capsys.readouterr().out)
  assert result['matched_rows'] == 600  # b keeps 600 of its 1200 rows, a 1000 of 2000
  ra, rb = result['runs']
  assert ra['energy']['n'] == rb['energy']['n'] == 600
  assert ra['energy']['mean'] == pytest.approx(np.mean(e_a[-600:]))
  assert result['notes'][0] == 'batch sizes differ: a 512, b 256'
  assert result['notes'][1].startswith('ansätze differ: a ferminet (layers (256, 32), ')
  assert ', b psiformer (4 layers, 4 heads of 64, MLP (256,), layer norm); ' in result['notes'][1]
  fit = rb['extrapolated']
  assert abs(fit['energy'] + 7.99) < 3 * fit['stderr']
  rel = result['relative']
  (x,) = [r for r in rel['extrapolated'] if r['name'] == 'b']
  expected = (fit['energy'] - ra['extrapolated']['energy']) * analysis.HARTREE_TO_KCAL_PER_MOL
  assert x['energy'] == pytest.approx(expected)
  # Without matching, the averaged steps differ, and the text says so.
  analyze_cli.main([str(a), str(b), '--relative-to', 'a', '--no-plot'])
  text = capsys.readouterr().out
  assert 'note: averaged steps differ: a 1000, b 600' in text
  assert 'extrapolated_Ha: ' in text and 'extrapolated to zero variance' in text
  assert '\nansatz: psiformer (4 layers' in text


def test_inference_runs_of_different_training_steps_are_named(tmp_path):
  e, v = _training_like(0, n=400)
  runs = []
  for name, step in (('a', 2000), ('b', 1000)):
    start = {'path': f'/x/{name}/ckpt_{step:08d}.pkl', 'step': step, 'system': name}
    path = _run_with_variance(tmp_path / name, e, v, 256, start, 'inference_stats.csv')
    runs.append(analysis.analyze_run(path)[0])
  assert runs[0].started_from['step'] == 2000
  assert analysis.comparability(runs) == ['training steps evaluated differ: a 2000, b 1000']
