"""The run configuration: every default in one place, resolution and locking.

Key names follow DeepMind's FermiNet (``cfg.system.molecule``,
``cfg.network.ferminet.hidden_dims``, ``cfg.optim.iterations``, …) so that its
users' config files and command lines work unchanged.

Life of a config: ``default()`` returns a *locked* ConfigDict (a config file can
change values but a misspelled key is an error); a config file's
``get_config()`` edits it (a reference-style file starts from the unlocked
``ferminet.base_config.default()`` and may add keys of its own); the ``ferminet``
command locks what ``get_config()`` returns, then applies the command-line
overrides (a misspelled ``--config.KEY`` is an error); ``resolve()`` calls
``system.set_molecule`` if set, builds the physical system (``system.molecule``,
``system.electrons``) and locks the result again.

Every key of the reference's ``base_config.default()`` exists here. Those whose
capability ferminet lacks, or that the reference itself ignores, are listed once,
in ``REFERENCE_ONLY``: accepted at their default, one clear error otherwise.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import os
import pathlib
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import ml_collections
import numpy as np
from ml_collections import config_dict

from ferminet import checkpoint, errors, molecules, reference_checkpoint
from ferminet import system as system_lib

OPTIMIZERS = ('kfac', 'adam', 'lamb', 'spring', 'none')
# log.started_from of a run that started from no other checkpoint (an output of the run).
NOT_STARTED_FROM = {'path': '', 'step': -1, 'system': ''}
LAPLACIANS = ('forward', 'folx', 'hessian')
# Other names of a Laplacian, as the reference spells them; resolve() replaces them.
LAPLACIAN_ALIASES = {'default': 'hessian'}  # the reference's exact loop over 3N directions
ENVELOPES = ('isotropic', 'diagonal', 'full', 'null', 'bottleneck', 'sto')
NETWORK_TYPES = ('ferminet', 'psiformer')
# 'default': none for the FermiNet, simple_ee for the Psiformer (as the reference)
JASTROWS = ('default', 'none', 'simple_ee')
HF_METHODS = ('auto', 'rhf', 'uhf', 'rohf')
# The reference's envelope makers (network.make_envelope_fn) that resolve() replaces by our
# network.envelope_type; the bottleneck's make_envelope_kwargs {'nenv': k} becomes
# network.num_envelopes.
REFERENCE_ENVELOPE_FNS = {
  f'ferminet.envelopes.make_{kind}_envelope': kind
  for kind in ('isotropic', 'diagonal', 'full', 'null', 'bottleneck', 'sto')
}
# XLA CPU options the ``ferminet`` command adds to XLA_FLAGS (debug.cpu_xla_flags) unless
# XLA_FLAGS already names them. YNNPACK fusions off: jaxlib 0.10's CPU default fuses dots
# through YNNPACK, which made the forward Laplacian ~1.5x slower (see README, Speed).
CPU_XLA_FLAGS = ('--xla_cpu_experimental_ynn_fusion_type=',)
# debug.compilation_cache: the most bytes kept (JAX evicts the least recently used entries)
# and the shortest compilation worth keeping, in seconds.
COMPILATION_CACHE_MAX_BYTES = 4 * 2**30
COMPILATION_CACHE_MIN_SECONDS = 0.5


class SystemType(enum.IntEnum):
  """The reference's system types (``system.type``); only molecules exist."""

  MOLECULE = 1

  @classmethod
  def has_value(cls, value: Any) -> bool:
    """Whether ``value`` is a member or a member's integer value."""
    return any(value is item or value == item.value for item in cls)


