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


def _determinant(system, hf):
  """The HF determinant as a signed log ψ of one walker (params unused)."""
  signed = scf.make_determinant(hf.mol, system.electrons[0])
  return lambda params, x: signed((hf.coeff_alpha, hf.coeff_beta), x)


@pytest.fixture(scope='module')
def lih_ecp():
  """LiH with ccECP on Li (He core) and all-electron H: 2 electrons, effective charges
  (1, 1); its RHF determinant sampled from |Φ|² (1024 walkers, 40 sweeps of 10 steps)."""
  import jax
  import jax.numpy as jnp

  from ferminet import mcmc

  atoms = [system_lib.Atom('Li'), system_lib.Atom('H', (0.0, 0.0, 3.015))]
  system = system_lib.with_pseudopotentials(system_lib.make_system(atoms), 'ccecp', ['Li'])
  hf = scf.hartree_fock(system, 'ccpvdz', 'rhf', 'ccecp-cc-pvdz')
  signed = _determinant(system, hf)
  log_prob = lambda p, x: 2.0 * signed(p, x)[1]
  step = jax.jit(mcmc.make_step(log_prob, 10))
  walkers = mcmc.init_walkers(jax.random.PRNGKey(0), system, 1024, 1.0)
  log_p = jax.vmap(lambda x: log_prob(None, x))(walkers)
  ids, width = jnp.arange(1024), jnp.asarray(0.4)
  for i in range(40):
    walkers, log_p, _ = step(None, walkers, log_p, jax.random.PRNGKey(i), ids, width)
  return system, hf, signed, walkers


def test_hartree_fock_energy_from_the_estimators(lih_ecp):
  """⟨Φ|H|Φ⟩ = E_HF for the HF determinant: the Monte Carlo mean of the local energy
  (kinetic, Coulomb with effective charges, ECP local and non-local) equals PySCF's HF
  energy with the same ECP within 4σ."""
  import jax

  from ferminet import hamiltonian

  system, hf, signed, walkers = lih_ecp
  assert system.electrons == (1, 1) and system.charges.tolist() == [1.0, 1.0]
  local_energy = hamiltonian.make_local_energy(
    lambda p, x: signed(p, x)[1], system, 'hessian', signed=signed
  )
  batch = jax.jit(hamiltonian.batch_local_energy(local_energy))
  e_l, terms = batch(None, jax.random.PRNGKey(7), walkers, jax.numpy.arange(len(walkers)))
  assert set(terms) == {'kinetic', 'ee', 'en', 'nn', 'ecp_local', 'ecp_nonlocal'}
  assert np.all(np.asarray(terms['ecp_nonlocal']) != 0)  # Li's ccECP has an s channel
  mean, sigma = float(np.mean(e_l)), float(np.std(e_l) / np.sqrt(len(e_l)))
  assert sigma < 0.01
  print(f'LiH ccECP HF: MC {mean:.5f} +- {sigma:.5f}, PySCF {hf.energy:.5f}')
  assert abs(mean - hf.energy) < 4 * sigma, (mean, sigma, hf.energy)


def test_ecp_random_numbers_follow_the_walker_ids(lih_ecp):
  """The non-local part's quadrature rotations come from each walker's global index: the
  same walkers in one batch or in two halves (as on two devices) give the same values, a
  permuted batch the permuted values, and another key other values."""
  import jax
  import jax.numpy as jnp

  from ferminet import hamiltonian

  system, _, signed, walkers = lih_ecp
  local_energy = hamiltonian.make_local_energy(
    lambda p, x: signed(p, x)[1], system, 'hessian', signed=signed
  )
  batch = jax.jit(hamiltonian.batch_local_energy(local_energy))
  x, ids, key = walkers[:8], jnp.arange(8), jax.random.PRNGKey(3)
  whole = batch(None, key, x, ids)[1]['ecp_nonlocal']
  halves = [batch(None, key, x[s], ids[s])[1]['ecp_nonlocal'] for s in (slice(0, 4), slice(4, 8))]
  np.testing.assert_allclose(np.concatenate(halves), whole, rtol=1e-12)
  order = jnp.array([5, 2, 7, 0, 1, 6, 3, 4])
  permuted = batch(None, key, x[order], ids[order])[1]['ecp_nonlocal']
  np.testing.assert_allclose(permuted, whole[order], rtol=1e-12)
  other = batch(None, jax.random.PRNGKey(4), x, ids)[1]['ecp_nonlocal']
  assert np.all(np.abs(other - whole) > 1e-9)


# Mg with ccECP (Ne core, 2 valence electrons): CCSD(T)/aug-cc-pV5Z total energy, which for
# two electrons is full CI in that basis: -0.82340047 Ha (UCCSD; (T) vanishes). From the
# data of Bennett et al., "A new generation of effective core potentials from correlated
# calculations: 2nd row elements", J. Chem. Phys. 149, 104108 (2018), published with the
# paper (github.com/mcbennet/2nd_Row_Data, Molpro/Mg/ccECP_Ne/5z.out). The basis-set limit
# is lower by a fraction of a mHa.
MG_CCECP_REFERENCE = -0.82340047


@pytest.mark.slow
def test_trained_mg_with_ccecp_matches_the_published_energy(tmp_path):
  """A small FermiNet for Mg with ccECP, trained 1500 KFAC steps on CPU (about a minute):
  within 4 mHa of the published value and not below it beyond 4σ (VMC is variational);
  its S² is that of a singlet."""
  import sys

  sys.path.insert(0, str(__import__('pathlib').Path(__file__).parent))
  from test_train import tiny_config

  from ferminet import analysis, train

  cfg = tiny_config(
    tmp_path,
    atom='Mg',
    iterations=1500,
    **{
      'system.use_pp': True,
      'system.pp.symbols': ('Mg',),
      'batch_size': 256,
      'network.determinants': 4,
      'network.ferminet.hidden_dims': ((32, 8), (32, 8)),
      'pretrain.iterations': 300,
      'mcmc.burn_in': 100,
      'mcmc.steps': 10,
      'observables.s2': True,
    },
  )
  train.train(cfg)
  summary, _ = analysis.analyze_run(tmp_path)
  e = summary.energy
  assert e.mean - MG_CCECP_REFERENCE < 4e-3, e  # measured 1.8 and 2.5 mHa (two seeds)
  assert e.mean > MG_CCECP_REFERENCE - 4 * e.stderr, e
  assert abs(summary.observables['s2'].mean) < 0.01, summary.observables['s2']


def test_names_say_pseudopotential():
  """'Mg ccecp' (neutral: the core electrons are not a charge), so that no all-electron
  reference energy or run is taken for it."""
  cfg = config_lib.default()
  cfg.system.atom = 'Mg'
  cfg.system.use_pp = True
  cfg.system.pp.symbols = ('Mg',)
  cfg = config_lib.resolve(cfg)
  assert cfg.system.name == 'Mg ccecp' == config_lib.resolve(cfg).system.name
  assert config_lib.system_of(cfg).electrons == (1, 1)
