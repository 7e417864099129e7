"""Checkpoints and statistics files of DeepMind's FermiNet ("the reference").

The fixtures are written here in the reference's layout, as read from its source
(ferminet/checkpoint.py, train.py, networks.py, envelopes.py): an ``np.savez`` of ``t``,
``data`` (positions, spins, atoms, charges with device and walker axes), ``params`` (every
leaf with a device axis), ``opt_state`` and ``mcmc_width``. ``_reference_log_psi`` is the
reference's FermiNet written out in numpy, so the conversion is checked against the
reference's function, not only against its own inverse.
"""

from __future__ import annotations

import csv
import dataclasses
import pathlib

import jax
import numpy as np
import pytest
from conftest import tiny_network_cfg
from test_train import tiny_config

from ferminet import analyze_cli, errors, networks, reference_checkpoint, train, writers
from ferminet import config as config_lib
from ferminet import system as system_lib

# --- the reference's layout, written from its source -------------------------------------


def _to_reference(params, spins: tuple[int, int], n_atoms: int, envelope: str) -> dict:
  """Our parameters in the reference's tree (no device axis).

  ``ours_one[s]`` is the position in our features of the reference's feature s: its
  (r, x, y, z) per atom are our (3, 0, 1, 2). A residual layer keeps the order of its
  input (output unit s of the reference is our ours_one[s]); other layers reset it.
  """
  active = [k for k, n in enumerate(spins) if n]
  ours_one = np.concatenate([[4 * a + 3, 4 * a, 4 * a + 1, 4 * a + 2] for a in range(n_atoms)])
  ours_two = np.array([3, 0, 1, 2])
  streams = []
  for layer in params['layers']:
    w, b = np.asarray(layer['single']['w']), np.asarray(layer['single']['b'])
    d_one, d_two = len(ours_one), len(ours_two)
    blocks = [w[:d_one][ours_one]]
    blocks += [w[(1 + k) * d_one : (2 + k) * d_one][ours_one] for k in active]
    blocks += [w[3 * d_one + k * d_two : 3 * d_one + (k + 1) * d_two][ours_two] for k in active]
    w = np.concatenate(blocks)
    if w.shape[1] == d_one:  # residual
      w, b = w[:, ours_one], b[ours_one]
    else:
      ours_one = np.arange(w.shape[1])
    stream = {'single': {'w': w, 'b': b}}
    if 'double' in layer:
      wd, bd = np.asarray(layer['double']['w'])[ours_two], np.asarray(layer['double']['b'])
      if wd.shape[1] == d_two:
        wd, bd = wd[:, ours_two], bd[ours_two]
      else:
        ours_two = np.arange(wd.shape[1])
      stream['double'] = {'w': wd, 'b': bd}
    streams.append(stream)
  orbital = []
  for o in params['orbital']:
    orbital.append(
      {k: np.asarray(v)[ours_one] if k == 'w' else np.asarray(v) for k, v in o.items()}
    )
  envelopes = []
  for e in params['envelope']:
    sigma = np.asarray(e['sigma'])
    if envelope == 'full':  # ours (atoms, 3, 3, out), the reference's (3, 3, atoms, out)
      sigma = np.transpose(sigma, (1, 2, 0, 3))
    envelopes.append({'pi': np.asarray(e['pi']), 'sigma': sigma})
  return {'layers': {'input': {}, 'streams': streams}, 'orbital': orbital, 'envelope': envelopes}