def default() -> ml_collections.ConfigDict:
  """The default config: the only home of default values. Returned locked."""
  cfg = ml_collections.ConfigDict(
    {
      # Total number of walkers over all devices of all processes (hosts).
      'batch_size': 4096,
      # The config module (the reference's bookkeeping; config files set it). No effect.
      'config_module': 'ferminet.base_config',
      'system': {
        # Label for the reference table and ferminet-analyze (e.g. 'Li', 'N2'); set by
        # resolve(): the molecule name, with R=/angle= appended off the default geometry.
        'name': '',
        # Exactly one of these defines the nuclei (two are an error):
        'atom': '',  # element symbol: a single atom at the origin
        'molecule_name': '',  # a named structure, see ferminet.molecules
        'xyz': '',  # path of an xyz file
        'pyscf_mol': None,  # a built pyscf.gto.Mole
        'molecule': config_dict.placeholder(list),  # list of system.Atom
        # Parameters of a named structure, None: its default (see ferminet.molecules).
        # bond_length in system.units: diatomics the bond (default: the G3 bond length
        # of DeepMind's configs/diatomic.py, in angstrom), H4 the circle radius (1.738
        # angstrom; or system.radius), Hn and H10 the spacing (1.4 and 1.8 bohr).
        'bond_length': config_dict.placeholder(float),
        # Diatomics only: the bond is bond_length (or its default) times this, e.g. 1.2 for
        # a stretched bond (configs/diatomic.py, as in the reference).
        'bond_length_multiple': 1.0,
        'radius': config_dict.placeholder(float),  # H4 only: circle radius in system.units
        'angle': config_dict.placeholder(float),  # degrees, H4 only (90: square)
        'natoms': config_dict.placeholder(int),  # Hn only: number of H atoms (default 2)
        # Units of bond_length, radius and system.molecule coordinates (default bohr; the
        # diatomic and h4 configs set angstrom, as the reference's do) and of an xyz file
        # without a units= comment (default angstrom, the xyz convention).
        'units': config_dict.placeholder(str),
        'charge': 0,  # total charge in e
        # system.atom only: added to the atom's nuclear charge, in e (e.g. 0.1: Z + 0.1);
        # the electrons stay those of the integer atom and system.charge (reference atom.py).
        'delta_charge': 0.0,
        'spin_polarisation': config_dict.placeholder(int),  # n_alpha - n_beta
        'electrons': (),  # (n_alpha, n_beta); derived when empty
        # A function cfg -> cfg that sets system.molecule (and often system.electrons)
        # from the config's other keys, as in the reference's configs; resolve() calls
        # it once the command-line overrides are applied and records its name here.
        'set_molecule': None,
        # Reference keys accepted at their default only (see REFERENCE_ONLY):
        'type': SystemType.MOLECULE.value,
        'ndim': 3,
        'states': 0,  # excited states
        # Pseudopotentials (PySCF's ECP tables) on the elements of pp.symbols, e.g. ['Cl']:
        # their core electrons are removed (system.electrons may count all electrons, as in
        # the reference's hcl.py, or the valence ones), HF pretraining uses pp.basis for them.
        'use_pp': False,
        'pp': {
          'type': 'ccecp',
          'basis': 'ccecp-cc-pVDZ',
          'symbols': config_dict.placeholder(tuple),
        },
        'make_local_energy_fn': '',
        'make_local_energy_kwargs': {},
      },
      'network': {
        'network_type': 'ferminet',
        'determinants': 16,
        'full_det': True,
        # isotropic | diagonal | full | null | bottleneck | sto (networks/envelopes.py)
        'envelope_type': 'isotropic',
        'num_envelopes': 16,  # bottleneck only: isotropic envelopes shared by all orbitals
        'bias_orbitals': False,
        'ferminet': {
          # (one-electron width, two-electron width) per layer.
          'hidden_dims': ((256, 32),) * 4,
          # True: the layers as DeepMind's FermiNet computes them, residual connections
          # (h + tanh(z)) / sqrt(2) and electron self-distance r_ii = 0 in the pair stream,
          # so its checkpoints and hyperparameters carry over. False: this package's layers
          # before version 0.2 (h + tanh(z), r_ii = sqrt(3)), to continue their checkpoints.
          'reference_layers': True,
          # The last layer updates the pair stream too, and the orbitals see the
          # last layer's [h_i, spin means of h_j and of h_ij].
          'use_last_layer': False,
          # Separate pair-stream weights for same-spin and opposite-spin pairs.
          'separate_spin_channels': False,
          # Reference keys accepted at their default only (see REFERENCE_ONLY):
          'schnet_electron_electron_convolutions': (),
          'electron_nuclear_aux_dims': (),
          'nuclear_embedding_dim': 0,
          'schnet_electron_nuclear_convolutions': (),
        },
        # The Psiformer's settings (network_type 'psiformer'): attention layers,
        # heads of heads_dim, the MLP after each, post-layer-norm.
        'psiformer': {
          'num_layers': 4,
          'num_heads': 4,
          'heads_dim': 64,
          'mlp_hidden_dims': (256,),
          'use_layer_norm': True,
        },
        # default (none for the FermiNet, simple_ee for the Psiformer) | none | simple_ee
        'jastrow': 'default',
        # Input features (log(1 + r), d·log(1 + r)/r) instead of (r, d).
        'rescale_inputs': False,
        # Reference keys accepted at their default only (see REFERENCE_ONLY):
        'complex': False,
        'make_feature_layer_fn': '',
        'make_feature_layer_kwargs': {},
        'make_envelope_fn': '',
        'make_envelope_kwargs': {},
      },
      # Per-step estimates written as train_stats.csv / inference_stats.csv columns (see
      # writers.OBSERVABLE_UNITS): s2 (⟨S²⟩, N_α·N_β extra wavefunction evaluations per
      # walker) and dipole (mu_x..z: the reference's Σ_i r_i in bohr; dipole_x..z: the
      # dipole moment Σ Z R − Σ r in e·bohr; dipole_debye). density: the one-body density
      # matrices P^α, P^β in the AO basis density_basis (a PySCF basis name), estimated each
      # step (N extra wavefunction evaluations per walker) and appended to the run folder's
      # density_matrix.npy, (steps, 2, n_ao, n_ao), np.load reads it (see ferminet.density).
      'observables': {
        's2': False,
        'density': False,
        'density_basis': 'def2-tzvpd',
        'dipole': False,
      },
      'mcmc': {
        'steps': 10,  # Metropolis steps per iteration
        'burn_in': 100,  # iterations of sampling after pretraining
        'init_width': 1.0,  # bohr: spread of initial electrons around atoms
        'move_width': 0.02,  # bohr: initial std of the Gaussian proposal
        'adapt_frequency': 1,  # iterations between width updates (see mcmc.adapt_width)
        'target_acceptance': 0.5,
        # Reference keys accepted at their default only (see REFERENCE_ONLY):
        'use_hmc': False,
        'num_leapfrog_steps': 10,
        'init_means': (),
        'scale_by_nuclear_distance': False,
        'blocks': 1,
      },
      'optim': {
        'objective': 'vmc',
        'iterations': 1000000,
        # kfac | adam | lamb (the reference's: clipped Adam with a trust ratio) | spring
        # (MinSR with Kaczmarz momentum, see optim.spring) | none (inference)
        'optimizer': 'kfac',
        # forward (written for the FermiNet, fwdlap) | folx (generic forward Laplacian)
        # | hessian (exact loop over 3N Hessian-vector products; 'default', the
        # reference's name for it, is accepted and resolved to hessian)
        'laplacian': 'forward',
        # folx sparsity_threshold (laplacian=folx only); -1 = auto: 6 (sparse
        # two-electron stream) from 10 electrons on, else 0 (dense). Measured on CPU:
        # +20% local energies/s at N2 and bicyclobutane with 6, but 3x slower for Li,
        # where the sparse bookkeeping dominates.
        'forward_laplacian_sparsity': -1,
        # Local energies of at most this many walkers at once per device; 0: all at once;
        # -1 = auto: on CPU with a forward Laplacian, chunks whose Jacobians fit in cache
        # (4 walkers at N2, measured 1.7x faster than all 64 at once), else 0. On a GPU set
        # it to bound memory on large molecules.
        'max_vmap_batch_size': -1,
        # An iteration whose energy or new parameters are not finite is rolled back
        # (parameters, optimizer state, walkers) and counted in train_stats.csv
        # (column rolled_back); this many in a row stop the run.
        'max_nonfinite_steps': 10,
        # True: as the reference, a non-finite step never stops the run (each is rolled
        # back; max_nonfinite_steps is not applied).
        'reset_if_nan': False,
        'lr': {'rate': 0.05, 'decay': 1.0, 'delay': 10000.0},
        'clip_local_energy': 5.0,  # in units of the mean absolute deviation
        'clip_median': False,
        'center_at_clip': True,
        # c > 0 adds c·S² (hartree) to the local energy that is minimised, to push towards
        # the lowest spin state; the energy and variance written stay the Hamiltonian's.
        'spin_energy': 0.0,
        # Reference keys accepted at their default only (see REFERENCE_ONLY):
        'vmc_weight': 0.0,
        'overlap': {'weights': None, 'penalty': 1.0},
        'kfac': {
          'invert_every': 1,
          'cov_update_every': 1,
          'damping': 0.001,
          'cov_ema_decay': 0.95,
          'momentum': 0.0,
          'momentum_type': 'regular',  # the reference's; accepted at this value only
          # Accepted for reference configs, but only this value: kfac-jax reads it only
          # with adaptive damping, which is not used (here or in the reference).
          'min_damping': 1.0e-4,
          'mean_center': True,  # the reference's; accepted at this value only
          'norm_constraint': 0.001,
          'l2_reg': 0.0,
          'register_only_generic': False,
        },
        'adam': {'b1': 0.9, 'b2': 0.999, 'eps': 1.0e-8, 'eps_root': 0.0},
        # SPRING (Goldshlager, Abrahamsen & Lin, J. Comput. Phys. 2024; optimizers._make_spring),
        # with the optim.lr schedule. Defaults: those of the authors' code (vmcnet).
        'spring': {
          'damping': 1.0e-3,  # λ added to the walker-space kernel Ō Ōᵀ (> 0)
          'momentum': 0.99,  # μ, the Kaczmarz-style decay of the previous step (0: MinSR)
          # The step lr·φ is scaled down to squared norm <= this (over all parameters).
          'norm_constraint': 1.0e-3,
          # Walkers per device whose ∇log|ψ| are computed at once; 0: all at once.
          'chunk_size': 0,
        },
      },
      'pretrain': {
        'method': 'hf',
        'iterations': 1000,  # the most: with tolerance > 0 pretraining may stop sooner
        # Convergence: after each `window` iterations, pretraining stops once the mean
        # orbital MSE of the last `window` is less than `tolerance` (relative) below that
        # of the `window` before. 0: always `iterations` (the reference).
        'tolerance': 0.0,
        'window': 100,
        # PySCF basis name. With system.pyscf_mol, the molecule's own basis (when it is
        # one name) replaces it, as in the reference.
        'basis': 'ccpvdz',
        'hf_method': 'auto',  # auto (RHF closed / UHF open shell) | rhf | uhf | rohf
        'scf_fraction': 1.0,  # fraction of walker moves that sample HF, not the network
        'lr': 3.0e-4,
        'excitation_type': 'ordered',  # the reference's, excited states only; this value only
      },
      'log': {
        # Iterations between rows of train_stats.csv (and updates of its progress line).
        'stats_frequency': 1,
        'save_frequency': 10.0,  # minutes
        'keep_checkpoints': 3,  # newest periodic checkpoints kept (plus the final one)
        'save_path': '',
        'restore_path': '',
        # Warm start from another geometry: a run folder (its newest ckpt_*.pkl) or one
        # ckpt_*.pkl file of a run of the same elements in the same order, electrons and
        # network. A NEW run (no checkpoint of its own in save_path; its own always take
        # priority) takes the parameters and MCMC width from it, moves each walker's
        # electrons with their nearest nucleus, re-equilibrates them for mcmc.burn_in
        # sweeps and trains from step 0 without pretraining. Not with log.restore_path.
        'init_from': '',
        # With init_from: True takes the checkpoint's optimizer state (KFAC statistics,
        # Adam moments, the learning-rate schedule's step) when the optimizer is the same.
        'init_optimizer_state': False,
        # Written by the run, not an input (a value given is replaced): the checkpoint a
        # warm-started run began from, or the training checkpoint an inference run
        # evaluates (path, its step, the source's system.name), kept when the run is
        # continued; path '' for a training run that did not start from init_from.
        'started_from': dict(NOT_STARTED_FROM),
        # The reference's, marked not functional there; accepted at False only.
        'walkers': False,
        'local_energies': False,
        'features': False,
      },
      'distributed': {
        # Several processes (hosts) on JAX's distributed runtime. Explicit: the first
        # three keys. Else, with detect: Open MPI (mpirun -np N, N > 1) and a SLURM job
        # step started by srun with several tasks (SLURM_STEP_NUM_TASKS > 1; its task
        # count and rank are used, not the job's SLURM_NTASKS). A SLURM job with several
        # tasks whose process was not started by srun (salloc -n 4, an sbatch script)
        # runs as one process and prints a note. Else a single process.
        'coordinator_address': '',  # host:port of process 0
        'num_processes': 0,
        'process_id': -1,
        'detect': True,
        # Seconds each process waits for all the others to connect before it stops with
        # an error (a process that was never started would otherwise be waited for).
        'initialization_timeout': 300,
      },
      'debug': {
        # False: a new seed per run, drawn from the clock and printed. True: use debug.seed,
        # so that two runs on the same machine give identical train_stats.csv.
        'deterministic': False,
        'seed': 0,
        # True: the first iteration whose energy, parameters or optimizer state are not
        # finite stops the run with an error (its state is rolled back and saved first).
        'check_nan': False,
        'float64': False,
        # Minutes without a finished step (pretraining, burn-in or training) after which
        # the run counts as stuck: it prints the stage and exits with status 3. Raised to
        # 10x the slowest step seen so far; compilation does not count; 0: off.
        'stall_minutes': 15.0,
        # The ferminet command adds config.CPU_XLA_FLAGS to XLA_FLAGS before JAX starts
        # (only flags XLA_FLAGS does not set already; they affect CPU compilation only).
        'cpu_xla_flags': True,
        # JAX's persistent compilation cache, so a second launch of a similar run skips
        # most compilation: 'auto' is $XDG_CACHE_HOME/ferminet/jax (else
        # ~/.cache/ferminet/jax), or a folder; '' off. Set by the ferminet command before
        # anything compiles; a JAX_COMPILATION_CACHE_DIR in the environment wins (JAX's own
        # variable; empty: off). Entries are evicted oldest first above
        # COMPILATION_CACHE_MAX_BYTES. Not in the reference (it compiles at every launch).
        'compilation_cache': 'auto',
      },
    }
  )
  cfg.lock()
  return cfg


