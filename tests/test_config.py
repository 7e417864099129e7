"""Config: locking, typo errors, resolution of every shipped config, the CLI."""

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from ferminet import config as config_lib
from ferminet import errors, molecules

ROOT = pathlib.Path(__file__).resolve().parent.parent
CONFIGS = sorted((ROOT / 'configs').glob('*.py'))


def _load(path):
  spec = importlib.util.spec_from_file_location(f'config_{path.stem}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def test_default_is_locked_against_typos():
  cfg = config_lib.default()
  with pytest.raises(AttributeError):
    cfg.optim.lr.decay_steps = 10
  with pytest.raises(AttributeError):
    cfg.sytem = {}
  cfg.optim.lr.delay = 5.0  # existing keys can change


def test_unknown_key_names_nearest():
  assert "'optim.lr.decay'" in str(config_lib.unknown_key_error('optim.lr.decay_steps'))
  assert "'system.spin_polarisation'" in str(
    config_lib.unknown_key_error('system.spin_polarization')
  )
  assert "'network.ferminet.hidden_dims'" in str(
    config_lib.unknown_key_error('network.ferminet.hiden_dims')
  )


def test_shipped_configs_exist():
  assert {p.name for p in CONFIGS} >= {'atom.py', 'diatomic.py', 'organic.py'}


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_resolve(path):
  cfg = config_lib.resolve(_load(path))
  system = config_lib.system_of(cfg)
  assert system.n_electrons > 0
  with pytest.raises(AttributeError):
    cfg.optim.lr.decay_steps = 1  # still locked after resolve
  config_lib.resolve(cfg)  # idempotent


@pytest.mark.parametrize('name', molecules.names())
def test_every_molecule_resolves(name):
  cfg = _load(ROOT / 'configs' / ('diatomic.py' if name in molecules.DIATOMICS else 'organic.py'))
  cfg.system.molecule_name = name
  system = config_lib.system_of(config_lib.resolve(cfg))
  assert system.charge == 0


def test_resolve_derives_electrons_from_charge_and_spin():
  cfg = _load(ROOT / 'configs' / 'atom.py')
  cfg.system.atom = 'O'
  cfg.system.charge = 1
  assert config_lib.resolve(cfg).system.electrons == (5, 2)
  cfg = _load(ROOT / 'configs' / 'atom.py')
  cfg.system.atom = 'C'
  cfg.system.spin_polarisation = 0
  assert config_lib.resolve(cfg).system.electrons == (3, 3)


@pytest.mark.parametrize(
  'key, value, match',
  [
    ('optim.optimizer', 'sgd', 'optim.optimizer'),
    ('optim.laplacian', 'magic', 'optim.laplacian'),
    ('network.envelope_type', 'round', 'envelope'),
    ('network.network_type', 'lapnet', 'network.network_type'),
    ('network.jastrow', 'ee', 'network.jastrow'),
    ('network.num_envelopes', 0, 'network.num_envelopes'),
    ('batch_size', 0, 'batch_size'),
    ('optim.iterations', -1, 'iterations'),
  ],
)
def test_bad_values_raise(key, value, match):
  cfg = _load(ROOT / 'configs' / 'atom.py')
  section, _, leaf = key.rpartition('.')
  (cfg[section] if section else cfg)[leaf] = value
  with pytest.raises(errors.ConfigError, match=match):
    config_lib.resolve(cfg)


@pytest.mark.parametrize(
  'settings, match',
  [
    ({'envelope_type': 'sto', 'bias_orbitals': True}, "'sto'.*bias_orbitals"),
    ({'network_type': 'psiformer', 'envelope_type': 'sto'}, 'pre-determinant'),
    ({'network_type': 'psiformer', 'psiformer.num_heads': 0}, 'num_heads'),
  ],
)
def test_network_combinations_that_cannot_be_built(settings, match):
  cfg = _load(ROOT / 'configs' / 'atom.py')
  for key, value in settings.items():
    node, _, leaf = key.rpartition('.')
    (cfg.network[node] if node else cfg.network)[leaf] = value
  with pytest.raises(errors.ConfigError, match=match):
    config_lib.resolve(cfg)


def test_reference_envelope_fn_becomes_the_envelope_type():
  """The reference's network.make_envelope_fn/_kwargs select the same envelope here."""
  cfg = _load(ROOT / 'configs' / 'atom.py')
  cfg.network.make_envelope_fn = 'ferminet.envelopes.make_bottleneck_envelope'
  cfg.network.make_envelope_kwargs = {'nenv': 32}
  net = config_lib.resolve(cfg).network
  assert (net.envelope_type, net.num_envelopes, net.make_envelope_fn) == ('bottleneck', 32, '')
  cfg = _load(ROOT / 'configs' / 'atom.py')
  cfg.network.make_envelope_fn = 'ferminet.envelopes.make_full_envelope'
  assert config_lib.resolve(cfg).network.envelope_type == 'full'
  cfg = _load(ROOT / 'configs' / 'atom.py')
  cfg.network.make_envelope_fn = 'ferminet.envelopes.make_sto_poly_envelope'
  with pytest.raises(errors.ConfigError, match='network.make_envelope_fn'):
    config_lib.resolve(cfg)


def _cli(*args):
  return subprocess.run(
    [sys.executable, str(ROOT / 'bin' / 'ferminet'), *args],
    capture_output=True,
    text=True,
    timeout=300,
    cwd=ROOT,
  )


def test_cli_dry_run_li():
  out = _cli('--config', 'configs/atom.py', '--config.system.atom', 'Li', '--dry_run')
  assert out.returncode == 0, out.stderr
  lines = dict(line.split(': ', 1) for line in out.stdout.splitlines())
  assert lines['electrons'] == '(2, 1)'
  assert float(lines['nuclear_repulsion_Ha']) == 0.0
  assert lines['hf_method'] == 'UHF'
  assert -7.44 < float(lines['hf_energy_Ha']) < -7.42  # UHF/cc-pVDZ; HF limit -7.4327
  assert int(lines['parameters']) > 0 and int(lines['walkers_per_device']) > 0
  for flag in config_lib.CPU_XLA_FLAGS:  # what the command adds is said
    assert flag in lines['xla_flags']
  # So are the defaults that differ from the reference's, on purpose.
  differing = lines['defaults_differing_from_reference']
  assert 'mcmc.adapt_frequency=1 (reference: 100)' in differing
  assert "optim.laplacian='forward' (reference: 'default')" in differing


def test_differing_defaults_are_only_those_left_at_ours():
  cfg = config_lib.default()
  cfg.mcmc.adapt_frequency = 100
  cfg.optim.laplacian = 'folx'
  assert config_lib.differing_defaults(cfg) == ['optim.max_vmap_batch_size=-1 (reference: 0)']


def test_cli_dry_run_diatomic_units():
  out = _cli(
    '--config=configs/diatomic.py',
    '--config.system.molecule_name=N2',
    '--config.system.bond_length=1.0943',
    '--config.system.units=angstrom',
    '--config.pretrain.basis=sto-3g',
    '--dry_run',
  )
  assert out.returncode == 0, out.stderr
  lines = dict(line.split(': ', 1) for line in out.stdout.splitlines())
  assert float(lines['nuclear_repulsion_Ha']) == pytest.approx(49 / (1.0943 * 1.8897261246), 1e-8)
  assert lines['hf_method'] == 'RHF'


def test_cli_help():
  out = _cli('--help')
  assert out.returncode == 0 and '--config' in out.stdout
  assert all(f'configs/{p.name}' in out.stdout for p in CONFIGS)  # the shipped configs


def test_xyz_config_defaults_to_angstrom(tmp_path):
  path = tmp_path / 'h2.xyz'
  path.write_text('2\nhydrogen\nH 0 0 0\nH 0 0 0.74\n')
  cfg = _load(ROOT / 'configs' / 'organic.py')
  cfg.system.molecule_name = ''
  cfg.system.xyz = str(path)
  system = config_lib.system_of(config_lib.resolve(cfg))
  assert system.nuclear_repulsion() == pytest.approx(1 / (0.74 * 1.8897261246), rel=1e-8)


@pytest.mark.parametrize(
    'key, value',
    [('optim.lr.delay', 0.0), ('mcmc.target_acceptance', 1.5), ('log.save_frequency', -1.0),
     ('mcmc.move_width', 0.0), ('pretrain.scf_fraction', 2.0)],
)  # fmt: skip
def test_out_of_range_values_raise(key, value):
  cfg = _load(ROOT / 'configs' / 'atom.py')
  section, _, leaf = key.rpartition('.')
  node = cfg
  for part in section.split('.'):
    node = node[part]
  node[leaf] = value
  with pytest.raises(errors.ConfigError, match=key):
    config_lib.resolve(cfg)


# Loads each shipped config named on the command line as the ferminet command does
# (absl config_flags, the reference's spelling ferminet/configs/NAME.py), resolves it and
# prints its dry-run summary as JSON: one process for all configs.
_SUMMARIES = """
import json, sys
from absl import flags
from ml_collections import config_flags
from ferminet import cli, config
out = {}
for name in sys.argv[1:]:
  values = flags.FlagValues()
  config_flags.DEFINE_config_file('config', None, '', flag_values=values)
  values(cli._with_shipped_config(['ferminet', '--config', 'ferminet/configs/' + name]))
  lines = cli.summary(config.resolve(values.config))
  out[name] = dict(line.split(': ', 1) for line in lines)
print(json.dumps(out))
"""


def test_dry_run_summary_of_every_shipped_config(tmp_path):
  """Hartree-Fock converges for each, loaded from another folder by the reference's path."""
  env = {**os.environ, 'PYTHONPATH': os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')])}
  out = subprocess.run(
    [sys.executable, '-c', _SUMMARIES, *(p.name for p in CONFIGS)],
    capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env,
  )  # fmt: skip
  assert out.returncode == 0, out.stderr[-3000:]
  summaries = json.loads(out.stdout.splitlines()[-1])
  assert sorted(summaries) == [p.name for p in CONFIGS]
  for name, lines in summaries.items():
    assert float(lines['hf_energy_Ha']) < 0 and lines['hf_converged'] == 'True', name


def test_cpu_xla_flags_never_override_the_users():
  env = {}
  assert config_lib.apply_cpu_xla_flags(env) == list(config_lib.CPU_XLA_FLAGS)
  assert env['XLA_FLAGS'].split() == list(config_lib.CPU_XLA_FLAGS)
  assert config_lib.apply_cpu_xla_flags(env) == []  # idempotent
  name = config_lib.CPU_XLA_FLAGS[0].split('=')[0]
  env = {'XLA_FLAGS': f'--xla_force_host_platform_device_count=2 {name}=dot'}
  assert config_lib.apply_cpu_xla_flags(env) == []
  assert env['XLA_FLAGS'] == f'--xla_force_host_platform_device_count=2 {name}=dot'
  env = {'XLA_FLAGS': '--xla_force_host_platform_device_count=2'}
  config_lib.apply_cpu_xla_flags(env)
  assert env['XLA_FLAGS'].split()[0] == '--xla_force_host_platform_device_count=2'


def test_two_system_sources_are_an_error():
  """configs/atom.py sets system.atom; adding a molecule_name used to train Li labelled N2."""
  cfg = _load(ROOT / 'configs' / 'atom.py')
  cfg.system.molecule_name = 'N2'
  with pytest.raises(errors.ConfigError, match=r"system.atom \('Li'\) and system.molecule_name"):
    config_lib.resolve(cfg)
  cfg.system.atom = ''  # one source: fine, and labelled by it (G3 bond length: with R=)
  assert config_lib.resolve(cfg).system.name == molecules.label('N2') == 'N2 R=2.13535 bohr'


def test_pyscf_mole_with_ecp_keeps_it():
  """Its nelec counts valence electrons: HCl (4, 4) with effective charges (7, 1), neutral,
  not an all-electron ion of charge +10 (as before pseudopotentials were supported).
  ecp='ccecp' gives every element PySCF has a ccECP for one, H too (no core electrons)."""
  from pyscf import gto

  cfg = config_lib.default()
  cfg.system.pyscf_mol = gto.M(
    atom='Cl 0 0 0; H 0 0 1.27', unit='angstrom', basis='ccecp-cc-pvdz', ecp='ccecp', verbose=0
  )
  cfg = config_lib.resolve(cfg)
  system = config_lib.system_of(cfg)
  assert system.electrons == (4, 4) and system.cores == (10, 0)
  np.testing.assert_array_equal(system.charges, [7.0, 1.0])
  assert system.charge == 0 and system.pp_type == 'ccecp' and system.pp_symbols == ('Cl', 'H')
  assert (cfg.system.use_pp, cfg.system.pp.symbols) == (True, ('Cl', 'H'))
  assert cfg.pretrain.basis == cfg.system.pp.basis == 'ccecp-cc-pvdz'
  assert config_lib.system_of(config_lib.resolve(cfg)) == system  # idempotent


def test_pyscf_mole_keeps_its_basis():
  from pyscf import gto

  cfg = config_lib.default()
  cfg.system.pyscf_mol = gto.M(atom='Li 0 0 0; H 0 0 1.6', basis='sto-3g', verbose=0)
  cfg = config_lib.resolve(cfg)
  assert cfg.pretrain.basis == 'sto-3g'
  assert cfg.system.electrons == (2, 2)
  cfg = config_lib.default()
  cfg.system.pyscf_mol = gto.M(atom='Li 0 0 0; H 0 0 1.6', basis={'Li': 'sto-3g'}, verbose=0)
  with pytest.warns(UserWarning, match='per-element basis'):
    assert config_lib.resolve(cfg).pretrain.basis == 'ccpvdz'