def _reference_log_psi(ref, x, atoms, spins, n_det, full_det, envelope) -> float:
  """log|ψ| of the reference's FermiNet for one walker x (3N,), numpy float64."""
  n = sum(spins)
  pos = x.reshape(n, 3)
  ae = pos[:, None, :] - atoms[None]  # (n, atoms, 3)
  ee = pos[None, :, :] - pos[:, None, :]  # ee[a, b] = r_b - r_a
  r_ae = np.linalg.norm(ae, axis=2, keepdims=True)
  eye = np.eye(n)
  r_ee = (np.linalg.norm(ee + eye[..., None], axis=-1) * (1.0 - eye))[..., None]
  h_one = np.concatenate([r_ae, ae], axis=2).reshape(n, -1)
  h_two = np.concatenate([r_ee, ee], axis=2)
  cuts = np.cumsum(spins)[:-1]

  def residual(old, new):
    return (old + new) / np.sqrt(2.0) if old.shape == new.shape else new

  for layer in ref['layers']['streams']:
    g_one = [np.tile(h.mean(0, keepdims=True), (n, 1)) for h in np.split(h_one, cuts) if h.size]
    g_two = [h.mean(0) for h in np.split(h_two, cuts, axis=0) if h.size]
    inputs = np.concatenate([h_one, *g_one, *g_two], axis=1)
    new_one = np.tanh(inputs @ layer['single']['w'] + layer['single']['b'])
    if 'double' in layer:
      h_two = residual(h_two, np.tanh(h_two @ layer['double']['w'] + layer['double']['b']))
    h_one = residual(h_one, new_one)
  mats = []
  channels = [
    (h, a, r)
    for h, a, r in zip(*(np.split(v, cuts) for v in (h_one, ae, r_ae)), strict=True)
    if h.size
  ]
  for (h, a, r), p_orb, p_env in zip(channels, ref['orbital'], ref['envelope'], strict=True):
    phi = h @ p_orb['w'] + p_orb.get('b', 0.0)
    if envelope == 'isotropic':
      env = np.sum(np.exp(-r * p_env['sigma']) * p_env['pi'], axis=1)
    elif envelope == 'diagonal':
      env = np.sum(np.exp(-np.linalg.norm(a[..., None] * p_env['sigma'], axis=2)) * p_env['pi'], 1)
    else:
      scaled = np.einsum('ijk,kmjn->ijmn', a, p_env['sigma'])
      env = np.sum(np.exp(-np.linalg.norm(scaled, axis=2)) * p_env['pi'], axis=1)
    phi = phi * env
    mats.append(np.transpose(phi.reshape(h.shape[0], n_det, -1), (1, 0, 2)))
  if full_det:
    mats = [np.concatenate(mats, axis=1)]
  sign, logdet = np.ones(n_det), np.zeros(n_det)
  for m in mats:
    s, ld = np.linalg.slogdet(m)
    sign, logdet = sign * s, logdet + ld
  shift = logdet.max()
  return float(np.log(abs(np.sum(sign * np.exp(logdet - shift)))) + shift)


def _randomize_envelope(params, kind: str, rng: np.random.Generator):
  """Envelope parameters away from their initial ones (isotropic σ > 0, as after training)."""
  envelopes = []
  for e in params['envelope']:
    pi, sigma = np.asarray(e['pi']), np.asarray(e['sigma'])
    if kind == 'isotropic':
      sigma = rng.uniform(0.5, 1.5, sigma.shape)
    elif kind == 'diagonal':
      sigma = rng.normal(size=sigma.shape)
    else:
      sigma = sigma + 0.3 * rng.normal(size=sigma.shape)
    envelopes.append({'pi': rng.normal(size=pi.shape), 'sigma': sigma})
  return {**params, 'envelope': envelopes}


SYSTEMS = {
  'H (1, 0)': ([system_lib.Atom('H')], 'isotropic', True, False),
  'Li (2, 1), spin-factored, biased': ([system_lib.Atom('Li')], 'diagonal', False, True),
  'LiH (2, 2)': (
    [system_lib.Atom('Li'), system_lib.Atom('H', (0.3, -0.2, 3.0))],
    'full',
    True,
    False,
  ),
}


def _network(name: str, reference_layers: bool = True, **overrides):
  atoms, envelope, full_det, bias = SYSTEMS[name]
  cfg = tiny_network_cfg(envelope_type=envelope, full_det=full_det, bias_orbitals=bias)
  cfg.ferminet.hidden_dims = ((8, 4),) * 3  # two residual connections in each stream
  cfg.ferminet.reference_layers = reference_layers
  for key, value in overrides.items():
    cfg[key] = value
  system = system_lib.make_system(atoms)
  return cfg, system, networks.make(cfg, system)


