"""Systems with pseudopotentials: core electrons, effective charges, configs as the reference's."""

import numpy as np
import pytest

from ferminet import config as config_lib
from ferminet import errors, scf
from ferminet import system as system_lib
from ferminet.utils import system as ref_system

HCL = [ref_system.Atom('H', (0.0, 0.0, 0.0)), ref_system.Atom('Cl', (0.0, 0.0, 2.4))]


def _hcl_config(**system):
  cfg = config_lib.default()
  cfg.system.molecule = list(HCL)
  cfg.system.use_pp = True
  cfg.system.pp.symbols = ['Cl']
  for key, value in system.items():
    cfg.system[key] = value
  return cfg


@pytest.mark.parametrize('electrons', [(9, 9), (4, 4), ()])
def test_core_electrons_are_removed(electrons):
  """All electrons (the reference's hcl.py gives (9, 9)), the valence ones, or derived:
  (4, 4) either way; ccECP's Cl core holds 10 electrons (Bennett et al. 2018)."""
  cfg = config_lib.resolve(_hcl_config(electrons=electrons))
  system = config_lib.system_of(cfg)
  assert system.electrons == (4, 4) and system.cores == (0, 10)
  np.testing.assert_array_equal(system.charges, [1.0, 7.0])
  assert system.charge == 0 and system.pseudo_atoms == (1,)
  assert config_lib.system_of(config_lib.resolve(cfg)) == system  # idempotent


def test_ions_keep_their_charge():
  cfg = config_lib.resolve(_hcl_config(charge=1, spin_polarisation=1))
  system = config_lib.system_of(cfg)
  assert system.electrons == (4, 3) and system.charge == 1
  assert config_lib.system_of(config_lib.resolve(cfg)) == system


@pytest.mark.parametrize(
  'symbols, pp_type, message',
  [
    (['Br'], 'ccecp', 'names Br, which the molecule'),
    (None, 'ccecp', 'needs system.pp.symbols'),
    (['Cl'], 'no-such-ecp', "no 'no-such-ecp' pseudopotential for Cl"),
  ],
)
def test_pseudopotential_errors(symbols, pp_type, message):
  cfg = _hcl_config()
  cfg.system.pp.symbols = symbols
  cfg.system.pp.type = pp_type
  with pytest.raises(errors.ConfigError, match=message):
    config_lib.resolve(cfg)


def test_reference_hcl_config_resolves():
  """The reference's hcl.py pattern: electrons (9, 9), use_pp, pp.symbols, and a
  set_molecule that builds a PySCF Mole with ecp={'Cl': 'ccecp'} and a per-element basis
  (cc-pVDZ for H, the pp basis for Cl): pretraining gets both bases, no warning."""
  from pyscf import gto

  def finalize(cfg):
    mol = gto.Mole()
    mol.atom = [[a.symbol, a.coords] for a in cfg.system.molecule]
    mol.basis = {'H': 'cc-pvdz', 'Cl': cfg.system.pp.basis}
    mol.ecp = {'Cl': cfg.system.pp.type}
    mol.unit = 'bohr'
    mol.verbose = 0
    mol.build()
    cfg.system.pyscf_mol = mol
    return cfg

  cfg = _hcl_config(electrons=(9, 9))
  with cfg.ignore_type():
    cfg.system.set_molecule = finalize
  cfg = config_lib.resolve(cfg)
  system = config_lib.system_of(cfg)
  assert system.electrons == (4, 4) and system.pp_symbols == ('Cl',)
  assert (cfg.pretrain.basis, cfg.system.pp.basis) == ('cc-pvdz', 'ccecp-cc-pVDZ')


def test_mole_and_config_disagree():
  from pyscf import gto

  cfg = config_lib.default()
  cfg.system.pyscf_mol = gto.M(
    atom='Cl 0 0 0; H 0 0 2.4', unit='bohr', basis='ccecp-cc-pvdz', ecp='ccecp', verbose=0
  )
  cfg.system.use_pp = True
  cfg.system.pp.type = 'ccecp-soc'
  with pytest.raises(errors.ConfigError, match="asks for 'ccecp-soc'"):
    config_lib.resolve(cfg)


def test_hartree_fock_with_pseudopotentials_matches_pyscf():
  """Our Mole for the system equals PySCF's own ECP calculation (same energy)."""
  from pyscf import gto
  from pyscf import scf as pyscf_scf

  system = system_lib.with_pseudopotentials(system_lib.make_system(HCL), 'ccecp', ['Cl'])
  hf = scf.hartree_fock(system, 'ccpvdz', 'rhf', 'ccecp-cc-pvdz')
  mol = gto.M(
    atom='H 0 0 0; Cl 0 0 2.4',
    unit='bohr',
    basis={'H': 'ccpvdz', 'Cl': 'ccecp-cc-pvdz'},
    ecp={'Cl': 'ccecp'},
    verbose=0,
  )
  expected = pyscf_scf.RHF(mol).kernel()
  assert hf.mol.nelec == (4, 4)
  np.testing.assert_allclose(hf.energy, expected, atol=1e-8)


def test_mole_read_in_other_units_is_named():
  """The reference's hcl.py builds its Mole from system.molecule's bohr coordinates with
  mol.unit 'angstrom': its HCl is 1.89× longer. The Mole's nuclei win, as there, with a
  warning that says why they differ."""
  from pyscf import gto

  cfg = _hcl_config()
  mol = gto.Mole()
  mol.atom = [[a.symbol, a.coords] for a in HCL]
  mol.basis, mol.ecp, mol.unit, mol.verbose = 'ccecp-cc-pvdz', {'Cl': 'ccecp'}, 'angstrom', 0
  cfg.system.pyscf_mol = mol.build()
  with pytest.warns(UserWarning, match='read the bohr coordinates of system.molecule as angstrom'):
    cfg = config_lib.resolve(cfg)
  np.testing.assert_allclose(cfg.system.molecule[1].coords[2], 2.4 * system_lib.BOHR_PER_ANGSTROM)
