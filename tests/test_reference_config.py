"""Reference compatibility: ferminet.base_config, ferminet.utils.{system,elements} and every
key of the reference's base_config.default(). Light: config level, no training."""

import importlib.util
import json
import pathlib
import subprocess
import sys
import textwrap
from typing import NamedTuple

import numpy as np
import pytest

from ferminet import base_config, errors
from ferminet import config as config_lib
from ferminet import system as system_lib
from ferminet.utils import elements as ref_elements
from ferminet.utils import system as ref_system

ROOT = pathlib.Path(__file__).resolve().parent.parent

# Every key of the reference's base_config.default() (google-deepmind/ferminet,
# ferminet/base_config.py); dict-valued keys whose default is empty ({}) included.
REFERENCE_KEYS = (
  'batch_size', 'config_module',
  'optim.objective', 'optim.iterations', 'optim.optimizer', 'optim.laplacian',
  'optim.max_vmap_batch_size', 'optim.lr.rate', 'optim.lr.decay', 'optim.lr.delay',
  'optim.clip_local_energy', 'optim.clip_median', 'optim.center_at_clip', 'optim.reset_if_nan',
  'optim.vmc_weight', 'optim.spin_energy', 'optim.overlap.weights', 'optim.overlap.penalty',
  'optim.kfac.invert_every', 'optim.kfac.cov_update_every', 'optim.kfac.damping',
  'optim.kfac.cov_ema_decay', 'optim.kfac.momentum', 'optim.kfac.momentum_type',
  'optim.kfac.min_damping', 'optim.kfac.norm_constraint', 'optim.kfac.mean_center',
  'optim.kfac.l2_reg', 'optim.kfac.register_only_generic',
  'optim.adam.b1', 'optim.adam.b2', 'optim.adam.eps', 'optim.adam.eps_root',
  'log.stats_frequency', 'log.save_frequency', 'log.save_path', 'log.restore_path',
  'log.walkers', 'log.local_energies', 'log.features',
  'system.type', 'system.molecule', 'system.electrons', 'system.ndim', 'system.states',
  'system.units', 'system.use_pp', 'system.pp.type', 'system.pp.basis', 'system.pp.symbols',
  'system.pyscf_mol', 'system.set_molecule', 'system.make_local_energy_fn',
  'system.make_local_energy_kwargs',
  'mcmc.burn_in', 'mcmc.steps', 'mcmc.init_width', 'mcmc.move_width', 'mcmc.adapt_frequency',
  'mcmc.use_hmc', 'mcmc.num_leapfrog_steps', 'mcmc.init_means',
  'mcmc.scale_by_nuclear_distance', 'mcmc.blocks',
  'network.network_type', 'network.complex', 'network.ferminet.hidden_dims',
  'network.ferminet.use_last_layer', 'network.ferminet.separate_spin_channels',
  'network.ferminet.schnet_electron_electron_convolutions',
  'network.ferminet.electron_nuclear_aux_dims', 'network.ferminet.nuclear_embedding_dim',
  'network.ferminet.schnet_electron_nuclear_convolutions',
  'network.psiformer.num_layers', 'network.psiformer.num_heads', 'network.psiformer.heads_dim',
  'network.psiformer.mlp_hidden_dims', 'network.psiformer.use_layer_norm',
  'network.determinants', 'network.bias_orbitals', 'network.full_det', 'network.jastrow',
  'network.rescale_inputs', 'network.make_feature_layer_fn', 'network.make_feature_layer_kwargs',
  'network.make_envelope_fn', 'network.make_envelope_kwargs',
  'observables.s2', 'observables.density', 'observables.density_basis', 'observables.dipole',
  'debug.check_nan', 'debug.deterministic',
  'pretrain.method', 'pretrain.iterations', 'pretrain.basis', 'pretrain.scf_fraction',
  'pretrain.excitation_type',
)  # fmt: skip

