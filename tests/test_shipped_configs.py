"""The shipped configs: found from any folder under both spellings, installed or not, and
the reference's semantics (same command line, same molecule) of each."""

import os
import pathlib
import shutil
import subprocess
import sys
import venv

import numpy as np
import pytest
from absl import flags
from ml_collections import config_flags

from ferminet import analysis, cli, errors, molecules
from ferminet import config as config_lib
from ferminet import system as system_lib

# ml_collections' config_flags loads config files with importlib's deprecated load_module.
pytestmark = pytest.mark.filterwarnings('ignore:the load_module:DeprecationWarning')
ROOT = pathlib.Path(__file__).resolve().parent.parent
NAMES = cli.shipped_configs()
BOHR = system_lib.BOHR_PER_ANGSTROM
# electrons of each shipped config as it is shipped
ELECTRONS = {
  'atom.py': (2, 1),  # Li
  'c2h4.py': (8, 8),
  'ch4.py': (5, 5),
  'diatomic.py': (7, 7),  # N2
  'h10.py': (5, 5),
  'h4.py': (2, 2),
  'hcl.py': (4, 4),  # (9, 9) less the 10 core electrons of Cl's ccECP
  'hn.py': (1, 1),  # H2
  'nh3.py': (5, 5),
  'organic.py': (5, 5),  # CH4
}


def _load(spelling: str, *overrides: str):
  """The config the ferminet command builds from ``--config spelling overrides...``:
  absl's config_flags on the argv the command passes it."""
  argv = cli._with_shipped_config(['ferminet', '--config', spelling, *overrides])
  values = flags.FlagValues()
  config_flags.DEFINE_config_file('config', None, '', flag_values=values, sys_argv=argv)
  values(argv)
  return values.config


def _resolved(name: str, *overrides: str):
  cfg = config_lib.resolve(_load(f'configs/{name}', *overrides))
  return cfg, config_lib.system_of(cfg)


def test_the_shipped_configs_are_one_set_of_files():
  assert NAMES == sorted(ELECTRONS)
  assert (ROOT / 'configs').resolve() == cli.CONFIG_DIR  # the symlink, one copy of each