def _checkpoint(path, params, system, envelope, walkers, t=4, width=0.15, devices=1):
  """Writes ``params`` (ours) and ``walkers`` (B, 3N) as the reference's qmcjax_ckpt_<t>.npz."""
  spins = tuple(system.electrons)
  ref = _to_reference(params, spins, len(system.atoms), envelope)
  replicated = jax.tree.map(lambda a: np.stack([a] * devices), ref)
  b = walkers.shape[0] // devices
  spin_signs = np.concatenate([np.ones(spins[0]), -np.ones(spins[1])])
  data = {
    'positions': walkers.reshape(devices, b, -1),
    'spins': np.tile(spin_signs, (devices, b, 1)),
    'atoms': np.tile(system.coords, (devices, b, 1, 1)),
    'charges': np.tile(system.charges, (devices, b, 1)),
  }
  path.mkdir(parents=True, exist_ok=True)
  file = path / f'qmcjax_ckpt_{t:06d}.npz'
  with open(file, 'wb') as f:
    np.savez(
      f,
      t=t,
      data=data,
      params=replicated,
      opt_state={'step_counter': np.full(devices, t)},  # never read
      mcmc_width=np.full(devices, width),
      density_state=None,
    )
  return file, ref


@pytest.mark.parametrize('name', list(SYSTEMS))
def test_converted_parameters_give_the_reference_wavefunction(name, tmp_path):
  """Ours with reference_layers equals the reference's function; the conversion inverts
  _to_reference: the same log|ψ| (to 1e-10) on random walkers."""
  cfg, system, network = _network(name)
  envelope, full_det = cfg.envelope_type, cfg.full_det
  rng = np.random.default_rng(0)
  params = _randomize_envelope(network.init(jax.random.PRNGKey(3)), envelope, rng)
  walkers = rng.normal(size=(6, 3 * sum(system.electrons)))
  file, ref = _checkpoint(tmp_path, params, system, envelope, walkers, devices=2, width=0.2)
  ckpt = reference_checkpoint.load(file)
  assert ckpt.step == 5 and ckpt.width == 0.2 and ckpt.electrons == tuple(system.electrons)
  np.testing.assert_array_equal(ckpt.walkers, walkers)
  converted = reference_checkpoint.to_params(ckpt, cfg, system, params)
  ours = jax.vmap(network.log_abs, in_axes=(None, 0))
  before, after = np.asarray(ours(params, walkers)), np.asarray(ours(converted, walkers))
  np.testing.assert_allclose(after, before, rtol=1e-12, atol=0)
  coords = np.asarray(system.coords)
  theirs = [
    _reference_log_psi(ref, x, coords, system.electrons, cfg.determinants, full_det, envelope)
    for x in walkers
  ]
  np.testing.assert_allclose(before, theirs, rtol=1e-10, atol=0)
  # Without reference_layers the same parameters give another function.
  _, _, plain = _network(name, reference_layers=False)
  assert not np.allclose(jax.vmap(plain.log_abs, in_axes=(None, 0))(params, walkers), theirs)