# A reference-style config file: extends base_config.default() with keys of its own and
# builds the molecule in set_molecule, after the command-line overrides.
H_CHAIN = textwrap.dedent(
  """
  from ferminet import base_config
  from ferminet.utils import system


  def _chain(cfg):
    length, n = cfg.system.bond_length, cfg.system.natoms
    start = -length * (n - 1) / 2
    cfg.system.molecule = [
      system.Atom(symbol='H', coords=(start + i * length, 0.0, 0.0), units=cfg.system.units)
      for i in range(n)
    ]
    cfg.system.electrons = (n - n // 2, n // 2)
    return cfg


  def get_config():
    cfg = base_config.default()
    cfg.system.update({'bond_length': 1.4, 'natoms': 2})
    with cfg.ignore_type():
      cfg.system.set_molecule = _chain
      cfg.config_module = '.h_chain'
    return cfg
  """
)


def _cli(*args):
  return subprocess.run(
    [sys.executable, str(ROOT / 'bin' / 'ferminet'), *args],
    capture_output=True,
    text=True,
    timeout=300,
    cwd=ROOT,
  )


def _one_line_error(out):
  assert out.returncode == 2, (out.returncode, out.stdout[-500:], out.stderr[-2000:])
  assert 'Traceback' not in out.stderr
  lines = [line for line in out.stderr.splitlines() if 'xla_bridge' not in line]
  assert len(lines) == 1 and lines[0].startswith('ferminet: error: '), out.stderr
  return lines[0]


@pytest.fixture(scope='module')
def h_chain(tmp_path_factory):
  path = tmp_path_factory.mktemp('reference') / 'h_chain.py'
  path.write_text(H_CHAIN)
  return str(path)