@pytest.mark.parametrize('spelling', ['configs/{}', 'ferminet/configs/{}'])
def test_every_config_loads_from_another_folder(spelling, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  for name in NAMES:
    assert cli.shipped_config_path(spelling.format(name)) == str(cli.CONFIG_DIR / name)
    cfg = config_lib.resolve(_load(spelling.format(name)))
    assert tuple(cfg.system.electrons) == ELECTRONS[name], name


def test_which_paths_are_taken_for_shipped_configs(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  (tmp_path / 'configs').mkdir()
  (tmp_path / 'configs' / 'atom.py').write_text('# my own\n')
  assert cli.shipped_config_path('configs/atom.py') is None  # an existing file is used
  assert cli.shipped_config_path('ferminet/configs/atom.py') == str(cli.CONFIG_DIR / 'atom.py')
  assert cli.shipped_config_path('configs/no_such.py') is None
  assert cli.shipped_config_path(str(tmp_path / 'x' / 'configs' / 'atom.py')) is None  # absolute
  assert cli.shipped_config_path('atom.py') is None
  shipped = str(cli.CONFIG_DIR / 'h4.py')
  assert cli._with_shipped_config(['f', '--config=ferminet/configs/h4.py:arg', '-x']) == [
    'f', f'--config={shipped}:arg', '-x',
  ]  # fmt: skip
  assert cli._with_shipped_config(['f', '--config', 'configs/h4.py']) == ['f', '--config', shipped]


def _cli(*args, cwd):
  env = {**os.environ, 'PYTHONPATH': os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')])}
  out = subprocess.run(
    [sys.executable, str(ROOT / 'bin' / 'ferminet'), *args, '--config.pretrain.basis=sto-3g',
     '--dry_run'],
    capture_output=True, text=True, timeout=300, cwd=cwd, env=env,
  )  # fmt: skip
  assert out.returncode == 0, out.stderr[-3000:]
  return dict(line.split(': ', 1) for line in out.stdout.splitlines())


def test_cli_reference_spelling_from_another_folder(tmp_path):
  """The reference's command line for triplet O2 (a bond length: O2 has no default)."""
  lines = _cli(
    '--config', 'ferminet/configs/diatomic.py', '--config.system.molecule_name', 'O2',
    '--config.system.bond_length', '1.2075', cwd=tmp_path,
  )  # fmt: skip
  assert lines['electrons'] == '(9, 7)' and lines['hf_method'] == 'UHF'
  assert float(lines['nuclear_repulsion_Ha']) == pytest.approx(64 / (1.2075 * BOHR), rel=1e-7)


def test_cli_project_spelling_from_another_folder(tmp_path):
  lines = _cli(
    '--config=configs/atom.py', '--config.system.atom=Li', '--config.system.delta_charge=0.1',
    cwd=tmp_path,
  )  # fmt: skip
  assert lines['electrons'] == '(2, 1)' and float(lines['charge']) == pytest.approx(0.1)


@pytest.mark.parametrize(
  'formula, bond_angstrom, z, electrons',
  [('N2', 1.129978, (7, 7), (7, 7)), ('HCl', 1.2799799, (1, 17), (9, 9)),
   ('F2', 1.420604, (9, 9), (9, 9)), ('CN', 1.134797, (6, 7), (7, 6)),
   ('BeH', 1.348263, (4, 1), (3, 2)), ('LiH', 1.639999, (3, 1), (2, 2)),
   ('CO', 1.150338, (6, 8), (7, 7))],
)  # fmt: skip
def test_diatomic_defaults_are_the_reference_g3_bonds(formula, bond_angstrom, z, electrons):
  cfg, system = _resolved('diatomic.py', '--config.system.molecule_name', formula)
  r = bond_angstrom * BOHR
  assert system.electrons == electrons and tuple(system.charges) == z
  np.testing.assert_allclose(system.coords, [[-r / 2, 0, 0], [r / 2, 0, 0]], rtol=1e-12)
  assert system.nuclear_repulsion() == pytest.approx(z[0] * z[1] / r, rel=1e-12)
  assert cfg.system.name == f'{formula} R={r:.6g} bohr'  # not the paper geometry's label


def test_diatomic_default_is_n2_and_spins_follow_the_reference():
  _, n2 = _resolved('diatomic.py')
  assert n2.symbols == ('N', 'N') and n2.nuclear_repulsion() == pytest.approx(
    49 / (1.129978 * BOHR), rel=1e-12
  )
  for formula, electrons in (('O2', (9, 7)), ('B2', (6, 4)), ('C2', (6, 6))):
    _, system = _resolved(
      'diatomic.py', '--config.system.molecule_name', formula, '--config.system.bond_length=1.3'
    )
    assert system.electrons == electrons, formula
  _, cation = _resolved(
    'diatomic.py', '--config.system.molecule_name=O2', '--config.system.bond_length=1.1',
    '--config.system.charge=1',
  )  # fmt: skip
  assert cation.electrons == (8, 7)  # the triplet default is for the neutral molecule
  with pytest.raises(errors.ConfigError, match="no default bond length for 'O2'"):
    _resolved('diatomic.py', '--config.system.molecule_name', 'O2')


def test_bond_length_units_and_multiple():
  _, system = _resolved(
    'diatomic.py', '--config.system.molecule_name=HCl', '--config.system.bond_length_multiple=1.5'
  )
  assert system.nuclear_repulsion() == pytest.approx(17 / (1.5 * 1.2799799 * BOHR), rel=1e-12)
  cfg, system = _resolved(
    'diatomic.py', '--config.system.bond_length=1.2', '--config.system.bond_length_multiple=2'
  )
  assert system.nuclear_repulsion() == pytest.approx(49 / (2.4 * BOHR), rel=1e-12)
  assert cfg.system.name == f'N2 R={2.4 * BOHR:.6g} bohr'
  with pytest.raises(errors.ConfigError, match='bond_length_multiple scales the bond'):
    _resolved('ch4.py', '--config.system.bond_length_multiple=1.1')
  with pytest.raises(errors.ConfigError, match='bond_length_multiple'):
    _resolved('atom.py', '--config.system.bond_length_multiple=1.1')


def test_paper_geometry_is_the_formula_at_its_bond_length_in_bohr():
  """The FermiNet 2020 paper's N2 (2.068 bohr) keeps its label and reference energy; the
  G3 N2 (the reference's default, 1.129978 Å = 2.1353 bohr) gets neither."""
  cfg, system = _resolved(
    'diatomic.py', '--config.system.bond_length=2.068', '--config.system.units=bohr'
  )
  assert system.nuclear_repulsion() == pytest.approx(49 / 2.068, rel=1e-12)
  assert cfg.system.name == 'N2'
  assert analysis.reference_for(system, cfg.system.name)[0] == pytest.approx(-109.542347)
  cfg, system = _resolved('diatomic.py')
  assert analysis.reference_for(system, cfg.system.name) is None
  for name, (_, _, bohr, _) in molecules.DIATOMICS.items():
    cfg, _ = _resolved(
      'diatomic.py', f'--config.system.molecule_name={name}', f'--config.system.bond_length={bohr}',
      '--config.system.units=bohr',
    )  # fmt: skip
    assert cfg.system.name == name


def test_atom_delta_charge():
  cfg, system = _resolved('atom.py', '--config.system.atom=Li', '--config.system.delta_charge=0.1')
  assert system.charges[0] == pytest.approx(3.1) and system.electrons == (2, 1)
  assert cfg.system.name == 'Li Z=3.1' and analysis.reference_for(system, cfg.system.name) is None
  assert config_lib.system_of(config_lib.resolve(cfg)) == system  # idempotent
  cfg, system = _resolved(
    'atom.py', '--config.system.atom=O', '--config.system.charge=1',
    '--config.system.delta_charge=-0.25',
  )  # fmt: skip
  assert system.charges[0] == pytest.approx(7.75) and system.electrons == (5, 2)
  assert cfg.system.name == 'O+ Z=7.75'
  with pytest.raises(errors.ConfigError, match='delta_charge'):
    _resolved('diatomic.py', '--config.system.delta_charge=0.1')


def test_h4_radius_and_angle():
  cfg, system = _resolved('h4.py')
  side = 2 * 1.738 * BOHR * np.sin(np.pi / 4)
  assert system.nuclear_repulsion() == pytest.approx(4 / side + 2 / (side * np.sqrt(2)), rel=1e-12)
  assert cfg.system.name == 'H4'
  _, system = _resolved('h4.py', '--config.system.radius=3.5', '--config.system.units=bohr')
  np.testing.assert_allclose(np.abs(system.coords[:, :2]), 3.5 * np.sqrt(0.5), rtol=1e-12)
  cfg, _ = _resolved('h4.py', '--config.system.angle=85')
  assert cfg.system.name == f'H4 R={1.738 * BOHR:.6g} bohr angle=85'
  with pytest.raises(errors.ConfigError, match='two radii'):
    _resolved('h4.py', '--config.system.bond_length=1.7')
  with pytest.raises(errors.ConfigError, match='radius of H4'):
    _resolved('diatomic.py', '--config.system.radius=1.7')


def test_hydrogen_chains():
  cfg, system = _resolved('hn.py')
  assert cfg.system.name == 'H2' and system.nuclear_repulsion() == pytest.approx(1 / 1.4)
  cfg, system = _resolved('hn.py', '--config.system.natoms=3', '--config.system.bond_length=2')
  np.testing.assert_allclose(system.coords[:, 0], [-2, 0, 2])
  assert system.electrons == (2, 1) and cfg.system.name == 'H3 chain R=2 bohr'
  cfg, system = _resolved('hn.py', '--config.system.natoms=10', '--config.system.bond_length=1.8')
  _, h10 = _resolved('h10.py')
  assert system == h10 and cfg.system.name == 'H10'
  assert analysis.reference_for(system, cfg.system.name)[0] == pytest.approx(-5.6655)
  with pytest.raises(errors.ConfigError, match='natoms'):
    _resolved('h10.py', '--config.system.natoms=4')


def test_fixed_geometries_of_the_reference_configs():
  """Hand values from the reference's ch4.py, nh3.py, c2h4.py (bohr) and hcl.py (Å)."""
  expected = {
    'ch4.py': (('C', (0.0, 0.0, 0.0)), ('H', (-1.18886, 1.18886, -1.18886))),
    'nh3.py': (('N', (0.0, 0.0, 0.22013)), ('H', (-1.53791, -0.88791, -0.51364))),
    'c2h4.py': (('C', (0.0, 0.0, 1.26135)), ('H', (0.0, -1.74390, -2.33889))),
    'hcl.py': (('H', (0.0, 0.0, 0.0)), ('Cl', (0.0, 0.0, 1.2799799 * BOHR))),
  }
  for name, ((first, first_xyz), (last, last_xyz)) in expected.items():
    cfg, system = _resolved(name)
    assert (system.symbols[0], system.symbols[-1]) == (first, last)
    np.testing.assert_allclose(system.coords[[0, -1]], [first_xyz, last_xyz], atol=1e-12)
  assert cfg.pretrain.iterations == 10_000  # hcl.py, as the reference's
  assert _resolved('ch4.py')[0].system.name == 'CH4'


@pytest.mark.slow
def test_non_editable_install_finds_its_configs(tmp_path):
  """``pip install --no-deps .`` (not editable) into a new virtual environment whose
  dependencies come from this one; the shipped configs are then found from another folder
  under both spellings, with no checkout on the path."""
  env_dir = tmp_path / 'venv'
  venv.create(env_dir, with_pip=True)
  python = env_dir / 'bin' / 'python'
  site = subprocess.run(
    [python, '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])'],
    capture_output=True, text=True, check=True,
  ).stdout.strip()  # fmt: skip
  ours = [p for p in sys.path if p.endswith('site-packages') and os.path.isdir(p)]
  pathlib.Path(site, 'dependencies.pth').write_text('\n'.join(ours) + '\n')
  env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
  source = tmp_path / 'source'  # a copy: the build leaves build/ and *.egg-info in the tree
  skip = ('.git', '.venv*', 'build', 'dist', '*.egg-info', '__pycache__', '.*_cache', 'ferminet_*')
  shutil.copytree(ROOT, source, symlinks=True, ignore=shutil.ignore_patterns(*skip))
  subprocess.run(
    [python, '-m', 'pip', 'install', '-q', '--no-deps', str(source)],
    check=True, env=env, cwd=tmp_path, timeout=600,
  )  # fmt: skip
  work = tmp_path / 'elsewhere'
  work.mkdir()
  for spelling in ('ferminet/configs/atom.py', 'configs/hcl.py'):
    out = subprocess.run(
      [env_dir / 'bin' / 'ferminet', '--config', spelling, '--config.pretrain.basis=sto-3g',
       '--dry_run'],
      capture_output=True, text=True, env=env, cwd=work, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert 'electrons: ' in out.stdout
  where = subprocess.run(
    [python, '-c', 'import ferminet.cli as c; print(c.CONFIG_DIR)'],
    capture_output=True, text=True, env=env, cwd=work, check=True,
  ).stdout.strip()  # fmt: skip
  assert pathlib.Path(where).is_relative_to(site) and pathlib.Path(where, 'hcl.py').is_file()
