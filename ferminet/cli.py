"""The ``ferminet`` command: absl flags, config resolution, dry run, clean errors.

Usage:
    ferminet --config ferminet/configs/atom.py --config.system.atom Li --config.batch_size 256
    ferminet --config configs/diatomic.py --config.system.molecule_name N2 --dry_run
    ferminet --config configs/organic.py --config.system.molecule_name CH4

A --config path that does not exist from the working directory but ends in
configs/NAME.py (or ferminet/configs/NAME.py) is the shipped config NAME.py, so the
shipped configs work from any folder, installed or not (their names are listed below).

Any config key can be overridden with --config.KEY VALUE (see ferminet/config.py
for every key and its default). The config that get_config() returns is locked
before the overrides are applied (ml_collections' config_flags does it), so a
misspelled key is an error; keys a reference-style config file added (it starts
from the unlocked ferminet.base_config.default()) can be overridden too. The
config's system.set_molecule, if set, runs after the overrides (config.resolve).

--dry_run resolves the config, prints one ``key: value`` line per item (atoms in
bohr, electrons, Hartree-Fock energy, parameter count, devices) and exits.

Mistakes in the input (config keys, values, systems, files) are reported as one
line on stderr with exit status 2; ``--debug`` or ``FERMINET_DEBUG=1`` shows the
traceback instead. So are a disk that fills up while saving and a run that keeps
producing non-finite energies (see ferminet/train.py). SIGTERM or Ctrl-C stops a
run after the current iteration with a checkpoint (exit status 128 + signal);
rerunning the same command continues it.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import pathlib
import re
import sys
from collections.abc import Sequence

import ml_collections
from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from ferminet import config as config_lib
from ferminet import errors

# The shipped config files: package data of ferminet (the checkout's top-level configs/ is
# a symlink to this folder).
CONFIG_DIR = pathlib.Path(__file__).resolve().parent / 'configs'


def shipped_configs() -> list[str]:
  """File names of the shipped configs, e.g. ['atom.py', 'diatomic.py', ...]."""
  return sorted(p.name for p in CONFIG_DIR.glob('*.py') if not p.name.startswith('_'))


def _shipped_list() -> str:
  return ', '.join(f'configs/{name}' for name in shipped_configs())


def shipped_config_path(path: str) -> str | None:
  """The shipped config a ``--config`` path names, when the path does not exist.

  A relative path ending in ``configs/NAME.py`` (e.g. the reference's spelling
  ``ferminet/configs/atom.py``, or ``configs/atom.py`` run from another folder) is
  CONFIG_DIR/NAME.py if that is a shipped config; else None.
  """
  parts = pathlib.PurePath(path).parts
  if os.path.exists(path) or os.path.isabs(path) or len(parts) < 2 or parts[-2] != 'configs':
    return None
  shipped = CONFIG_DIR / parts[-1]
  return str(shipped) if parts[-1] in shipped_configs() else None


_CONFIG = config_flags.DEFINE_config_file(
  'config',
  None,
  'Path of a config file; override keys with --config.KEY VALUE. Shipped (from any folder, '
  f'also spelt ferminet/configs/NAME.py): {_shipped_list()}.',
  lock_config=True,  # locked after get_config(), before the overrides: typos are errors
)
_DRY_RUN = flags.DEFINE_bool(
  'dry_run', False, 'Resolve the config, print a system summary and exit.'
)
_DEBUG = flags.DEFINE_bool('debug', False, 'Show full tracebacks for input errors.')


def _debug_requested(argv: Sequence[str]) -> bool:
  return os.environ.get('FERMINET_DEBUG', '') not in ('', '0') or any(
    a in ('--debug', '--debug=true', '--debug=True') for a in argv
  )


def _fail(message: str) -> None:
  print(f'ferminet: error: {message}', file=sys.stderr)
  sys.exit(2)


def _causes(exc: BaseException):
  while exc is not None:
    yield exc
    exc = exc.__cause__ or exc.__context__


def _parse_flags(argv: Sequence[str]) -> list[str]:
  """absl flag parsing with config-file and override mistakes turned into one line."""
  argv = _with_shipped_config(argv)
  path = _config_arg(argv).split(':', 1)[0]
  if path and not os.path.isfile(path):
    _fail(
      f'config file {path!r} does not exist; shipped configs (from any folder): {_shipped_list()}'
    )
  try:
    return flags.FLAGS(argv)
  except Exception as e:  # noqa: BLE001 - every parse failure is an input error
    if _debug_requested(argv):
      raise
    for cause in _causes(e):
      if isinstance(cause, errors.FermiNetError):
        _fail(str(cause))
      if isinstance(cause, SyntaxError):
        _fail(f'syntax error in config file {cause.filename}, line {cause.lineno}: {cause.msg}')
      if isinstance(cause, OSError):
        _fail(f'cannot load the config file: {_config_arg(argv)!r} does not exist or is unreadable')
      if isinstance(cause, (AttributeError, KeyError)):
        _fail(str(_unknown_override(argv, cause)))
    if isinstance(e, flags.Error):
      _fail(_clean_flag_message(str(e)))
    _fail(f'could not load the config: {type(e).__name__}: {e}')
  return []  # unreachable


def _with_shipped_config(argv: Sequence[str]) -> list[str]:
  """``argv`` with a --config path that names a shipped config (see shipped_config_path)
  replaced by that file's path; a ``:arg`` suffix for config_flags is kept."""
  argv = list(argv)
  for i, arg in enumerate(argv):
    if arg.startswith('--config='):
      index, value, prefix = i, arg.split('=', 1)[1], '--config='
    elif arg == '--config' and i + 1 < len(argv):
      index, value, prefix = i + 1, argv[i + 1], ''
    else:
      continue
    path, colon, suffix = value.partition(':')
    shipped = shipped_config_path(path)
    if shipped is not None:
      argv[index] = prefix + shipped + colon + suffix
    break
  return argv