def test_unmappable_network_is_one_error_naming_all_differences(tmp_path):
  cfg, system, network = _network('LiH (2, 2)')
  params = network.init(jax.random.PRNGKey(0))
  walkers = np.random.default_rng(1).normal(size=(4, 12))
  file, _ = _checkpoint(tmp_path, params, system, 'full', walkers)
  ckpt = reference_checkpoint.load(file)
  jastrow = {**ckpt.params, 'jastrow': {'alpha_par': np.ones(1)}}
  ckpt = dataclasses.replace(ckpt, params=jastrow)
  other_cfg = _network('LiH (2, 2)', reference_layers=False, determinants=3)[0]
  other_cfg.ferminet.hidden_dims = ((8, 4), (16, 4), (8, 4))
  template = networks.make(other_cfg, system).init(jax.random.PRNGKey(0))
  with pytest.raises(errors.ConfigError) as info:
    reference_checkpoint.to_params(ckpt, other_cfg, system, template)
  message = str(info.value)
  for part in (
    'one-electron widths (8, 8, 8) (this run (8, 16, 8): network.ferminet.hidden_dims)',
    'determinants 2 (this run 3: network.determinants)',
    'parameters this FermiNet does not have: jastrow',
    'network.ferminet.reference_layers=True',
  ):
    assert part in message, message
  # An isotropic envelope that grows (sigma < 0) has no exp(-r |sigma|) equivalent.
  cfg, system, network = _network('H (1, 0)')
  params = network.init(jax.random.PRNGKey(0))
  params['envelope'][0]['sigma'] = params['envelope'][0]['sigma'].at[0, 1].set(-0.5)
  file, _ = _checkpoint(tmp_path / 'h', params, system, 'isotropic', walkers[:, :3])
  with pytest.raises(errors.ConfigError, match='sigma < 0'):
    reference_checkpoint.to_params(reference_checkpoint.load(file), cfg, system, params)


def test_checkpoint_of_another_molecule_is_a_clear_error(tmp_path):
  cfg, system, network = _network('Li (2, 1), spin-factored, biased')
  walkers = np.random.default_rng(2).normal(size=(4, 9))
  file, _ = _checkpoint(tmp_path, network.init(jax.random.PRNGKey(0)), system, 'diagonal', walkers)
  ckpt = reference_checkpoint.load(file)
  other = system_lib.make_system([system_lib.Atom('Li', (0.0, 0.0, 1.0))], charge=1)
  with pytest.raises(errors.ConfigError, match='another system') as info:
    reference_checkpoint.check_system(ckpt, other)
  assert 'atoms at [[0.0, 0.0, 0.0]] bohr, this run [[0.0, 0.0, 1.0]]' in str(info.value)
  assert 'electrons (alpha, beta) (2, 1), this run (1, 1)' in str(info.value)
  reference_checkpoint.check_system(ckpt, system)


def _reference_stats(path: pathlib.Path, steps: int, observables: bool = False) -> None:
  """train_stats.csv as the reference writes it (str() of numpy scalars)."""
  rng = np.random.default_rng(4)
  columns = ['step', 'energy', 'ewmean', 'ewvar', 'pmove']
  columns += ['s2', 'mu_x', 'mu_y', 'mu_z'] if observables else []
  lines = [','.join(columns)]
  for t in range(steps):
    energy = np.float32(-0.5 + 0.01 * rng.normal())
    extra = [str(np.float32(0.75)), '0.01', '-0.02', '0.0'] if observables else []
    lines.append(','.join([str(t), str(energy), str(energy), '0.0001', '0.52', *extra]))
  path.write_text('\n'.join(lines) + '\n')


@pytest.mark.parametrize('observables', [False, True])
def test_reference_stats_are_read_and_analysed(tmp_path, capsys, observables):
  path = tmp_path / 'train_stats.csv'
  _reference_stats(path, 40, observables)
  rows = writers.read_rows(path)
  assert len(rows) == 40
  assert rows[0]['variance'] == 'nan' and rows[0]['rolled_back'] == '0'
  assert ('s2' in rows[0]) == observables
  analyze_cli.main([str(tmp_path), '--no-plot'])
  out = capsys.readouterr().out
  assert 'energy_Ha: -0.50' in out and 'averaged_steps: 20 of 40' in out, out
  assert 'variance_mean_Ha2: nan' in out
  # A resumed run rewrites the file in our columns and keeps the reference's extra ones.
  writer = writers.StatsWriter(path, first_step=30)
  writer.write(30, -0.51, 0.5, 0.02)
  writer.close()
  header, *lines = list(csv.reader(path.open()))
  extra = ['s2', 'mu_x', 'mu_y', 'mu_z'] if observables else []
  assert header == list(writers.COLUMNS) + extra
  assert len(lines) == 31 and lines[0][5:7] == ['nan', '0'] and lines[-1][5:7] == ['0.02', '0']
  if observables:
    assert lines[0][7:] == ['0.75', '0.01', '-0.02', '0.0'] and lines[-1][7:] == [''] * 4
  assert [r['step'] for r in writers.read_rows(path)] == [str(t) for t in range(31)]


