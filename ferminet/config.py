"""The run configuration: every default in one place, resolution and locking.

Key names follow DeepMind's FermiNet (``cfg.system.molecule``,
``cfg.network.ferminet.hidden_dims``, ``cfg.optim.iterations``, …) so that its
users' config files and command lines work unchanged.

Life of a config: ``default()`` returns a *locked* ConfigDict (a config file can
change values but a misspelled key is an error); a config file's
``get_config()`` edits it; command-line overrides are applied; ``resolve()``
builds the physical system (``system.molecule``, ``system.electrons``) and locks
the result again.
"""

from __future__ import annotations

import difflib
import os
import pathlib
import warnings
from collections.abc import Iterator

import ml_collections
from ml_collections import config_dict

from ferminet import checkpoint, errors, molecules, reference_checkpoint
from ferminet import system as system_lib

OPTIMIZERS = ('kfac', 'adam', 'none')
LAPLACIANS = ('forward', 'folx', 'hessian')
ENVELOPES = ('isotropic', 'diagonal', 'full')
HF_METHODS = ('auto', 'rhf', 'uhf', 'rohf')
# XLA CPU options the ``ferminet`` command adds to XLA_FLAGS (debug.cpu_xla_flags) unless
# XLA_FLAGS already names them. YNNPACK fusions off: jaxlib 0.10's CPU default fuses dots
# through YNNPACK, which made the forward Laplacian ~1.5x slower (see README, Speed).
CPU_XLA_FLAGS = ('--xla_cpu_experimental_ynn_fusion_type=',)


def default() -> ml_collections.ConfigDict:
  """The default config: the only home of default values. Returned locked."""
  cfg = ml_collections.ConfigDict(
    {
      # Total number of walkers over all devices of all processes (hosts).
      'batch_size': 4096,
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
        # bond_length in system.units: diatomics the bond, H4 the circle radius
        # (3.2843 bohr), H10 the spacing (1.8 bohr).
        'bond_length': config_dict.placeholder(float),
        'angle': config_dict.placeholder(float),  # degrees, H4 only (90: square)
        # Units of bond_length and of system.molecule coordinates (default bohr) and of
        # an xyz file without a units= comment (default angstrom, the xyz convention).
        'units': config_dict.placeholder(str),
        'charge': 0,  # total charge in e
        'spin_polarisation': config_dict.placeholder(int),  # n_alpha - n_beta
        'electrons': (),  # (n_alpha, n_beta); derived when empty
      },
      'network': {
        'network_type': 'ferminet',
        'determinants': 16,
        'full_det': True,
        'envelope_type': 'isotropic',  # isotropic | diagonal | full
        'bias_orbitals': False,
        'ferminet': {
          # (one-electron width, two-electron width) per layer.
          'hidden_dims': ((256, 32),) * 4,
          # True: the layers as DeepMind's FermiNet computes them, residual connections
          # (h + tanh(z)) / sqrt(2) and electron self-distance r_ii = 0 in the pair stream
          # (False: h + tanh(z) and r_ii = sqrt(3)). Needed to restore its checkpoints.
          'reference_layers': False,
        },
      },
      'mcmc': {
        'steps': 10,  # Metropolis steps per iteration
        'burn_in': 100,  # iterations of sampling after pretraining
        'init_width': 1.0,  # bohr: spread of initial electrons around atoms
        'move_width': 0.02,  # bohr: initial std of the Gaussian proposal
        'adapt_frequency': 1,  # iterations between width updates (see mcmc.adapt_width)
        'target_acceptance': 0.5,
      },
      'optim': {
        'objective': 'vmc',
        'iterations': 1000000,
        'optimizer': 'kfac',  # kfac | adam | none (inference)
        # forward (written for the FermiNet, fwdlap) | folx (generic forward Laplacian)
        # | hessian (exact loop over 3N Hessian-vector products)
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
        'lr': {'rate': 0.05, 'decay': 1.0, 'delay': 10000.0},
        'clip_local_energy': 5.0,  # in units of the mean absolute deviation
        'clip_median': False,
        'center_at_clip': True,
        'kfac': {
          'invert_every': 1,
          'cov_update_every': 1,
          'damping': 0.001,
          'cov_ema_decay': 0.95,
          'momentum': 0.0,
          # Accepted for reference configs, but only this value: kfac-jax reads it only
          # with adaptive damping, which is not used (here or in the reference).
          'min_damping': 1.0e-4,
          'norm_constraint': 0.001,
          'l2_reg': 0.0,
          'register_only_generic': False,
        },
        'adam': {'b1': 0.9, 'b2': 0.999, 'eps': 1.0e-8, 'eps_root': 0.0},
      },
      'pretrain': {
        'method': 'hf',
        'iterations': 1000,
        # PySCF basis name. With system.pyscf_mol, the molecule's own basis (when it is
        # one name) replaces it, as in the reference.
        'basis': 'ccpvdz',
        'hf_method': 'auto',  # auto (RHF closed / UHF open shell) | rhf | uhf | rohf
        'scf_fraction': 1.0,  # fraction of walker moves that sample HF, not the network
        'lr': 3.0e-4,
      },
      'log': {
        'save_frequency': 10.0,  # minutes
        'keep_checkpoints': 3,  # newest periodic checkpoints kept (plus the final one)
        'save_path': '',
        'restore_path': '',
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
        'float64': False,
        # Minutes without a finished step (pretraining, burn-in or training) after which
        # the run counts as stuck: it prints the stage and exits with status 3. Raised to
        # 10x the slowest step seen so far; compilation does not count; 0: off.
        'stall_minutes': 15.0,
        # The ferminet command adds config.CPU_XLA_FLAGS to XLA_FLAGS before JAX starts
        # (only flags XLA_FLAGS does not set already; they affect CPU compilation only).
        'cpu_xla_flags': True,
      },
    }
  )
  cfg.lock()
  return cfg


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
  given = [
    f'system.{key} ({value!r})'
    for key, value in (
      ('atom', s.atom),
      ('molecule_name', s.molecule_name),
      ('xyz', s.xyz),
      ('pyscf_mol', 'a pyscf Mole' if s.pyscf_mol is not None else ''),
      ('molecule', f'{len(s.molecule)} atoms' if s.molecule else ''),
    )
    if value
  ]
  if len(given) > 1:
    raise errors.ConfigError(
      f'the system is given twice: {" and ".join(given)}; set only one (a config file '
      'may set one already, e.g. configs/atom.py sets system.atom: clear it with '
      "--config.system.atom '' or use the config file made for the other)"
    )
  if s.atom:
    atoms = [system_lib.Atom(s.atom, (0.0, 0.0, 0.0))]
  elif s.molecule_name:
    atoms = molecules.build(s.molecule_name, s.bond_length, s.angle, s.units or 'bohr')
  elif s.xyz:
    atoms, _ = system_lib.read_xyz(s.xyz, s.units)  # None: the file's units, else angstrom
  elif s.pyscf_mol is not None:
    mol = system_lib.from_pyscf(s.pyscf_mol)
    atoms, electrons = list(mol.atoms), electrons or mol.electrons
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
  return system_lib.make_system(atoms, s.charge, s.spin_polarisation, electrons)