def _config_arg(argv: Sequence[str]) -> str:
  for i, arg in enumerate(argv):
    if arg.startswith('--config='):
      return arg.split('=', 1)[1]
    if arg == '--config' and i + 1 < len(argv):
      return argv[i + 1]
  return ''


def _clean_flag_message(message: str) -> str:
  message = message.strip().splitlines()[0]
  return re.sub(r'^flag --', '--', message)


def _loaded_config(argv: Sequence[str]) -> ml_collections.ConfigDict:
  """The config file's config (keys it added included), else the default config."""
  path, colon, argument = _config_arg(argv).partition(':')
  try:
    spec = importlib.util.spec_from_file_location('ferminet_config_file', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cfg = module.get_config(*([argument] if colon else []))
  except Exception:  # noqa: BLE001 - only names keys for an error already being reported
    return config_lib.default()
  return cfg if isinstance(cfg, ml_collections.ConfigDict) else config_lib.default()


def _unknown_override(argv: Sequence[str], exc: Exception) -> errors.ConfigError:
  """The nearest-key error for the first --config.* override that is not a key."""
  cfg = _loaded_config(argv)
  valid = set(config_lib.flat_keys(cfg))
  sections = {k.rsplit('.', i)[0] for k in valid for i in range(1, k.count('.') + 1)}
  for arg in argv:
    if arg.startswith('--config.'):
      key = arg[len('--config.') :].split('=', 1)[0]
      if key not in valid and key not in sections:
        return config_lib.unknown_key_error(key, cfg)
  return errors.ConfigError(f'invalid config: {exc}')


def summary(cfg) -> list[str]:
  """``key: value`` lines describing a resolved config's system and run."""
  import jax

  from ferminet import networks, parallel, scf

  parallel.initialize(cfg)
  system = config_lib.system_of(cfg)
  atoms = '; '.join(
    f'{a.symbol} ({a.coords[0]:.6f}, {a.coords[1]:.6f}, {a.coords[2]:.6f})' for a in system.atoms
  )
  hf = scf.hartree_fock(system, cfg.pretrain.basis, cfg.pretrain.hf_method, cfg.system.pp.basis)
  network = networks.make(cfg.network, system)
  params = jax.eval_shape(network.init, jax.random.PRNGKey(0))
  parallel.check_batch(cfg.batch_size)
  n_dev = jax.device_count()
  n_params = networks.count_parameters(params)
  lines = [
    f'atoms: {atoms}',
    'units: bohr',
    f'electrons: {tuple(system.electrons)}',
    f'charge: {system.charge:g}',
    f'spin_polarisation: {system.spin}',
    f'nuclear_repulsion_Ha: {system.nuclear_repulsion():.8f}',
    f'hf_method: {hf.method}',
    f'hf_basis: {cfg.pretrain.basis}',
    f'hf_energy_Ha: {hf.energy:.8f}',
    f'hf_converged: {hf.converged}',
  ]
  if system.pp_type:
    cores = ', '.join(
      f'{a.symbol} {c}' for a, c in zip(system.atoms, system.cores, strict=True) if c
    )
    lines += [
      f'pseudopotentials: {system.pp_type} on {", ".join(system.pp_symbols)} '
      f'(basis {cfg.system.pp.basis}; core electrons removed: {cores or "none"})',
      f'effective_charges: {system.charges.tolist()}',
    ]
  lines += [
    f'ansatz: {networks.describe(cfg.network)}',
    f'parameters: {n_params}',
    f'processes: {jax.process_count()}',
    f'devices: {n_dev} ({jax.devices()[0].platform})',
    f'batch_size: {cfg.batch_size}',
    f'walkers_per_device: {cfg.batch_size // n_dev}',
  ]
  if cfg.optim.optimizer == 'spring':  # every walker's scores for 1/D of the parameters
    size = cfg.batch_size * -(-n_params // n_dev) * (8 if cfg.debug.float64 else 4)
    lines.append(f'spring_scores_per_device_GB: {size / 1e9:.3g} (about twice while exchanged)')
  return lines


def enable_compilation_cache(cfg: ml_collections.ConfigDict, apply: bool = True) -> str:
  """Points JAX's persistent compilation cache at ``debug.compilation_cache``.

  Must run before the first compilation of the process. Returns a line for the output
  (only that with ``apply`` False).
  """
  folder = config_lib.compilation_cache_dir(cfg)
  if folder is None:
    given = os.environ.get('JAX_COMPILATION_CACHE_DIR')
    if given is None:
      return 'compilation cache: off'
    return f'compilation cache: {given or "off"} (JAX_COMPILATION_CACHE_DIR)'
  if not apply:
    return f'compilation cache: {folder}'
  try:
    os.makedirs(folder, exist_ok=True)
  except OSError as e:
    return f'compilation cache: off ({folder} cannot be created: {e.strerror})'
  import jax

  jax.config.update('jax_compilation_cache_dir', folder)
  jax.config.update(
    'jax_persistent_cache_min_compile_time_secs', config_lib.COMPILATION_CACHE_MIN_SECONDS
  )
  bound = ''
  if importlib.util.find_spec('filelock') is not None:  # JAX needs it to evict entries
    jax.config.update('jax_compilation_cache_max_size', config_lib.COMPILATION_CACHE_MAX_BYTES)
  else:
    bound = ', no size limit without the filelock package'
  return f'compilation cache: {folder} (off: --config.debug.compilation_cache={bound})'


def _main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    if argv[1] in ('True', 'False', 'true', 'false'):
      _fail(
        f'unexpected argument {argv[1]!r}: a boolean key is set as --config.KEY=True or '
        '--config.KEY=False (or --config.KEY alone for True)'
      )
    _fail(f'unexpected arguments {" ".join(argv[1:])!r}: flags start with --')
  if not (_DEBUG.value or _debug_requested(sys.argv)):
    absl_logging.set_verbosity(absl_logging.WARNING)  # kfac-jax logs every block at INFO
  cfg = _CONFIG.value
  if cfg is None:
    _fail(
      'no config given: use e.g. --config configs/atom.py --config.system.atom Li '
      f'(shipped: {_shipped_list()})'
    )
  try:
    cfg = config_lib.resolve(cfg)
    added = config_lib.apply_cpu_xla_flags() if cfg.debug.cpu_xla_flags else []
    differing = config_lib.differing_defaults(cfg)
    if _DRY_RUN.value:
      print('\n'.join(summary(cfg)))
      print(f'defaults_differing_from_reference: {"; ".join(differing) or "none"}')
      print(
        enable_compilation_cache(cfg, apply=False).replace('compilation cache', 'compilation_cache')
      )
      print(f'xla_flags: {os.environ.get("XLA_FLAGS", "")!r}', end='')
      print(
        f' (added by ferminet: {" ".join(added)}; off: --config.debug.cpu_xla_flags=False)'
        if added
        else ''
      )
      return
    if added:
      print(
        f'XLA_FLAGS: added {" ".join(added)} (faster on CPU; '
        '--config.debug.cpu_xla_flags=False keeps XLA defaults)',
        flush=True,
      )
    if differing:
      print(
        "defaults that differ from DeepMind FermiNet's (set them to match): "
        + '; '.join(differing),
        flush=True,
      )
    print(enable_compilation_cache(cfg), flush=True)
    from ferminet import train

    train.run(cfg)
  except errors.Interrupted as e:
    print(f'ferminet: {e}', file=sys.stderr)
    sys.exit(128 + e.signum)  # the shell's convention for a job ended by a signal
  except errors.FermiNetError as e:
    if _DEBUG.value or _debug_requested(sys.argv):
      raise
    _fail(str(e))


def run() -> None:
  """Console-script entry point."""
  # What --help prints: this docstring and the shipped configs.
  sys.modules['__main__'].__doc__ = f'{__doc__}\nShipped configs: {_shipped_list()}.\n'
  logging.getLogger('jax._src.xla_bridge').setLevel(logging.WARNING)  # no TPU probe noise
  try:
    app.run(_main, flags_parser=_parse_flags)
  except SystemExit as e:
    # absl exits 1 after printing --help; asking for help is not an error.
    if e.code == 1 and any(
      a in ('--help', '-h', '-?', '--helpshort', '--helpfull') for a in sys.argv
    ):
      sys.exit(0)
    raise


if __name__ == '__main__':
  run()