@pytest.mark.slow  # 25-33 s; CI's compat runs (pytest -m compat) include it
@pytest.mark.compat
def test_training_and_inference_continue_a_reference_run(tmp_path, capsys):
  """A reference run folder (qmcjax_ckpt_000004.npz, 5-column train_stats.csv) continued in
  place: steps 5-9 with the converted parameters, then our checkpoint takes priority; an
  inference run from the same file."""
  folder = tmp_path / 'reference_run'
  overrides = {'network.ferminet.reference_layers': True}
  cfg = config_lib.resolve(tiny_config(folder, iterations=10, **overrides))
  system = config_lib.system_of(cfg)
  network = networks.make(cfg.network, system)
  rng = np.random.default_rng(5)
  params = _randomize_envelope(network.init(jax.random.PRNGKey(11)), 'isotropic', rng)
  walkers = 0.8 * rng.normal(size=(cfg.batch_size, 3))
  file, _ = _checkpoint(folder, params, system, 'isotropic', walkers)
  _reference_stats(folder / 'train_stats.csv', 5)

  run = train.setup(tiny_config(folder, iterations=10, **overrides))
  state, message = train.restore(run)
  assert message == f'restored step 5 from the reference checkpoint {file.name} in {folder}'
  assert state.step == 5 and float(state.width[0]) == 0.15
  np.testing.assert_array_equal(np.asarray(state.walkers).reshape(-1, 3), walkers)
  log_abs = jax.vmap(network.log_abs, in_axes=(None, 0))
  restored = jax.tree.map(lambda a: a[0], state.params)
  np.testing.assert_allclose(log_abs(restored, walkers), log_abs(params, walkers), rtol=1e-12)
  assert 'KFAC statistics restart' in capsys.readouterr().out

  result = train.train(tiny_config(folder, iterations=10, **overrides))
  steps = [int(r['step']) for r in writers.read_rows(folder / 'train_stats.csv')]
  assert steps == list(range(10)) and result.state.step == 10
  assert np.all(np.isfinite(result.energies)) and len(result.energies) == 5
  capsys.readouterr()
  train.train(tiny_config(folder, iterations=12, **overrides))
  out = capsys.readouterr().out
  assert "restoring ferminet's of step 10" in out and 'restored step 10 from' in out

  inference = tmp_path / 'inference'
  cfg = tiny_config(inference, optimizer='none', iterations=3, **overrides)
  cfg.log.restore_path = str(file)
  result = train.train(cfg)
  out = capsys.readouterr().out
  assert f'inference of the wavefunction of step 5 from the reference checkpoint {file.name}' in out
  assert [int(r['step']) for r in writers.read_rows(inference / 'inference_stats.csv')] == [0, 1, 2]
  assert np.isfinite(result.energy)


def test_reference_checkpoint_of_another_system_stops_the_run(tmp_path):
  cfg, system, network = _network('Li (2, 1), spin-factored, biased')
  walkers = np.random.default_rng(2).normal(size=(32, 9))
  _checkpoint(tmp_path / 'li', network.init(jax.random.PRNGKey(0)), system, 'diagonal', walkers)
  cfg = tiny_config(tmp_path / 'h', **{'network.ferminet.reference_layers': True})
  cfg.log.restore_path = str(tmp_path / 'li')
  with pytest.raises(errors.ConfigError, match='is of another system: charges') as info:
    train.restore(train.setup(cfg))
  assert 'electrons (alpha, beta) (2, 1), this run (1, 0)' in str(info.value)