@dataclasses.dataclass(frozen=True)
class ReferenceOnly:
  """A key of the reference's config that ferminet accepts only at ``allowed`` values.

  Attributes:
    key: dotted key, e.g. 'system.use_pp'.
    allowed: the accepted values; the first is the default (the reference's).
    needs: what another value needs: a capability ferminet lacks (``ignored`` False),
      or why it would change nothing (``ignored`` True: the reference ignores it too).
    ignored: see ``needs``.
  """

  key: str
  allowed: tuple
  needs: str
  ignored: bool = False

  def error(self, value: Any) -> errors.ConfigError:
    """The one-line error for ``value``."""
    if self.ignored:
      return errors.ConfigError(
        f'{self.key} = {value!r} would have no effect: {self.needs}; leave {self.key} at '
        f'{self.allowed[0]!r}'
      )
    return errors.ConfigError(
      f'{self.key} = {value!r} needs {self.needs}, which ferminet does not implement yet; '
      f'leave {self.key} at {self.allowed[0]!r} (the default)'
    )


_EXCITED = 'excited states'
_NO_HMC = 'the reference does not use its HMC options either (it samples with Metropolis moves)'
_LOG_NOT_FUNCTIONAL = 'the reference marks this logging option as not functional'
# The one list of the reference's keys ferminet accepts only at their default (or at the
# values listed). check() reads it; ferminet's own keys are checked there, not here.
REFERENCE_ONLY = tuple(
  ReferenceOnly(*entry)
  for entry in (
    ('system.type', (SystemType.MOLECULE.value,), 'system types other than molecules'),
    ('system.ndim', (3,), 'systems in other than three dimensions'),
    ('system.states', (0,), _EXCITED),
    ('system.make_local_energy_fn', ('',), 'custom Hamiltonians (e.g. periodic systems)'),
    ('system.make_local_energy_kwargs', ({},), 'custom Hamiltonians (e.g. periodic systems)'),
    ('optim.objective', ('vmc',), "objectives other than 'vmc' (wqmc, vmc_overlap)"),
    ('optim.vmc_weight', (0.0,), "Wasserstein QMC (optim.objective 'wqmc')"),
    ('optim.overlap.weights', (None,), f"{_EXCITED} (optim.objective 'vmc_overlap')"),
    ('optim.overlap.penalty', (1.0,), f"{_EXCITED} (optim.objective 'vmc_overlap')"),
    ('pretrain.excitation_type', ('ordered',), f'{_EXCITED} (their pretraining)'),
    ('mcmc.scale_by_nuclear_distance', (False,), 'MCMC moves scaled by the nuclear distance'),
    ('mcmc.blocks', (1,), 'MCMC moves of blocks of electrons'),
    ('network.complex', (False,), 'complex-valued wavefunctions'),
    ('network.ferminet.schnet_electron_electron_convolutions', ((),), 'SchNet convolutions'),
    ('network.ferminet.electron_nuclear_aux_dims', ((),), 'an electron-nuclear stream'),
    ('network.ferminet.nuclear_embedding_dim', (0,), 'SchNet convolutions'),
    ('network.ferminet.schnet_electron_nuclear_convolutions', ((),), 'SchNet convolutions'),
    ('network.make_feature_layer_fn', ('',), 'custom feature layers'),
    ('network.make_feature_layer_kwargs', ({},), 'custom feature layers'),
    ('network.make_envelope_fn', ('',), 'custom envelopes'),
    ('network.make_envelope_kwargs', ({},), 'custom envelopes'),
    # Ignored by the reference too:
    ('optim.kfac.momentum_type', ('regular',), 'the reference does not pass it to kfac-jax', True),
    ('optim.kfac.mean_center', (True,), 'the reference does not pass it to kfac-jax', True),
    (
      'optim.kfac.min_damping',
      (1.0e-4,),
      'kfac-jax applies it only with adaptive damping, which ferminet (like the reference) '
      'does not use; the damping is optim.kfac.damping throughout',
      True,
    ),
    ('mcmc.use_hmc', (False,), _NO_HMC, True),
    ('mcmc.num_leapfrog_steps', (10,), _NO_HMC, True),
    ('mcmc.init_means', ((),), "the reference's JAX code does not implement it", True),
    ('log.walkers', (False,), _LOG_NOT_FUNCTIONAL, True),
    ('log.local_energies', (False,), _LOG_NOT_FUNCTIONAL, True),
    ('log.features', (False,), _LOG_NOT_FUNCTIONAL, True),
  )
)