def _load(path):
  spec = importlib.util.spec_from_file_location('reference_style_config', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


# --- every reference key --------------------------------------------------------------


def test_every_reference_key_exists():
  cfg = config_lib.default()
  assert len(REFERENCE_KEYS) == len(set(REFERENCE_KEYS)) == 98
  missing = []
  for key in REFERENCE_KEYS:
    try:
      config_lib.get_key(cfg, key)
    except (KeyError, AttributeError):
      missing.append(key)
  assert not missing


def test_registry_lists_reference_keys_at_their_defaults():
  cfg = config_lib.default()
  keys = [entry.key for entry in config_lib.REFERENCE_ONLY]
  assert len(keys) == len(set(keys))
  assert set(keys) <= set(REFERENCE_KEYS)
  for entry in config_lib.REFERENCE_ONLY:
    assert config_lib._plain(config_lib.get_key(cfg, entry.key)) == entry.allowed[0], entry.key


def _other(value):
  """A value of the same type as ``value`` that is not it."""
  if isinstance(value, bool):
    return not value
  if isinstance(value, int):
    return value + 1
  if isinstance(value, float):
    return value + 1.0
  if isinstance(value, str):
    return value + '_other'
  if isinstance(value, tuple):
    return (*value, 7) if not value or isinstance(value[0], int) else ((7,),)
  if value is None:
    return 'other'
  return {'other': 1}  # an empty ConfigDict


@pytest.mark.parametrize('entry', config_lib.REFERENCE_ONLY, ids=lambda e: e.key)
def test_reference_only_key_off_default_is_one_line(entry):
  cfg = config_lib.default()
  cfg.system.atom = 'H'
  section, _, leaf = entry.key.rpartition('.')
  config_lib.get_key(cfg, section)[leaf] = _other(
    config_lib._plain(config_lib.get_key(cfg, entry.key))
  )
  with pytest.raises(errors.ConfigError) as info:
    config_lib.resolve(cfg)
  message = str(info.value)
  assert '\n' not in message and entry.key in message and 'leave' in message
  assert ('no effect' if entry.ignored else 'does not implement') in message


def test_reference_only_values_allowed():
  cfg = config_lib.default()
  cfg.system.atom = 'H'
  cfg.network.jastrow = 'none'  # for the FermiNet the same as 'default': no Jastrow factor
  cfg.system.type = base_config.SystemType.MOLECULE
  cfg.config_module = '.anything'  # bookkeeping only
  config_lib.resolve(cfg)


def test_cli_unimplemented_key_one_line():
  out = _cli('--config', 'configs/atom.py', '--config.system.atom=H', '--config.system.use_pp')
  line = _one_line_error(out)
  assert 'system.use_pp' in line and 'pseudopotentials' in line


# --- implemented reference keys -------------------------------------------------------


def _atom_cfg(**values):
  cfg = config_lib.default()
  cfg.system.atom = 'H'
  for key, value in values.items():
    section, _, leaf = key.replace('__', '.').rpartition('.')
    config_lib.get_key(cfg, section)[leaf] = value
  return cfg


def test_laplacian_default_is_the_hessian_loop():
  assert config_lib.resolve(_atom_cfg(optim__laplacian='default')).optim.laplacian == 'hessian'
  assert config_lib.resolve(_atom_cfg()).optim.laplacian == 'forward'  # ours stays ours


def test_lamb_differs_from_adam_by_the_trust_ratio():
  import jax.numpy as jnp

  from ferminet import optimizers

  params = {'w': jnp.array([1.0, 2.0, 3.0])}
  grads = {'w': jnp.array([0.5, -1.0, 2.0])}  # a quadratic's gradient
  updates = {}
  for name in ('adam', 'lamb'):
    cfg = _atom_cfg(optim__optimizer=name)
    config_lib.check(cfg)
    transform = optimizers.optax_transform(cfg)
    updates[name], _ = transform.update(grads, transform.init(params), params)
  rate = config_lib.default().optim.lr.rate
  adam, lamb = np.asarray(updates['adam']['w']), np.asarray(updates['lamb']['w'])
  # Adam's first step is -rate * sign(g); LAMB scales it to rate * |w| (trust ratio).
  np.testing.assert_allclose(adam, -rate * np.sign(grads['w']), rtol=1e-5)
  np.testing.assert_allclose(np.linalg.norm(lamb), rate * np.sqrt(14.0), rtol=1e-5)
  np.testing.assert_allclose(lamb / np.linalg.norm(lamb), adam / np.linalg.norm(adam), rtol=1e-5)


class _State(NamedTuple):
  step: int


def _optimize(monkeypatch, tmp_path, bad_steps, **values):
  """train.optimize with a stand-in iteration (no network): non-finite at ``bad_steps``."""
  from ferminet import train

  def iteration(run, state):
    ok = state.step not in bad_steps
    stats = {
      'energy': np.array([-1.0 - state.step if ok else np.nan]),
      'variance': np.array([0.1]),
      'pmove': np.array([0.5]),
      'ok': np.array([ok]),
    }
    return _State(state.step + 1), stats

  saved = []
  monkeypatch.setattr(train, 'iteration', iteration)
  monkeypatch.setattr(train, 'save', lambda run, state, final=False: saved.append(state.step))

  class _Quiet:
    requested = None
    name = None

    def track(self, *args):
      pass

  cfg = _atom_cfg(**values)
  stand_in = {'cfg': cfg, 'inference': False, 'stop': _Quiet(), 'watchdog': _Quiet()}
  run = type('Run', (), {**stand_in, 'observed': (), 'save_path': tmp_path})
  csv_path = tmp_path / 'train_stats.csv'
  try:
    state, energies = train.optimize(run, _State(0), csv_path)
  except errors.NonFiniteError as e:
    return str(e), saved, csv_path
  return state, saved, csv_path


def _rows(csv_path):
  from ferminet import writers

  return writers.read_rows(csv_path)


def test_stats_frequency_writes_every_nth_step(monkeypatch, tmp_path):
  state, _, csv_path = _optimize(
    monkeypatch, tmp_path, set(), optim__iterations=10, log__stats_frequency=3
  )
  assert state.step == 10
  assert [int(r['step']) for r in _rows(csv_path)] == [0, 3, 6, 9]
  # ewmean follows every step: after step 3 it has seen -1, -2, -3, -4
  ew = -1.0
  for e in (-2.0, -3.0, -4.0):
    ew += 0.1 * (e - ew)
  assert float(_rows(csv_path)[1]['ewmean']) == pytest.approx(ew)


def test_nonfinite_steps_stop_by_default_but_not_with_reset_if_nan(monkeypatch, tmp_path):
  bad = set(range(2, 20))  # 18 in a row, more than optim.max_nonfinite_steps (10)
  message, saved, _ = _optimize(monkeypatch, tmp_path, bad, optim__iterations=20)
  assert isinstance(message, str) and 'in a row' in message and saved
  state, _, csv_path = _optimize(
    monkeypatch, tmp_path, bad, optim__iterations=20, optim__reset_if_nan=True
  )
  assert state.step == 20
  assert sum(r['rolled_back'] == '1' for r in _rows(csv_path)) == 18


def test_check_nan_stops_at_the_first_nonfinite_step(monkeypatch, tmp_path):
  message, saved, csv_path = _optimize(
    monkeypatch, tmp_path, {4}, optim__iterations=20, debug__check_nan=True
  )
  assert isinstance(message, str) and 'debug.check_nan' in message and 'step 4' in message
  assert saved == [5]  # stopped right after the bad step, not a batch later
  assert len(_rows(csv_path)) == 5


# --- reference-style config files ------------------------------------------------------


def test_base_config_default_is_unlocked_and_extensible():
  cfg = base_config.default()
  cfg.system.update({'bond_length': 1.4, 'natoms': 2})  # adds natoms
  assert cfg.system.natoms == 2 and cfg.system.units == 'bohr'
  assert config_lib.default().is_locked  # ferminet's own default stays locked


def test_reference_file_resolves_in_process(h_chain):
  cfg = _load(h_chain)
  cfg.lock()
  cfg.system.bond_length = 2.0  # as a command-line override would
  cfg = base_config.resolve(cfg)
  assert [a.coords for a in cfg.system.molecule] == [(-1.0, 0.0, 0.0), (1.0, 0.0, 0.0)]
  assert cfg.system.electrons == (1, 1) and cfg.system.set_molecule == '_chain'
  assert config_lib.resolve(cfg).system.electrons == (1, 1)  # idempotent
  with pytest.raises(AttributeError):
    cfg.system.natomz = 3  # locked


def test_set_molecule_failure_is_one_config_error(h_chain):
  cfg = _load(h_chain)
  cfg.system.natoms = 0
  cfg.system.bond_length = None
  with pytest.raises(errors.ConfigError, match=r'system\.set_molecule \(_chain\) failed'):
    config_lib.resolve(cfg)


def test_reference_file_dry_run(h_chain):
  out = _cli('--config', h_chain, '--config.system.bond_length=1.5', '--dry_run')
  assert out.returncode == 0, out.stderr[-2000:]
  lines = dict(line.split(': ', 1) for line in out.stdout.splitlines() if ': ' in line)
  assert lines['atoms'] == 'H (-0.750000, 0.000000, 0.000000); H (0.750000, 0.000000, 0.000000)'
  assert lines['electrons'] == '(1, 1)'
  assert float(lines['nuclear_repulsion_Ha']) == pytest.approx(1 / 1.5, rel=1e-6)


def test_reference_file_typo_names_nearest_added_key(h_chain):
  line = _one_line_error(_cli('--config', h_chain, '--config.system.n_atoms=3', '--dry_run'))
  assert "'system.natoms'" in line  # a key the file added


def test_reference_file_typo_names_nearest_key(h_chain):
  line = _one_line_error(_cli('--config', h_chain, '--config.optim.lr.rat=0.1', '--dry_run'))
  assert "'optim.lr.rate'" in line


def test_config_json_records_reference_atoms(h_chain, tmp_path):
  from ferminet import train

  cfg = base_config.resolve(_load(h_chain))
  data = json.loads(train.write_config(cfg, tmp_path).read_text())
  assert data['system']['set_molecule'] == '_chain'
  assert data['system']['molecule'][1] == {'symbol': 'H', 'coords': [0.7, 0.0, 0.0], 'charge': 1.0}


def test_pyscf_mol_to_internal_representation():
  from pyscf import gto

  mol = gto.Mole(atom='H 0 0 0; H 0 0 0.74', basis='sto-3g', unit='angstrom')
  internal = ref_system.pyscf_mol_to_internal_representation(mol)
  assert internal.system.electrons == (1, 1) and internal.pretrain.basis == 'sto-3g'
  h2 = internal.system.molecule
  assert h2[1].coords[2] == pytest.approx(0.74 * system_lib.BOHR_PER_ANGSTROM)
  cfg = base_config.default()
  cfg.update(internal)
  assert base_config.resolve(cfg).system.electrons == (1, 1)


# --- utils.system.Atom and utils.elements ------------------------------------------------


def test_reference_atom_is_ours_in_bohr():
  assert ref_system.Atom is system_lib.Atom
  atom = ref_system.Atom('H', (0.0, 0.0, 1.0), None, None, 'angstrom')  # the reference's order
  assert atom.units == 'bohr' and atom.atomic_number == 1 and atom.charge == 1.0
  assert atom.coords[2] == pytest.approx(system_lib.BOHR_PER_ANGSTROM)
  assert atom.coords_angstrom == pytest.approx([0.0, 0.0, 1.0])
  np.testing.assert_array_equal(atom.coords_array, np.array(atom.coords))
  assert atom.element.symbol == 'H' and atom.element.period == 1
  li = ref_system.Atom(symbol='Li', coords=(0, 0, 0), charge=3.5)  # fractional nuclear charge
  assert li.charge == 3.5 and li.atomic_number == 3


@pytest.mark.parametrize(
  'symbol, spin, period, group',
  [('H', 1, 1, 1), ('He', 0, 1, 18), ('C', 2, 2, 14), ('N', 3, 2, 15), ('O', 2, 2, 16),
   ('Ne', 0, 2, 18), ('Na', 1, 3, 1), ('P', 3, 3, 15), ('K', 1, 4, 1), ('Cr', 6, 4, 6),
   ('Fe', 4, 4, 8), ('Cu', 1, 4, 11), ('Zn', 0, 4, 12), ('Kr', 0, 4, 18), ('Mo', 6, 5, 6),
   ('Pd', 0, 5, 10), ('Xe', 0, 5, 18), ('Cs', 1, 6, 1), ('Rn', 0, 6, 18), ('Fr', 1, 7, 1)],
)  # fmt: skip
def test_element_spin_period_group(symbol, spin, period, group):
  element = ref_elements.SYMBOLS[symbol]
  assert (element.spin_config, element.period, element.group) == (spin, period, group)
  assert ref_elements.ATOMIC_NUMS[element.atomic_number] is element
  assert element.nalpha - element.nbeta == spin
  assert element.nalpha + element.nbeta == element.atomic_number


def test_elements_tables():
  assert len(ref_elements.SYMBOLS) == 118 and ref_elements.ATOMIC_NUMS[118].symbol == 'Og'
  assert [e.symbol for e in ref_elements.PERIODS[2]] == 'Li Be B C N O F Ne'.split()
  assert ref_elements.SYMBOLS['Ce'].group == -1 and ref_elements.SYMBOLS['Hf'].group == 4
  with pytest.raises(NotImplementedError):
    ref_elements.SYMBOLS['W'].spin_config  # noqa: B018 - 5d metal: not known here
  with pytest.raises(errors.InvalidSystemError, match='not supported'):
    ref_system.Atom('Rb')  # beyond Kr: ferminet does not compute with it