def check(cfg: ml_collections.ConfigDict) -> None:
  """Checks values that do not depend on the system; raises ConfigError."""
  _check_choice('optim.optimizer', cfg.optim.optimizer, OPTIMIZERS)
  _check_choice('optim.laplacian', cfg.optim.laplacian, LAPLACIANS)
  _check_choice('network.envelope_type', cfg.network.envelope_type, ENVELOPES)
  _check_choice('pretrain.hf_method', cfg.pretrain.hf_method, HF_METHODS)
  _check_choice('network.network_type', cfg.network.network_type, ('ferminet',))
  _check_choice('optim.objective', cfg.optim.objective, ('vmc',))
  _check_choice('pretrain.method', cfg.pretrain.method, ('hf',))
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
  if not 0 <= cfg.pretrain.scf_fraction <= 1:
    raise errors.ConfigError('pretrain.scf_fraction must be between 0 and 1')
  if cfg.mcmc.adapt_frequency <= 0:
    raise errors.ConfigError('mcmc.adapt_frequency must be >= 1')
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
  default_min = default().optim.kfac.min_damping
  if k.min_damping != default_min:
    raise errors.ConfigError(
      f'optim.kfac.min_damping {k.min_damping} would have no effect: kfac-jax applies it only '
      'with adaptive damping, which ferminet (like the reference) does not use; the damping '
      f'is optim.kfac.damping throughout. Leave min_damping at {default_min}'
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


def _atom_label(symbol: str, system: system_lib.System) -> str:
  if not symbol:
    return ''
  charge = round(system.charge)
  suffix = {0: '', 1: '+', -1: '-'}.get(charge, f'{abs(charge)}{"+" if charge > 0 else "-"}')
  return system.atoms[0].symbol + suffix


def resolve(cfg: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Checks the config, derives the system and locks it.

  Sets ``cfg.system.molecule`` (list of :class:`system.Atom`, bohr) and
  ``cfg.system.electrons`` ((n_alpha, n_beta)). Idempotent.

  Raises:
    errors.FermiNetError: on any inconsistency, with a one-line message.
  """
  check(cfg)
  system = build_system(cfg)
  mol = cfg.system.pyscf_mol
  with cfg.unlocked():
    if mol is not None and isinstance(mol.basis, str) and mol.basis.strip():
      cfg.pretrain.basis = mol.basis  # the molecule's own basis, as the reference does
    elif mol is not None:
      warnings.warn(
        f'system.pyscf_mol has a per-element basis ({mol.basis!r}); Hartree-Fock '
        f'pretraining uses pretrain.basis {cfg.pretrain.basis!r} for every atom instead',
        stacklevel=2,
      )
    if not cfg.system.name and cfg.system.molecule_name:
      s = cfg.system
      cfg.system.name = molecules.label(s.molecule_name, s.bond_length, s.angle, s.units or 'bohr')
    elif not cfg.system.name:
      cfg.system.name = _atom_label(cfg.system.atom, system)
    cfg.system.molecule = list(system.atoms)
    cfg.system.electrons = tuple(system.electrons)
    # The atoms now define the system; further resolves must not rebuild it
    # from atom/molecule_name (charge and spin are baked into electrons).
    cfg.system.atom = ''
    cfg.system.molecule_name = ''
    cfg.system.xyz = ''
    cfg.system.pyscf_mol = None
    cfg.system.units = 'bohr'
  cfg.lock()
  return cfg


def system_of(cfg: ml_collections.ConfigDict) -> system_lib.System:
  """The System of a resolved config."""
  if not cfg.system.molecule or not cfg.system.electrons:
    raise errors.ConfigError('config is not resolved: call config.resolve(cfg) first')
  return system_lib.System(tuple(cfg.system.molecule), tuple(cfg.system.electrons))


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