# Defaults that differ from DeepMind FermiNet's on purpose: key -> the reference's default.
# The ferminet command prints the ones a run uses (README, "Reference config files").
REFERENCE_DEFAULTS = {
  'optim.laplacian': 'default',  # its exact Hessian loop; our forward Laplacian is faster
  'optim.max_vmap_batch_size': 0,  # all walkers at once; -1 chunks for the CPU caches
  'mcmc.adapt_frequency': 100,  # width adapted every 100 iterations; here every one
}


def differing_defaults(cfg: ml_collections.ConfigDict) -> list[str]:
  """``key=value (reference: value)`` for each REFERENCE_DEFAULTS key left at our default."""
  ours = default()
  return [
    f'{key}={get_key(cfg, key)!r} (reference: {theirs!r})'
    for key, theirs in REFERENCE_DEFAULTS.items()
    if _plain(get_key(cfg, key)) == _plain(get_key(ours, key))
  ]


def _plain(value: Any) -> Any:
  """A config value as plain Python for comparison: dicts for ConfigDicts, tuples for lists."""
  if isinstance(value, ml_collections.ConfigDict):
    value = value.to_dict()
  if isinstance(value, dict):
    return {k: _plain(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return tuple(_plain(v) for v in value)
  return value


def get_key(cfg: ml_collections.ConfigDict, key: str) -> Any:
  """The value at a dotted key, e.g. get_key(cfg, 'optim.lr.rate')."""
  value = cfg
  for part in key.split('.'):
    value = value[part]
  return value


def _check_reference_only(cfg: ml_collections.ConfigDict) -> None:
  for entry in REFERENCE_ONLY:
    value = _plain(get_key(cfg, entry.key))
    if not any(_same(value, allowed) for allowed in entry.allowed):
      raise entry.error(value)


def _same(value: Any, allowed: Any) -> bool:
  if isinstance(value, bool) or isinstance(allowed, bool):
    return value is allowed  # True is not the 1 of a count, nor False its 0
  return value == allowed


def flat_keys(cfg: ml_collections.ConfigDict, prefix: str = '') -> Iterator[str]:
  """All dotted leaf keys of a config, e.g. 'optim.lr.rate'."""
  for key, value in cfg.items():
    path = f'{prefix}{key}'
    if isinstance(value, ml_collections.ConfigDict):
      yield from flat_keys(value, path + '.')
    else:
      yield path


def unknown_key_error(key: str, cfg: ml_collections.ConfigDict | None = None) -> errors.ConfigError:
  """A ConfigError for an unknown dotted key that names the nearest valid key."""
  keys = list(flat_keys(cfg if cfg is not None else default()))
  close = difflib.get_close_matches(key, keys, n=1, cutoff=0.5)
  if not close:  # compare the last component within the same section
    section, _, leaf = key.rpartition('.')
    same = [k for k in keys if k.rpartition('.')[0] == section]
    leafs = difflib.get_close_matches(leaf, [k.rpartition('.')[2] for k in same], n=1)
    close = [f'{section}.{leafs[0]}' if section else leafs[0]] if leafs else []
  hint = f'; did you mean {close[0]!r}?' if close else ''
  return errors.ConfigError(f'unknown config key {key!r}{hint}')


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
  if value not in choices:
    raise errors.ConfigError(
      f'unknown {name} {value!r}: choose one of {", ".join(choices)} (--config.{name})'
    )


def build_system(cfg: ml_collections.ConfigDict) -> system_lib.System:
  """The physical system the ``cfg.system`` fields describe."""
  s = cfg.system
  electrons = tuple(s.electrons) if s.electrons else None
  # The reference's hcl.py sets system.molecule and builds system.pyscf_mol from it; the
  # reference then takes the Mole's nuclei. So do we, saying so if they differ.
  from_mole = s.pyscf_mol is not None and bool(s.molecule)
  if from_mole:
    _check_same_nuclei(system_lib.from_pyscf(s.pyscf_mol).atoms, s.molecule, s.units)
  given = [
    f'system.{key} ({value!r})'
    for key, value in (
      ('atom', s.atom),
      ('molecule_name', s.molecule_name),
      ('xyz', s.xyz),
      ('pyscf_mol', 'a pyscf Mole' if s.pyscf_mol is not None else ''),
      ('molecule', f'{len(s.molecule)} atoms' if s.molecule and not from_mole else ''),
    )
    if value
  ]
  if len(given) > 1:
    raise errors.ConfigError(
      f'the system is given twice: {" and ".join(given)}; set only one (a config file '
      'may set one already, e.g. configs/atom.py sets system.atom: clear it with '
      "--config.system.atom '' or use the config file made for the other)"
    )
  if s.delta_charge and not s.atom:
    raise errors.ConfigError(
      f'system.delta_charge ({s.delta_charge}) changes the nuclear charge of system.atom '
      '(configs/atom.py) and applies to nothing else'
    )
  other = s.atom or s.xyz or s.pyscf_mol is not None  # (cleared once resolved)
  for key, unset in (('radius', None), ('natoms', None), ('bond_length_multiple', 1.0)):
    if other and s[key] != unset:
      raise errors.ConfigError(
        f'system.{key} is a parameter of a named structure (system.molecule_name), '
        'not of system.atom, system.xyz or system.pyscf_mol'
      )
  spin = s.spin_polarisation
  if s.atom:
    nuclear_charge = system_lib.Atom(s.atom).charge + s.delta_charge
    atoms = [system_lib.Atom(s.atom, (0.0, 0.0, 0.0), charge=nuclear_charge)]
  elif s.molecule_name:
    atoms = molecules.build(s.molecule_name, **_structure_parameters(s))
    if spin is None and not s.charge and not electrons:
      spin = molecules.spin_polarisation(s.molecule_name)  # e.g. O2: triplet
  elif s.xyz:
    atoms, _ = system_lib.read_xyz(s.xyz, s.units)  # None: the file's units, else angstrom
  elif s.pyscf_mol is not None:
    mol = system_lib.from_pyscf(s.pyscf_mol)
    atoms, electrons = list(mol.atoms), electrons or mol.electrons
    if mol.pp_type:  # the Mole's ECP: its electrons are the valence ones
      pp = _pseudopotentials(s, (mol.pp_type, mol.pp_symbols))
      return _with_pseudopotentials(atoms, s.charge or round(mol.charge), spin, electrons, *pp)
  elif s.molecule:
    atoms = [
      a if isinstance(a, system_lib.Atom) else system_lib.Atom(*a, units=s.units or 'bohr')
      for a in s.molecule
    ]
  else:
    raise errors.ConfigError(
      'no system given: set --config.system.atom (e.g. Li), '
      '--config.system.molecule_name, --config.system.xyz or system.molecule'
    )
  if s.use_pp:
    return _with_pseudopotentials(atoms, s.charge, spin, electrons, *_pseudopotentials(s))
  return system_lib.make_system(atoms, s.charge, spin, electrons)


def _check_same_nuclei(atoms: Sequence[system_lib.Atom], molecule: Any, units: str | None) -> None:
  """Warns if ``molecule`` (system.molecule) differs from ``atoms`` (the Mole's), which win."""
  molecule = [
    a if isinstance(a, system_lib.Atom) else system_lib.Atom(*a, units=units or 'bohr')
    for a in molecule
  ]
  mine = np.array([a.coords for a in molecule]).reshape(-1, 3)
  theirs = np.array([a.coords for a in atoms]).reshape(-1, 3)
  if [a.symbol for a in molecule] == [a.symbol for a in atoms] and np.allclose(
    mine, theirs, atol=1e-6, rtol=0
  ):
    return
  why = ''
  if mine.shape == theirs.shape and np.allclose(
    theirs, mine * system_lib.BOHR_PER_ANGSTROM, atol=1e-5, rtol=0
  ):
    why = (
      ': the Mole read the bohr coordinates of system.molecule as angstrom (mol.unit '
      "'angstrom'), as the reference's hcl.py does"
    )
  warnings.warn(
    f"system.pyscf_mol and system.molecule differ{why}; the Mole's nuclei are used, as in "
    f'the reference (bohr: {theirs.round(6).tolist()}, system.molecule {mine.round(6).tolist()})',
    stacklevel=3,
  )


def _pseudopotentials(
  s: ml_collections.ConfigDict, from_mole: tuple[str, tuple[str, ...]] | None = None
) -> tuple[str, tuple[str, ...]]:
  """(type, symbols) of the pseudopotentials: ``system.pp``'s, or a Mole's ECP.

  A Mole's ECP agrees with ``system.pp`` if ``system.use_pp`` is set too (as in the
  reference's hcl.py); otherwise it is an error naming both.
  """
  symbols = tuple(s.pp.symbols or ())
  if from_mole is None:
    if not symbols:
      raise errors.ConfigError(
        'system.use_pp needs system.pp.symbols, the elements that get pseudopotentials, '
        'e.g. --config.system.pp.symbols="[\'Cl\']"'
      )
    return str(s.pp.type), symbols
  if s.use_pp and (s.pp.type != from_mole[0] or (symbols and set(symbols) != set(from_mole[1]))):
    raise errors.ConfigError(
      f'system.pyscf_mol has the {from_mole[0]!r} pseudopotential on {", ".join(from_mole[1])}, '
      f'but system.pp asks for {s.pp.type!r} on {", ".join(symbols) or "no element"}'
    )
  return from_mole


def _with_pseudopotentials(
  atoms: list[system_lib.Atom],
  charge: int,
  spin: int | None,
  electrons: tuple[int, int] | None,
  pp_type: str,
  symbols: tuple[str, ...],
) -> system_lib.System:
  """The system with pseudopotentials; ``electrons`` may count all electrons or the
  valence ones (the total charge tells which; a resolved config holds the latter)."""
  cores = sum(
    system_lib.core_electrons(pp_type, a.symbol) for a in atoms if a.symbol in set(symbols)
  )
  if electrons and sum(electrons) == sum(a.atomic_number for a in atoms) - charge - cores:
    electrons = (electrons[0] + cores // 2, electrons[1] + cores // 2)  # the valence ones
  full = system_lib.make_system(atoms, charge, spin, electrons)
  return system_lib.with_pseudopotentials(full, pp_type, symbols, valence=False)


def _structure_parameters(s: ml_collections.ConfigDict) -> dict:
  """The keyword arguments of molecules.build and molecules.label for ``cfg.system``."""
  length = s.bond_length
  if s.radius is not None:
    if molecules.canonical(s.molecule_name) != 'H4':
      raise errors.ConfigError(
        f'system.radius is the radius of H4 (configs/h4.py), not a parameter of {s.molecule_name!r}'
      )
    if length is not None:
      raise errors.ConfigError(
        'H4 is given two radii: system.radius and system.bond_length; set only one '
        '(configs/h4.py sets system.radius)'
      )
    length = s.radius
  return {
    'bond_length': length,
    'angle': s.angle,
    'units': s.units or 'bohr',
    'bond_length_multiple': s.bond_length_multiple,
    'natoms': s.natoms,
  }


def check(cfg: ml_collections.ConfigDict) -> None:
  """Checks values that do not depend on the system; raises ConfigError."""
  _check_reference_only(cfg)
  _check_choice('optim.optimizer', cfg.optim.optimizer, OPTIMIZERS)
  _check_choice('optim.laplacian', cfg.optim.laplacian, (*LAPLACIANS, *LAPLACIAN_ALIASES))
  _check_choice('network.envelope_type', cfg.network.envelope_type, ENVELOPES)
  _check_choice('network.network_type', cfg.network.network_type, NETWORK_TYPES)
  _check_choice('network.jastrow', cfg.network.jastrow, JASTROWS)
  _check_choice('pretrain.hf_method', cfg.pretrain.hf_method, HF_METHODS)
  _check_choice('pretrain.method', cfg.pretrain.method, ('hf',))
  if not cfg.pretrain.basis:
    raise errors.ConfigError(
      'pretrain.basis is not set (e.g. a PySCF Mole with a basis per element gives None); '
      'set it, e.g. --config.pretrain.basis ccpvdz'
    )
  if cfg.log.stats_frequency < 1:
    raise errors.ConfigError(f'log.stats_frequency must be >= 1, got {cfg.log.stats_frequency}')
  setter = cfg.system.set_molecule
  if not (setter is None or callable(setter) or isinstance(setter, str)):
    raise errors.ConfigError(
      f'system.set_molecule must be a function cfg -> cfg, got {type(setter).__name__}'
    )
  if cfg.batch_size <= 0:
    raise errors.ConfigError(f'batch_size must be > 0, got {cfg.batch_size}')
  for key in ('optim.iterations', 'pretrain.iterations', 'mcmc.burn_in'):
    if cfg[key.split('.')[0]][key.split('.')[1]] < 0:
      raise errors.ConfigError(f'{key} must be >= 0')
  positive = {
    'optim.lr.delay': cfg.optim.lr.delay,
    'optim.lr.rate': cfg.optim.lr.rate,
    'mcmc.init_width': cfg.mcmc.init_width,
    'mcmc.move_width': cfg.mcmc.move_width,
    'log.save_frequency': cfg.log.save_frequency,
    'pretrain.lr': cfg.pretrain.lr,
  }
  for key, value in positive.items():
    if not value > 0:
      raise errors.ConfigError(f'{key} must be > 0, got {value}')
  if not 0 < cfg.mcmc.target_acceptance < 1:
    raise errors.ConfigError('mcmc.target_acceptance must be between 0 and 1 (default 0.5)')
  if not cfg.pretrain.tolerance >= 0:
    raise errors.ConfigError(f'pretrain.tolerance must be >= 0, got {cfg.pretrain.tolerance}')
  if cfg.pretrain.window < 1:
    raise errors.ConfigError(f'pretrain.window must be >= 1, got {cfg.pretrain.window}')
  if not 0 <= cfg.pretrain.scf_fraction <= 1:
    raise errors.ConfigError('pretrain.scf_fraction must be between 0 and 1')
  if cfg.mcmc.adapt_frequency <= 0:
    raise errors.ConfigError('mcmc.adapt_frequency must be >= 1')
  if not cfg.optim.spin_energy >= 0:
    raise errors.ConfigError(
      f'optim.spin_energy must be >= 0 (a penalty on S², in hartree), got {cfg.optim.spin_energy}'
    )
  if cfg.optim.forward_laplacian_sparsity < -1:
    raise errors.ConfigError('optim.forward_laplacian_sparsity must be >= 0, or -1 (auto)')
  if cfg.optim.max_vmap_batch_size < -1:
    raise errors.ConfigError(
      'optim.max_vmap_batch_size must be >= 0 (0: no chunking), or -1 (auto)'
    )
  if cfg.optim.max_nonfinite_steps <= 0:
    raise errors.ConfigError('optim.max_nonfinite_steps must be >= 1')
  if cfg.debug.stall_minutes < 0:
    raise errors.ConfigError('debug.stall_minutes must be >= 0 (0: no stall watchdog)')
  if cfg.log.keep_checkpoints <= 0:
    raise errors.ConfigError('log.keep_checkpoints must be >= 1')
  if cfg.system.units is not None:
    system_lib.unit_scale(cfg.system.units)  # raises on anything but bohr/angstrom
  _check_paths(cfg.log)
  _check_init_from(cfg)
  d = cfg.distributed
  if d.coordinator_address and not (
    ':' in d.coordinator_address and d.num_processes >= 1 and 0 <= d.process_id < d.num_processes
  ):
    raise errors.ConfigError(
      'distributed.coordinator_address needs host:port, distributed.num_processes >= 1 and '
      '0 <= distributed.process_id < num_processes'
    )
  if not d.initialization_timeout > 0:
    raise errors.ConfigError(
      f'distributed.initialization_timeout must be > 0 seconds, got {d.initialization_timeout}'
    )
  _check_kfac(cfg.optim.kfac)
  _check_spring(cfg.optim.spring)
  if cfg.mcmc.steps <= 0:
    raise errors.ConfigError('mcmc.steps must be >= 1')
  if cfg.network.determinants <= 0:
    raise errors.ConfigError('network.determinants must be >= 1')
  dims = cfg.network.ferminet.hidden_dims
  if not dims or any(len(d) != 2 or min(d) <= 0 for d in dims):
    raise errors.ConfigError(
      'network.ferminet.hidden_dims must be a non-empty tuple of (one, two) '
      'positive widths, e.g. "((256, 32), (256, 32))"'
    )
  _check_network(cfg.network)


def jastrow_of(network_type: str, jastrow: str) -> str:
  """``network.jastrow`` with 'default' resolved: none for the FermiNet, simple_ee for the
  Psiformer (as the reference)."""
  if jastrow == 'default':
    return 'simple_ee' if network_type == 'psiformer' else 'none'
  return jastrow


def describe_network(net: Any) -> str:
  """One line naming the ansatz and its options, from a ``network`` config section
  (a ConfigDict, or the dict of a run's config.json): for the log, ``--dry_run``, the
  summary and ``ferminet-analyze``."""
  network_type = net.get('network_type', 'ferminet')
  if network_type == 'psiformer':
    p = net['psiformer']
    body = (
      f'psiformer ({p["num_layers"]} layers, {p["num_heads"]} heads of {p["heads_dim"]}, '
      f'MLP {tuple(p["mlp_hidden_dims"])}{", layer norm" if p["use_layer_norm"] else ""})'
    )
    full_det = True
  else:
    f = net['ferminet']
    extra = [name for name in ('use_last_layer', 'separate_spin_channels') if f.get(name)]
    layers = ', '.join(f'({a}, {b})' for a, b in f['hidden_dims'])
    body = f'ferminet (layers {layers}{"".join(", " + e for e in extra)})'
    full_det = bool(net['full_det'])
  jastrow = jastrow_of(network_type, net['jastrow'])
  envelope = net['envelope_type']
  if envelope == 'bottleneck':
    envelope += f' ({net["num_envelopes"]})'
  return (
    f'{body}; {net["determinants"]} determinants{" (full)" if full_det else ""}; '
    f'envelope {envelope}; jastrow {jastrow}'
    + ('; rescaled inputs' if net.get('rescale_inputs') else '')
  )


def _translate_envelope_fn(cfg: ml_collections.ConfigDict) -> None:
  """A reference ``network.make_envelope_fn`` of REFERENCE_ENVELOPE_FNS as our
  ``network.envelope_type`` (other values stay, and are refused by check())."""
  net = cfg.network
  kind = REFERENCE_ENVELOPE_FNS.get(net.make_envelope_fn)
  if kind is None:
    return
  kwargs = dict(net.make_envelope_kwargs or {})
  unknown = sorted(set(kwargs) - ({'nenv'} if kind == 'bottleneck' else set()))
  if unknown:
    raise errors.ConfigError(
      f'network.make_envelope_kwargs {unknown} are not supported with '
      f'{net.make_envelope_fn} (it becomes network.envelope_type {kind!r}'
      + (", whose size is 'nenv'" if kind == 'bottleneck' else '')
      + ')'
    )
  with cfg.unlocked():
    net.envelope_type = kind
    if kind == 'bottleneck':
      net.num_envelopes = int(kwargs.get('nenv', 16))  # the reference's default nenv
    net.make_envelope_fn = ''
    net.make_envelope_kwargs = {}


def _check_network(net: ml_collections.ConfigDict) -> None:
  """Combinations of network settings that cannot be built."""
  if net.num_envelopes < 1:
    raise errors.ConfigError(f'network.num_envelopes must be >= 1, got {net.num_envelopes}')
  if net.envelope_type == 'sto' and net.bias_orbitals:
    raise errors.ConfigError(
      "network.envelope_type 'sto' multiplies the features before the orbital layer: "
      'it cannot be combined with network.bias_orbitals (as in the reference)'
    )
  if net.network_type == 'psiformer':
    p = net.psiformer
    if net.envelope_type == 'sto':
      raise errors.ConfigError("the Psiformer takes pre-determinant envelopes, not 'sto'")
    sizes = (p.num_layers, p.num_heads, p.heads_dim, *p.mlp_hidden_dims)
    if min(sizes) < 1:
      raise errors.ConfigError(
        'network.psiformer: num_layers, num_heads, heads_dim and mlp_hidden_dims must be '
        f'>= 1, got {p.num_layers}, {p.num_heads}, {p.heads_dim}, {tuple(p.mlp_hidden_dims)}'
      )


def _check_kfac(k: ml_collections.ConfigDict) -> None:
  """KFAC settings kfac-jax would reject with a traceback, or silently ignore."""
  for key in ('invert_every', 'cov_update_every'):
    if k[key] < 1:
      raise errors.ConfigError(f'optim.kfac.{key} must be >= 1 (iterations), got {k[key]}')
  if k.cov_update_every > k.invert_every:
    raise errors.ConfigError(
      f'optim.kfac.cov_update_every ({k.cov_update_every}) must not exceed '
      f'optim.kfac.invert_every ({k.invert_every}): the curvature is inverted at most as '
      'often as it is updated'
    )
  if not k.damping > 0:
    raise errors.ConfigError(f'optim.kfac.damping must be > 0, got {k.damping}')
  if not 0 < k.cov_ema_decay <= 1:
    raise errors.ConfigError(f'optim.kfac.cov_ema_decay must be in (0, 1], got {k.cov_ema_decay}')
  if not k.norm_constraint > 0:
    raise errors.ConfigError(f'optim.kfac.norm_constraint must be > 0, got {k.norm_constraint}')
  for key in ('momentum', 'l2_reg'):
    if k[key] < 0:
      raise errors.ConfigError(f'optim.kfac.{key} must be >= 0, got {k[key]}')


def _check_spring(k: ml_collections.ConfigDict) -> None:
  """SPRING settings whose solve would fail or diverge."""
  if not k.damping > 0:
    raise errors.ConfigError(f'optim.spring.damping must be > 0, got {k.damping}')
  if not 0 <= k.momentum < 1:
    raise errors.ConfigError(f'optim.spring.momentum must be in [0, 1), got {k.momentum}')
  if not k.norm_constraint > 0:
    raise errors.ConfigError(f'optim.spring.norm_constraint must be > 0, got {k.norm_constraint}')
  if k.chunk_size < 0:
    raise errors.ConfigError(
      f'optim.spring.chunk_size must be >= 0 (0: all walkers at once), got {k.chunk_size}'
    )


def _check_paths(log: ml_collections.ConfigDict) -> None:
  """save_path must be (or be creatable as) a writable folder; restore_path must hold a
  checkpoint. Creates nothing, so that a dry run leaves no trace."""
  if log.save_path:
    path = pathlib.Path(log.save_path)
    existing = next(p for p in (path, *path.parents) if p.exists() or p == p.parent)
    if existing == path and not path.is_dir():
      raise errors.ConfigError(f'log.save_path {log.save_path!r} is a file, not a folder')
    if not (existing.is_dir() and os.access(existing, os.W_OK | os.X_OK)):
      raise errors.ConfigError(
        f'log.save_path {log.save_path!r} cannot be created: {str(existing)!r} is not a '
        'writable folder; choose another log.save_path'
      )
  if log.restore_path:
    path = pathlib.Path(log.restore_path)
    if not path.exists():
      raise errors.ConfigError(f'log.restore_path {log.restore_path!r} does not exist')
    if (
      path.is_dir()
      and not checkpoint.list_checkpoints(path)
      and not reference_checkpoint.list_checkpoints(path)
    ):
      raise errors.ConfigError(
        f'log.restore_path {log.restore_path!r} holds no checkpoint (ckpt_*.pkl, or '
        "DeepMind FermiNet's qmcjax_ckpt_*.npz)"
      )


def _check_init_from(cfg: ml_collections.ConfigDict) -> None:
  """log.init_from: an existing folder with a ckpt_*.pkl or one such file, for training;
  not checked once log.save_path holds checkpoints (the run continues those)."""
  where = cfg.log.init_from
  if not where:
    return
  if cfg.log.restore_path:
    raise errors.ConfigError(
      f'log.init_from ({where!r}) and log.restore_path ({cfg.log.restore_path!r}) are both '
      'set: log.restore_path continues a checkpoint of the same system, log.init_from starts '
      'a new run at another geometry from one; set only one'
    )
  if cfg.optim.optimizer == 'none':
    raise errors.ConfigError(
      f'log.init_from ({where!r}) starts training at a new geometry; an inference run '
      '(optim.optimizer none) evaluates a run of its own geometry: use log.restore_path'
    )
  if cfg.log.save_path and checkpoint.list_checkpoints(pathlib.Path(cfg.log.save_path)):
    return  # the run continues its own checkpoints; init_from is not read again
  path = pathlib.Path(where)
  if not path.exists():
    raise errors.ConfigError(f'log.init_from {where!r} does not exist')
  if path.is_file() and checkpoint.parse_name(path) is None:
    raise errors.ConfigError(
      f'log.init_from {where!r} is not a ferminet training checkpoint (ckpt_<step>.pkl or '
      'ckpt_<step>_final.pkl) nor a run folder'
    )
  if path.is_dir() and not checkpoint.list_checkpoints(path):
    raise errors.ConfigError(f'log.init_from {where!r} holds no ferminet checkpoint (ckpt_*.pkl)')


def _atom_label(symbol: str, system: system_lib.System) -> str:
  """'Li', 'O+', 'C2-'; with a shifted nuclear charge (delta_charge) also 'Z=3.1', so that
  no reference energy of the integer atom is matched."""
  if not symbol:
    return ''
  atom = system.atoms[0]
  charge = atom.atomic_number - sum(system.cores) - system.n_electrons
  suffix = {0: '', 1: '+', -1: '-'}.get(charge, f'{abs(charge)}{"+" if charge > 0 else "-"}')
  nuclear = '' if atom.charge == atom.atomic_number else f' Z={atom.charge:.6g}'
  return atom.symbol + suffix + nuclear


def apply_set_molecule(cfg: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Calls ``system.set_molecule`` (a function cfg -> cfg) if it is set, as the reference does.

  The function's name replaces it (so the config stays serialisable and a second
  call does nothing). When it set ``system.molecule`` or ``system.pyscf_mol``, those
  define the nuclei: ``system.atom`` and ``system.molecule_name``, which reference
  files use as the function's inputs, are cleared.

  Raises:
    errors.ConfigError: the function failed (its error in one line).
  """
  setter = cfg.system.set_molecule
  if not callable(setter):
    return cfg
  name = getattr(setter, '__name__', type(setter).__name__)
  try:
    out = setter(cfg)
  except errors.FermiNetError:
    raise
  except Exception as e:  # noqa: BLE001 - any failure of a config file's function
    message = ' '.join(str(e).split())
    raise errors.ConfigError(
      f'system.set_molecule ({name}) failed: {type(e).__name__}: {message}'
    ) from e
  if out is not None:  # the reference's functions return the config; None: edited in place
    if not isinstance(out, ml_collections.ConfigDict):
      raise errors.ConfigError(
        f'system.set_molecule ({name}) returned {type(out).__name__}, not the config'
      )
    cfg = out
  with cfg.ignore_type():
    cfg.system.set_molecule = name
  if cfg.system.molecule or cfg.system.pyscf_mol is not None:
    with cfg.unlocked():
      cfg.system.atom = ''
      cfg.system.molecule_name = ''
  return cfg


def resolve(cfg: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Calls ``system.set_molecule``, checks the config, derives the system and locks it.

  Sets ``cfg.system.molecule`` (list of :class:`system.Atom`, bohr) and
  ``cfg.system.electrons`` ((n_alpha, n_beta)), and replaces a Laplacian alias
  (``optim.laplacian`` 'default') by the method it names. Idempotent.

  Raises:
    errors.FermiNetError: on any inconsistency, with a one-line message.
  """
  cfg = apply_set_molecule(cfg)
  _translate_envelope_fn(cfg)
  check(cfg)
  system = build_system(cfg)
  mol = cfg.system.pyscf_mol
  with cfg.unlocked():
    if system.pp_type:  # recorded, so that the resolved config rebuilds the same system
      cfg.system.use_pp = True
      cfg.system.pp.type = system.pp_type
      cfg.system.pp.symbols = tuple(system.pp_symbols)
      cfg.system.charge = round(system.charge)
    basis = _basis_of(mol, system) if mol is not None else None
    if basis is not None:
      cfg.pretrain.basis, pp_basis = basis
      if pp_basis:
        cfg.system.pp.basis = pp_basis
    elif mol is not None:
      warnings.warn(
        f'system.pyscf_mol has a per-element basis ({mol.basis!r}); Hartree-Fock '
        f'pretraining uses pretrain.basis {cfg.pretrain.basis!r} for every atom instead',
        stacklevel=2,
      )
    if not cfg.system.name and cfg.system.molecule_name:
      s = cfg.system
      cfg.system.name = molecules.label(s.molecule_name, **_structure_parameters(s))
    elif not cfg.system.name:
      cfg.system.name = _atom_label(cfg.system.atom, system)
    if system.pp_type and cfg.system.name and system.pp_type not in cfg.system.name:
      cfg.system.name += f' {system.pp_type}'  # e.g. 'Mg ccecp': not the all-electron atom
    cfg.optim.laplacian = LAPLACIAN_ALIASES.get(cfg.optim.laplacian, cfg.optim.laplacian)
    cfg.system.molecule = list(system.atoms)
    cfg.system.electrons = tuple(system.electrons)
    # The atoms now define the system; further resolves must not rebuild it
    # from atom/molecule_name (charge and spin are baked into electrons).
    cfg.system.atom = ''
    cfg.system.molecule_name = ''
    cfg.system.xyz = ''
    cfg.system.pyscf_mol = None
    cfg.system.delta_charge = 0.0  # now in the atom's nuclear charge
    cfg.system.units = 'bohr'
  cfg.lock()
  return cfg


def _basis_of(mol: Any, system: system_lib.System) -> tuple[str, str] | None:
  """(basis of the atoms without ECP, basis of those with one) of a Mole, as the reference's
  pretraining uses them: one name for all atoms, or a per-element dict with one name for
  each group; None when the Mole's basis does not fit that (e.g. one basis per element)."""
  basis = mol.basis
  if isinstance(basis, str) and basis.strip():
    return basis, (basis if system.pp_type else '')
  if not isinstance(basis, dict) or not all(isinstance(b, str) for b in basis.values()):
    return None
  names = {True: set(), False: set()}
  for symbol in dict.fromkeys(system.symbols):
    if symbol not in basis:
      return None
    names[symbol in system.pp_symbols].add(basis[symbol])
  if len(names[False]) > 1 or len(names[True]) > 1:
    return None
  pp_basis = next(iter(names[True]), '')
  return next(iter(names[False]), pp_basis), pp_basis


def system_of(cfg: ml_collections.ConfigDict) -> system_lib.System:
  """The System of a resolved config."""
  if not cfg.system.molecule or not cfg.system.electrons:
    raise errors.ConfigError('config is not resolved: call config.resolve(cfg) first')
  system = system_lib.System(tuple(cfg.system.molecule), tuple(cfg.system.electrons))
  if cfg.system.use_pp:
    s = cfg.system
    system = system_lib.with_pseudopotentials(system, s.pp.type, s.pp.symbols, valence=True)
  return system


def apply_cpu_xla_flags(environ: dict[str, str] | None = None) -> list[str]:
  """Appends each of CPU_XLA_FLAGS that XLA_FLAGS does not name yet; returns those added.

  Must run before JAX starts a backend (XLA reads XLA_FLAGS once).
  """
  environ = os.environ if environ is None else environ
  current = environ.get('XLA_FLAGS', '')
  named = {part.split('=')[0] for part in current.split()}
  added = [flag for flag in CPU_XLA_FLAGS if flag.split('=')[0] not in named]
  if added:
    environ['XLA_FLAGS'] = ' '.join([current, *added]).strip()
  return added


def compilation_cache_dir(cfg: ml_collections.ConfigDict, environ=None) -> str | None:
  """The folder of JAX's persistent compilation cache for ``debug.compilation_cache``.

  None: leave JAX as it is (JAX_COMPILATION_CACHE_DIR is set, which JAX reads itself, or
  the key is ''). 'auto' is $XDG_CACHE_HOME/ferminet/jax, else ~/.cache/ferminet/jax.
  """
  environ = os.environ if environ is None else environ
  value = cfg.debug.compilation_cache
  if 'JAX_COMPILATION_CACHE_DIR' in environ or not value:
    return None
  if value == 'auto':
    base = environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
    return os.path.join(base, 'ferminet', 'jax')
  return os.path.expanduser(str(value))
