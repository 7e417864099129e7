"""One VMC run as a few named steps: setup → (restore | pretrain → burn in) → iterate → summary.

Layout: parameters, optimizer state and the MCMC width are replicated over
local devices (leading axis), walkers are sharded (D, walkers per device, 3N);
the step and the PRNG key live on the host. ``iteration`` is the whole
per-step work: a pmapped Metropolis sweep (which also adapts the width), then
an optimizer step on the new walkers, then a check on the devices that keeps
the previous state if the energy or the new parameters are not finite; it
never waits for the devices.

Safety: a checkpoint is written after pretraining and burn-in (step 0), every
``log.save_frequency`` minutes, on SIGTERM/SIGINT (see ``interrupts``) and at
the end (``ckpt_<step>_final.pkl``); a non-finite state is never written. An
inference run (optimizer 'none') starts from a training checkpoint and writes
its own (``inference_ckpt_<step>.pkl``: walkers, key and step), so that
rerunning an interrupted one continues it and appends to inference_stats.csv.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import pathlib
import shlex
import signal
import sys
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ferminet import (
  analysis,
  checkpoint,
  elements,
  errors,
  hamiltonian,
  interrupts,
  loss,
  mcmc,
  networks,
  observables,
  optimizers,
  parallel,
  pretrain,
  reference_checkpoint,
  scf,
  watchdog,
  writers,
)
from ferminet import config as config_lib
from ferminet import system as system_lib

# Iterations whose statistics are fetched from the devices together: the host
# never waits for the devices between these fetches.
STATS_BATCH = 20
# With several processes, signals and the save timer are agreed on at fetches; these
# come at least every AGREE_SECONDS (fewer iterations per fetch when iterations are slow),
# so that a SIGTERM with a few minutes' notice is acted on in time.
AGREE_SECONDS = 30.0


class TrainState(NamedTuple):
  """Everything a run carries from one iteration to the next."""

  params: Any  # replicated: leading axis = local devices
  opt_state: Any  # the optimizer's own layout
  walkers: jax.Array  # (devices, walkers per device, 3N), bohr
  width: jax.Array  # Metropolis proposal std, bohr; replicated (devices,)
  step: int  # completed iterations
  key: jax.Array  # host PRNG key


@dataclasses.dataclass(frozen=True)
class Result:
  """Summary of a finished run (energies in hartree)."""

  energy: float
  stderr: float
  reference: float | None
  save_path: pathlib.Path
  state: TrainState
  energies: list[float]  # energy of every iteration of this run (after a resume: the new ones)


@dataclasses.dataclass
class Run:
  """The fixed pieces of a run, built once by :func:`setup`."""

  cfg: ml_collections.ConfigDict
  system: system_lib.System
  network: networks.Network
  loss: Any  # (params, key, walkers) -> (energy, LossAux), inside pmap; its gradient is VMC's
  optimizer: optimizers.Optimizer
  sample: Any  # pmapped (params, walkers, key, ids, width, adapt) -> (walkers, pmove, width)
  # pmapped (params, key, walkers, ids) -> {observable: mean over all walkers}, or None
  observe: Any
  observed: tuple[str, ...]  # the observables.* names estimated, in column order
  ids: jax.Array  # global indices of this process's walkers, (D, B/(P·D))
  keep_finite: Any  # pmapped (new, old, energy) -> (new if finite else old, ok)
  save_path: pathlib.Path
  inference: bool
  stop: interrupts.StopRequests  # installed by run(); checked between iterations
  watchdog: watchdog.Watchdog  # started by run(); every step's outputs are tracked


def _save_path(cfg: ml_collections.ConfigDict) -> pathlib.Path:
  if cfg.log.save_path:
    path = pathlib.Path(cfg.log.save_path)
  else:
    now = parallel.same_on_all(int(time.time()))  # one folder name for all processes
    stamp = datetime.datetime.fromtimestamp(now).strftime('%Y_%m_%d_%H_%M_%S')
    path = pathlib.Path(f'ferminet_{stamp}')
  try:
    path.mkdir(parents=True, exist_ok=True)
    probe = path / f'.write_test_{os.getpid()}'  # unique: processes may share the folder
    probe.write_text('')
    probe.unlink()
  except OSError as e:
    raise errors.ConfigError(f'cannot write to log.save_path {str(path)!r}: {e.strerror}') from None
  return path


def local_energy_chunk(cfg: ml_collections.ConfigDict, system: system_lib.System) -> int:
  """``optim.max_vmap_batch_size`` with -1 (auto) resolved for this device and network."""
  return hamiltonian.resolve_chunk(
    cfg.optim.max_vmap_batch_size,
    cfg.optim.laplacian,
    jax.devices()[0].platform,
    system.n_electrons,
    networks.widest_feature(cfg.network, system),
    8 if cfg.debug.float64 else 4,
  )


def _make_observe(estimators: dict[str, hamiltonian.Estimator], chunk: int) -> Any:
  """The pmapped means of observable ``estimators`` over all walkers of all devices:
  ``(params, key, walkers, ids) -> {name: (D, k) mean value}`` (None without any);
  walker i's estimator keys fold in ``ids[i]``, so they do not depend on the layout."""
  if not estimators:
    return None

  def local(params, key, walkers, ids):
    key = jax.random.fold_in(key, 1)  # the optimizer's key, made the observables' own

    def one(args):
      k, x = args
      return {n: jnp.reshape(f(params, k, x), -1) for n, f in estimators.items()}

    values = parallel.map_walkers(one, (hamiltonian.walker_keys(key, ids), walkers), chunk)
    return parallel.pmean(jax.tree.map(lambda v: jnp.mean(v, axis=0), values))

  return jax.pmap(local, axis_name=parallel.AXIS)


def _penalties(
  cfg: ml_collections.ConfigDict, system: system_lib.System, network: networks.Network
) -> dict[str, hamiltonian.Estimator]:
  """The penalty terms of the minimised local energy: ``optim.spin_energy`` · S²."""
  c = cfg.optim.spin_energy
  if not c:
    return {}
  s2 = observables.make_s2(network.apply, system.electrons)
  return {'spin_penalty': lambda params, key, x: c * s2(params, key, x)}


def setup(cfg: ml_collections.ConfigDict) -> Run:
  """Resolves the config and builds the network, local energy, loss, optimizer and sampler."""
  if cfg.debug.float64:
    jax.config.update('jax_enable_x64', True)
  cfg = config_lib.resolve(cfg)
  cfg.log.started_from.update(config_lib.NOT_STARTED_FROM)  # an output: set by start()
  parallel.initialize(cfg)  # before JAX touches a device
  system = config_lib.system_of(cfg)
  parallel.check_batch(cfg.batch_size)
  network = networks.make(cfg.network, system)
  local_energy = hamiltonian.make_local_energy(
    network.log_abs,
    system,
    cfg.optim.laplacian,
    cfg.optim.forward_laplacian_sparsity,
    network.laplacian,
    signed=network.apply,
    penalties=_penalties(cfg, system, network),
  )
  residuals = loss.make_residuals(
    local_energy,
    cfg.optim.clip_local_energy,
    cfg.optim.clip_median,
    cfg.optim.center_at_clip,
    local_energy_chunk(cfg, system),
  )
  vmc_loss = loss.make_loss(network.log_abs, residuals, network.log_abs_tagged)
  optimizer = optimizers.make(vmc_loss, cfg, residuals=residuals, log_abs=network.log_abs)

  def log_prob(params, x):  # log |ψ|² of one walker
    return 2.0 * network.log_abs(params, x)

  metropolis = mcmc.make_step(log_prob, cfg.mcmc.steps)
  batched_log_prob = jax.vmap(log_prob, in_axes=(None, 0))
  target = cfg.mcmc.target_acceptance

  def local_sample(params, walkers, key, ids, width, adapt):
    log_p = batched_log_prob(params, walkers)
    walkers, _, pmove = metropolis(params, walkers, log_p, key, ids, width)
    pmove = parallel.pmean(pmove)
    width = jnp.where(adapt, mcmc.adapt_width(width, pmove, target), width)
    return walkers, pmove, width

  sample = jax.pmap(local_sample, axis_name=parallel.AXIS, in_axes=(0, 0, None, 0, 0, None))
  observed = tuple(n for n in observables.OBSERVABLES if cfg.observables.get(n))
  observe = _make_observe(
    observables.make(observed, network.apply, system, cfg.observables),
    local_energy_chunk(cfg, system),
  )
  cfg.debug.seed = seed(cfg)  # the seed in use, recorded in config.json
  say(f'ansatz: {networks.describe(cfg.network)}')
  if cfg.optim.laplacian == 'forward' and network.laplacian is None:
    say(
      f'kinetic energy: folx forward Laplacian (the {network.network_type} has no '
      'structured one of its own)'
    )
  save_path = _save_path(cfg)
  if parallel.is_main():
    write_config(cfg, save_path)
  return Run(
    cfg=cfg,
    system=system,
    network=network,
    loss=vmc_loss,
    optimizer=optimizer,
    sample=sample,
    observe=observe,
    observed=observed,
    ids=parallel.walker_ids(cfg.batch_size),
    keep_finite=jax.pmap(_keep_finite, axis_name=parallel.AXIS),
    save_path=save_path,
    inference=cfg.optim.optimizer == 'none',
    stop=interrupts.StopRequests(),
    watchdog=watchdog.Watchdog(
      cfg.debug.stall_minutes,
      hint=f'Checkpoints are in {save_path}; see "Known problems" in the README.',
    ),
  )


def _all_finite(tree: Any) -> jax.Array:
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def _keep_finite(new: Any, old: Any, energy: jax.Array) -> tuple[Any, jax.Array]:
  """``new`` if the energy and every leaf of ``new`` are finite, else ``old``.

  ``new`` is (params, opt_state, walkers, width): the same arrays :func:`save`
  refuses to write when not finite, so a state kept here can always be saved.
  Runs on each device; energy, parameters and optimizer state are identical on
  all devices, but walkers are not: the decision is combined over all devices
  so that all keep or all roll back.
  """
  ok = jnp.isfinite(energy) & _all_finite(new)
  ok = parallel.pmin(ok.astype(jnp.int32)).astype(bool)
  return jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, old), ok


def write_config(cfg: ml_collections.ConfigDict, save_path: pathlib.Path) -> pathlib.Path:
  """Writes the resolved config as ``config.json`` into the run folder.

  ferminet-analyze reads ``system.name`` (the reference-table label) and
  ``system.electrons`` from it; atoms are written as {symbol, coords (bohr), charge}.
  """

  def encode(obj: Any) -> Any:
    if isinstance(obj, system_lib.Atom):
      return {'symbol': obj.symbol, 'coords': list(obj.coords), 'charge': obj.charge}
    return repr(obj)

  path = pathlib.Path(save_path) / 'config.json'
  if cfg.optim.optimizer == 'none' and _written_by_training(path):
    path = path.with_name('inference_config.json')  # keep the training run's record
  with writers.atomic_open(path, 'w') as f:
    json.dump(cfg.to_dict(), f, indent=1, default=encode)
  return path


def _written_by_training(path: pathlib.Path) -> bool:
  try:
    return json.loads(path.read_text())['optim']['optimizer'] != 'none'
  except (OSError, ValueError, KeyError, TypeError):
    return False


def _set_aside(csv_path: pathlib.Path) -> None:
  """Renames a statistics file with rows that a fresh start would truncate (process 0)."""
  if not parallel.is_main() or not writers.read_rows(csv_path):
    return
  n = 1
  while (backup := csv_path.with_name(f'{csv_path.stem}.{n}{csv_path.suffix}')).exists():
    n += 1
  os.replace(csv_path, backup)
  say(
    f'note: {csv_path.name} held rows of an earlier run without a checkpoint to continue; '
    f'kept as {backup.name}'
  )


def _meta(run: Run, params: Any) -> dict[str, Any]:
  shapes = jax.tree.map(lambda p: tuple(np.shape(p)), params)
  return {
    'electrons': tuple(run.system.electrons),
    'charges': np.asarray(run.system.charges),
    'coords': np.asarray(run.system.coords),
    'param_shapes': str(shapes),
    'reference_layers': bool(run.cfg.network.ferminet.reference_layers),
    'optimizer': run.cfg.optim.optimizer,
  }


def seed(cfg: ml_collections.ConfigDict) -> int:
  """debug.seed with debug.deterministic, else a new seed from the clock (process 0's)."""
  if cfg.debug.deterministic:
    return cfg.debug.seed
  return parallel.same_on_all(time.time_ns() % 2**31)


def fresh_state(run: Run) -> TrainState:
  """New parameters and walkers (before pretraining), from ``debug.seed`` as set by setup."""
  s = run.cfg.debug.seed
  say(f'seed {s} (to repeat: --config.debug.deterministic --config.debug.seed {s})')
  key = jax.random.PRNGKey(s)
  key, k_params, k_walkers = jax.random.split(key, 3)
  params = parallel.replicate(run.network.init(k_params))
  walkers = mcmc.init_walkers(k_walkers, run.system, run.cfg.batch_size, run.cfg.mcmc.init_width)
  # All walkers are drawn on every process, which keeps its own block.
  walkers = parallel.local_walkers(walkers.astype(jax.tree.leaves(params)[0].dtype))
  width = parallel.replicate(jnp.asarray(run.cfg.mcmc.move_width, walkers.dtype))
  return TrainState(params, None, walkers, width, 0, key)


def init_optimizer(run: Run, state: TrainState) -> TrainState:
  """A fresh optimizer state. Leaves ``state.key`` as it is, so that a restored
  run draws the same random numbers as an uninterrupted one."""
  keys = parallel.same_keys(jax.random.fold_in(state.key, 1))
  batch = loss.Batch(state.walkers, run.ids)
  return state._replace(opt_state=run.optimizer.init(state.params, keys, batch))


def restore(run: Run) -> tuple[TrainState, str] | None:
  """The state from the newest checkpoint in save_path, else in log.restore_path, and a
  line saying where it came from.

  An inference run first continues its own inference checkpoint in save_path; else
  it starts at step 0 from a training checkpoint. A folder (or file) may also hold
  checkpoints of DeepMind's FermiNet (``qmcjax_ckpt_*.npz``, see
  ``reference_checkpoint``); a folder with ours too restores ours.
  """
  if run.inference:
    data = checkpoint.load_latest(run.save_path, checkpoint.INFERENCE)
    if data is not None:
      state = _state_from(run, data, str(run.save_path))
      _recall_start(run, data)
      return state, f'continuing inference at step {state.step} from {run.save_path}'
  for where in (run.save_path, run.cfg.log.restore_path):
    if not where:
      continue
    path = pathlib.Path(where)
    if where == run.cfg.log.restore_path and not path.exists():
      raise errors.ConfigError(f'log.restore_path {where!r} does not exist')
    found = _load(path)
    if found is None:
      if where == run.cfg.log.restore_path:
        raise errors.ConfigError(f'log.restore_path {where!r} holds no checkpoint')
      continue
    if isinstance(found, reference_checkpoint.ReferenceCheckpoint):
      state, step, name = _state_from_reference(run, found), found.step, found.path.name
      source = f'the reference checkpoint {name} in {found.path.parent}'
    else:
      state, step, source = _state_from(run, found, str(where)), found['step'], str(where)
      if where == run.save_path and not run.inference:
        _recall_start(run, found)
    if run.inference:
      _record_evaluated(run, path, step, found)
      return state, f'inference of the wavefunction of step {step} from {source}'
    return state, f'restored step {state.step} from {source}'
  return None


def _record_evaluated(run: Run, path: pathlib.Path, step: int, found: Any) -> None:
  """An inference run records the training checkpoint it evaluates in log.started_from
  (its config file and checkpoints): ferminet-analyze --match-length compares the steps."""
  if isinstance(found, reference_checkpoint.ReferenceCheckpoint):
    name = run.cfg.system.name
  else:
    name = _source_name(path if path.is_dir() else path.parent, found)
  _set_started_from(run, {'path': str(path.resolve()), 'step': int(step), 'system': name})


def _recall_start(run: Run, data: dict[str, Any]) -> None:
  """A continued warm-started (or inference) run keeps log.started_from (from its
  checkpoint) in its config file."""
  record = data.get('started_from') or {}
  if record.get('path'):
    _set_started_from(run, record)


def _set_started_from(run: Run, record: dict[str, Any]) -> None:
  """Sets log.started_from (its keys of ``record``) and writes the run's config file."""
  keys = config_lib.NOT_STARTED_FROM
  run.cfg.log.started_from.update({k: record[k] for k in keys if k in record})
  if parallel.is_main():
    write_config(run.cfg, run.save_path)


def _load(path: pathlib.Path) -> dict[str, Any] | reference_checkpoint.ReferenceCheckpoint | None:
  """The checkpoint in ``path`` (a file, or a folder's newest), ours or the reference's."""
  if path.is_file():
    if reference_checkpoint.is_reference(path) or path.suffix == '.npz':
      return reference_checkpoint.load(path)
    return checkpoint.load(path)
  ours = checkpoint.load_latest(path)
  theirs = reference_checkpoint.list_checkpoints(path)
  if ours is None:
    return reference_checkpoint.latest(path) if theirs else None
  if theirs:
    say(
      f'note: {path} holds ferminet checkpoints and reference ones ({theirs[-1].name}); '
      f"restoring ferminet's of step {ours['step']}"
    )
  return ours


def _resampled(walkers: np.ndarray, batch_size: int) -> np.ndarray:
  """The first ``batch_size`` walkers, repeated when there are fewer; shape (batch, 3N)."""
  return walkers[np.arange(batch_size) % walkers.shape[0]]


def _state_from(run: Run, data: dict[str, Any], where: str) -> TrainState:
  template = run.network.init(jax.random.PRNGKey(0))
  expected = _meta(run, template)
  expected.pop('optimizer')
  meta = {'reference_layers': False, **data['meta']}  # written before the option existed
  checkpoint.check_compatible(meta, expected, where)
  dtype = jax.tree.leaves(template)[0].dtype
  params = parallel.replicate(jax.tree.map(lambda a: jnp.asarray(a, dtype), data['params']))
  walkers = _resampled(np.asarray(data['walkers']), run.cfg.batch_size)
  state = TrainState(
    params=params,
    opt_state=None,
    walkers=parallel.local_walkers(np.asarray(walkers, dtype)),
    width=parallel.replicate(jnp.asarray(data['width'], dtype)),
    step=int(data['step']),
    key=jnp.asarray(data['key']),
  )
  if run.inference:  # an inference checkpoint continues; a training one starts inference
    return state if data['meta'].get('optimizer') == 'none' else state._replace(step=0)
  state, taken = _saved_opt_state(run, init_optimizer(run, state), data)
  if not taken:
    say(f'note: optimizer state not restored (checkpoint from {data["meta"].get("optimizer")})')
  return state


def _saved_opt_state(run: Run, state: TrainState, data: dict[str, Any]) -> tuple[TrainState, bool]:
  """``state`` with the checkpoint's optimizer state, and True; ``state`` and False when the
  checkpoint's optimizer differs from this run's or its state does not fit."""
  leaves, treedef = jax.tree.flatten(state.opt_state)
  saved = data.get('opt_state')
  if not (
    data['meta'].get('optimizer') == run.cfg.optim.optimizer
    and saved is not None
    and [np.shape(s) for s in saved] == [np.shape(x)[1:] for x in leaves]
  ):
    return state, False
  # One replicate call for all leaves: one transfer (and layout) for the whole state.
  restored = parallel.replicate(
    [jnp.asarray(s, x.dtype) for s, x in zip(saved, leaves, strict=True)]
  )
  return state._replace(opt_state=jax.tree.unflatten(treedef, restored)), True


def _symbols(charges: Any) -> str:
  """'[C, H, H]' for nuclear charges (a non-integer charge as Z=3.1)."""
  names = []
  for z in np.atleast_1d(np.asarray(charges, dtype=float)):
    whole = float(z).is_integer() and 1 <= z <= len(elements.ELEMENTS)
    names.append(elements.by_number(int(z)).symbol if whole else f'Z={z:g}')
  return f'[{", ".join(names)}]'


def _network_difference(saved: Any, template: Any) -> str | None:
  """The first parameter in which two parameter trees differ, in words; None if they agree."""

  def shapes(tree: Any) -> dict[str, tuple[int, ...]]:
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {jax.tree_util.keystr(path): tuple(np.shape(x)) for path, x in flat}

  theirs, ours = shapes(saved), shapes(template)
  for name, shape in ours.items():
    if name not in theirs:
      return f'this network has parameter {name} {shape}, the checkpoint has not'
    if theirs[name] != shape:
      return f'parameter {name} has shape {theirs[name]} in the checkpoint, {shape} here'
  for name in theirs:
    if name not in ours:
      return f'the checkpoint has parameter {name} {theirs[name]}, this network has not'
  return None


def check_warm_start(run: Run, data: dict[str, Any], where: str) -> None:
  """Raises one ConfigError when checkpoint ``data`` cannot start this run at its geometry.

  Unlike a restore, the nuclear coordinates may differ; the elements (nuclear charges, in
  order), the electrons (n_alpha, n_beta) and the network (parameter shapes,
  ``network.ferminet.reference_layers``) must be the same.
  """
  meta = {'reference_layers': False, **data['meta']}  # written before the option existed
  charges, ours = np.asarray(meta.get('charges', ()), dtype=float), run.system.charges
  prefix = f'log.init_from {where}'
  only = 'a warm start needs the same elements in the same order; only the geometry may differ'
  if charges.shape != ours.shape or not np.allclose(charges, ours):
    raise errors.ConfigError(
      f'{prefix}: atoms are {_symbols(charges)}, this run has {_symbols(ours)}; {only}'
    )
  electrons = tuple(int(n) for n in meta.get('electrons', ()))
  if electrons != tuple(run.system.electrons):
    raise errors.ConfigError(
      f'{prefix}: electrons (alpha, beta) are {electrons}, this run has '
      f'{tuple(run.system.electrons)} (system.charge, system.spin_polarisation); {only}'
    )
  layers = bool(run.cfg.network.ferminet.reference_layers)
  if bool(meta['reference_layers']) != layers:
    raise errors.ConfigError(
      f'{prefix}: network.ferminet.reference_layers is {bool(meta["reference_layers"])} '
      f'there, {layers} here; set it as the source run did'
    )
  difference = _network_difference(data['params'], run.network.init(jax.random.PRNGKey(0)))
  if difference is not None:
    raise errors.ConfigError(
      f"{prefix}: the network differs ({difference}); use the source run's network settings "
      '(network.determinants, network.ferminet.hidden_dims, network.full_det, '
      'network.envelope_type, network.bias_orbitals, network.jastrow)'
    )


def _init_from(run: Run) -> tuple[pathlib.Path, dict[str, Any]]:
  """The checkpoint log.init_from names (a file, or a folder's newest) and its contents."""
  where = pathlib.Path(run.cfg.log.init_from)
  if where.is_file():
    return where, checkpoint.load(where)
  found = checkpoint.find_latest(where)
  if found is None:
    raise errors.ConfigError(
      f'log.init_from {str(where)!r} holds no readable ferminet checkpoint (ckpt_*.pkl)'
    )
  return found


def _source_name(folder: pathlib.Path, data: dict[str, Any]) -> str:
  """system.name of the run that wrote checkpoint ``data`` (in ``folder``): its own
  record, else the folder's config.json, else the folder's name."""
  if data.get('system_name'):
    return str(data['system_name'])
  try:
    name = json.loads((folder / 'config.json').read_text())['system']['name']
  except (OSError, ValueError, KeyError, TypeError):
    name = ''
  return str(name) or folder.name


def warm_start(run: Run) -> TrainState:
  """A new run at this geometry from the checkpoint log.init_from names (another geometry).

  Takes its parameters and MCMC width; its walkers (resampled to batch_size) move with
  the nuclei (:func:`mcmc.follow_nuclei`) and are re-equilibrated for ``mcmc.burn_in``
  sweeps with those parameters. No pretraining; the step starts at 0 and the PRNG key
  comes from ``debug.seed``. The optimizer state is fresh, or with
  ``log.init_optimizer_state`` the checkpoint's when the optimizer is the same. Records
  the source in ``log.started_from`` (config.json and this run's checkpoints) and saves
  the step-0 checkpoint.

  Raises:
    errors.ConfigError: the checkpoint is of other elements, electrons or network.
  """
  cfg = run.cfg
  path, data = _init_from(run)
  check_warm_start(run, data, str(path))
  name, step = _source_name(path.parent, data), int(data['step'])
  old = np.asarray(data['meta']['coords'], dtype=float).reshape(-1, 3)
  moved = float(np.max(np.linalg.norm(run.system.coords - old, axis=-1)))
  say(f'warm start from {path} (step {step}, geometry of {name})')
  s = cfg.debug.seed
  say(f'seed {s} (to repeat: --config.debug.deterministic --config.debug.seed {s})')
  dtype = jax.tree.leaves(jax.eval_shape(run.network.init, jax.random.PRNGKey(0)))[0].dtype
  params = jax.tree.map(lambda a: jnp.asarray(a, dtype), data['params'])
  walkers = mcmc.follow_nuclei(
    _resampled(np.asarray(data['walkers']), cfg.batch_size), old, run.system.coords
  )
  state = TrainState(
    params=parallel.replicate(params),
    opt_state=None,
    walkers=parallel.local_walkers(np.asarray(walkers, dtype)),
    width=parallel.replicate(jnp.asarray(data['width'], dtype)),
    step=0,
    key=jax.random.PRNGKey(s),
  )
  say(
    f'pretraining skipped: parameters and MCMC width ({float(data["width"]):.3f} bohr) from '
    f'the checkpoint; nuclei moved by up to {moved:.3f} bohr, the walkers with them, '
    f're-equilibrated for {cfg.mcmc.burn_in} sweeps (mcmc.burn_in)'
  )
  state = burn_in(run, state, cfg.mcmc.burn_in)
  state = init_optimizer(run, state)
  if cfg.log.init_optimizer_state:
    state, taken = _saved_opt_state(run, state, data)
    saved = data['meta'].get('optimizer')
    say(
      f'optimizer state taken from the checkpoint ({saved})'
      if taken
      else f'note: optimizer state not taken (the checkpoint is from {saved}, this run uses '
      f'{cfg.optim.optimizer}); it starts afresh'
    )
  _set_started_from(run, {'path': str(path.resolve()), 'step': step, 'system': name})
  save(run, state)  # a restart continues this run, never warm-starts again
  return state


def _state_from_reference(run: Run, ckpt: reference_checkpoint.ReferenceCheckpoint) -> TrainState:
  """Walkers, width, step and parameters of a reference checkpoint; a fresh optimizer state.

  The PRNG key is new (the reference saves none): ``debug.seed``'s. Training continues
  at the checkpoint's step with the learning-rate schedule there (KFAC), but KFAC's
  curvature statistics (or Adam's moments) start afresh.
  """
  reference_checkpoint.check_system(ckpt, run.system)
  template = run.network.init(jax.random.PRNGKey(0))
  params = reference_checkpoint.to_params(ckpt, run.cfg.network, run.system, template)
  params = jax.tree.map(lambda t, a: jnp.asarray(a, t.dtype), template, params)
  dtype = jax.tree.leaves(template)[0].dtype
  if ckpt.walkers.shape[0] != run.cfg.batch_size:
    say(
      f'note: the reference checkpoint holds {ckpt.walkers.shape[0]} walkers; batch_size '
      f'{run.cfg.batch_size} takes the first ones, repeated when there are fewer'
    )
  width = ckpt.width if ckpt.width is not None else run.cfg.mcmc.move_width
  state = TrainState(
    params=parallel.replicate(params),
    opt_state=None,
    walkers=parallel.local_walkers(np.asarray(_resampled(ckpt.walkers, run.cfg.batch_size), dtype)),
    width=parallel.replicate(jnp.asarray(width, dtype)),
    step=0 if run.inference else ckpt.step,
    key=jax.random.PRNGKey(run.cfg.debug.seed),
  )
  if run.inference:
    return state
  state = init_optimizer(run, state)
  opt_state = state.opt_state
  if dataclasses.is_dataclass(opt_state) and hasattr(opt_state, 'step_counter'):  # kfac-jax
    counter = opt_state.step_counter
    counter = parallel.replicate(jnp.asarray(ckpt.step, jnp.asarray(counter).dtype))
    state = state._replace(opt_state=dataclasses.replace(opt_state, step_counter=counter))
    restart = 'KFAC statistics restart; its learning-rate schedule continues at this step'
  else:
    restart = f'a fresh {run.cfg.optim.optimizer} state (its learning-rate schedule restarts)'
  say(f"note: the reference's optimizer state is not restored: {restart}")
  return state


def save(run: Run, state: TrainState, final: bool = False) -> pathlib.Path:
  """Writes a checkpoint of ``state`` (host copies; independent of devices and processes).

  With several processes every process must call it (the walkers of all of
  them are gathered); process 0 writes the file.

  Raises:
    errors.NonFiniteError: the state holds NaN or inf (never written).
    errors.OutputError: the file could not be written; older checkpoints are intact.
  """
  params = parallel.first(state.params)
  opt_leaves = None
  if state.opt_state is not None:  # every leaf is replicated over devices: keep one copy
    opt_leaves = [np.asarray(x) for x in jax.tree.leaves(parallel.first(state.opt_state))]
  walkers = parallel.all_walkers(state.walkers)
  arrays = [walkers, *jax.tree.leaves(params), *(opt_leaves or [])]
  if not all(np.all(np.isfinite(a)) for a in arrays if np.issubdtype(a.dtype, np.inexact)):
    raise errors.NonFiniteError(
      f'refusing to write a checkpoint at step {state.step}: the state is not finite'
    )
  data = {
    'step': state.step,
    'params': params,
    'opt_state': opt_leaves,
    'walkers': walkers,
    'width': float(state.width[0]),
    'key': np.asarray(state.key),
    'meta': _meta(run, params),
    'system_name': run.cfg.system.name,  # read by a warm start from this checkpoint
    'started_from': run.cfg.log.started_from.to_dict(),  # kept when this run is continued
  }
  prefix = checkpoint.INFERENCE if run.inference else checkpoint.TRAIN
  if not parallel.is_main():
    return checkpoint.path_for(run.save_path, state.step, final, prefix)
  keep = run.cfg.log.keep_checkpoints
  return checkpoint.save(run.save_path, data, keep=keep, final=final, prefix=prefix)


def say(message: str) -> None:
  """Prints on process 0 only."""
  if parallel.is_main():
    print(message, flush=True)


def _check_stop(run: Run, stage: str) -> None:
  """Raises errors.Interrupted when a signal arrived during pretraining or burn-in.

  With several processes the signal is acted on at the first agreement point of
  the training loop instead (processes must stop at the same iteration).
  """
  if run.stop.requested is not None and parallel.process_count() == 1:
    raise errors.Interrupted(
      f'stopped by {run.stop.name} during {stage}, before the first checkpoint; '
      'rerunning the same command starts again',
      run.stop.requested,
    )


def run_pretrain(run: Run, state: TrainState) -> TrainState:
  """Fits the network orbitals to Hartree–Fock for ``pretrain.iterations`` steps."""
  cfg = run.cfg
  if cfg.pretrain.iterations == 0:
    return state
  hf = scf.hartree_fock(run.system, cfg.pretrain.basis, cfg.pretrain.hf_method, cfg.system.pp.basis)
  basis = cfg.pretrain.basis
  if run.system.pp_type:
    ecp = f'{cfg.system.pp.basis} with {run.system.pp_type} on {", ".join(run.system.pp_symbols)}'
    all_ecp = set(run.system.symbols) <= set(run.system.pp_symbols)
    basis = ecp if all_ecp else f'{basis}, {ecp}'
  say(f'Hartree-Fock ({hf.method}/{basis}): {hf.energy:.6f} Ha')
  init_opt, step = pretrain.make_step(
    run.network,
    hf,
    tuple(run.system.electrons),
    run.network.full_det,  # the Psiformer's are always full
    cfg.pretrain.lr,
    cfg.pretrain.scf_fraction,
    cfg.mcmc.steps,
    cfg.mcmc.target_acceptance,
  )
  opt_state = init_opt(state.params)
  params, walkers, width, key = state.params, state.walkers, state.width, state.key
  progress = writers.Progress('pretrain', cfg.pretrain.iterations, enabled=parallel.is_main())
  converged = Converged(cfg.pretrain.tolerance, cfg.pretrain.window)
  for i in range(cfg.pretrain.iterations):
    _check_stop(run, 'pretraining')
    key, sub = jax.random.split(key)
    params, opt_state, walkers, width, fit, pmove = step(
      params, opt_state, walkers, sub, run.ids, width
    )
    run.watchdog.track(f'pretraining step {i + 1}', fit)
    if progress.due(i + 1):  # a host synchronisation, as is each window's check
      progress.update(i + 1, f'orbital MSE {float(fit[0]):.3e} | pmove {float(pmove[0]):.2f}')
    if converged.add(fit):
      say(f'pretraining converged after {i + 1} iterations: {converged.message}')
      break
  return state._replace(params=params, walkers=walkers, width=width, key=key)


class Converged:
  """``pretrain.tolerance``: whether the mean of the last ``window`` values (the orbital
  MSE, (devices,) arrays, the same on every device and process) is less than ``tolerance``
  (relative) below the mean of the ``window`` before. Checked once per window, with one
  transfer from the device; never with ``tolerance`` 0."""

  def __init__(self, tolerance: float, window: int):
    self.tolerance, self.window = tolerance, window
    self.values: list[jax.Array] = []
    self.previous: float | None = None
    self.message = ''

  def add(self, value: jax.Array) -> bool:
    if self.tolerance <= 0:
      return False
    self.values.append(value[0])
    if len(self.values) < self.window:
      return False
    mean = float(jnp.mean(jnp.stack(self.values)))
    self.values = []
    previous, self.previous = self.previous, mean
    if previous is None:
      return False
    drop = (previous - mean) / previous
    self.message = (
      f'mean orbital MSE {mean:.3e} over the last {self.window}, {100 * drop:.1f}% below the '
      f'{self.window} before (pretrain.tolerance {self.tolerance:g})'
    )
    return drop < self.tolerance


def burn_in(run: Run, state: TrainState, iterations: int) -> TrainState:
  """Metropolis sweeps with fixed parameters, adapting the width."""
  walkers, width, key = state.walkers, state.width, state.key
  progress = writers.Progress('burn-in', iterations, enabled=parallel.is_main())
  for i in range(iterations):
    _check_stop(run, 'burn-in')
    key, sub = jax.random.split(key)
    walkers, pmove, width = run.sample(state.params, walkers, sub, run.ids, width, True)
    run.watchdog.track(f'burn-in step {i + 1}', pmove)
    if progress.due(i + 1):
      progress.update(i + 1, f'pmove {float(pmove[0]):.2f} | width {float(width[0]):.3f} bohr')
  return state._replace(walkers=walkers, width=width, key=key)


def iteration(run: Run, state: TrainState) -> tuple[TrainState, dict[str, jax.Array]]:
  """One VMC iteration: sample, then update parameters on the new walkers.

  If the energy, the new parameters, optimizer state or walkers are not finite, the
  iteration is rolled back: parameters, optimizer state, walkers and width keep their old
  values (the step still counts and the key moves on, so the next try differs);
  ``stats['ok']`` is False then. Nothing here waits for the devices: the
  statistics are device arrays (replicated, (devices,)) fetched in batches.
  """
  key, k_mcmc, k_opt = jax.random.split(state.key, 3)
  adapt = (state.step + 1) % run.cfg.mcmc.adapt_frequency == 0
  walkers, pmove, width = run.sample(
    state.params, state.walkers, k_mcmc, run.ids, state.width, adapt
  )
  keys = parallel.same_keys(k_opt)
  observed = None
  if run.observe is not None:  # on the walkers and parameters the step's energy is of
    observed = run.observe(state.params, keys, walkers, run.ids)
  params, opt_state, energy, variance = run.optimizer.step(
    state.params, state.opt_state, keys, loss.Batch(walkers, run.ids)
  )
  new_opt_state = opt_state
  (params, opt_state, walkers, width), ok = run.keep_finite(
    (params, opt_state, walkers, width),
    (state.params, state.opt_state, state.walkers, state.width),
    energy,
  )
  if opt_state is not None:
    opt_state = run.optimizer.after_rollback(opt_state, new_opt_state)
  stats = {'energy': energy, 'variance': variance, 'pmove': pmove, 'ok': ok}
  if observed is not None:
    stats['observables'] = observed
  return TrainState(params, opt_state, walkers, width, state.step + 1, key), stats


def stats_csv(run: Run) -> pathlib.Path:
  """The run's statistics file: train_stats.csv, or inference_stats.csv for inference."""
  return run.save_path / ('inference_stats.csv' if run.inference else 'train_stats.csv')


def start(run: Run) -> TrainState:
  """Restored state, or a fresh one after pretraining and burn-in.

  A run that does not continue a checkpoint of its own kind (a new training run,
  an inference run starting from a training checkpoint) never truncates an
  existing statistics file: one with rows is renamed (``*.1.csv``) first.
  """
  restored = restore(run)
  if restored is not None:
    state, message = restored
    if run.inference and state.step == 0:
      _set_aside(stats_csv(run))
    say(message)
    return state
  _set_aside(stats_csv(run))
  if run.cfg.log.init_from and not run.inference:
    return warm_start(run)
  state = fresh_state(run)
  state = run_pretrain(run, state)
  state = burn_in(run, state, run.cfg.mcmc.burn_in)
  if run.inference:
    return state
  state = init_optimizer(run, state)
  save(run, state)  # a pre-empted job need not pretrain again
  return state


def summarize(run: Run, csv_path: pathlib.Path, state: TrainState, energies: list[float]) -> Result:
  """Reblocked energy of the run, and the reference if known.

  Training: the second half of the steps (as the reference); when that stretch's
  own halves differ by more than ``analysis.DRIFT_SIGMAS`` combined error bars,
  the energy is still falling and a warning recommends an inference run (its
  command is printed). Inference: every step (the walkers were equilibrated
  before). Process 0 reads the whole history from the CSV (earlier segments of
  a resumed run included) and prints the summary; other processes use
  ``energies`` (this segment) and print nothing.
  """
  ref = analysis.reference_for(run.system, run.cfg.system.name)
  rows = writers.read_rows(csv_path) if parallel.is_main() else []
  history = np.array([float(r['energy']) for r in rows]) if rows else np.asarray(energies)
  steps = np.array([int(r['step']) for r in rows]) if rows else np.arange(len(history))
  first = 0 if run.inference else len(history) // 2
  kept = history[first:]
  stats = analysis.reblock(kept)  # non-finite rows are skipped
  rolled_back = sum(r['rolled_back'] == '1' for r in rows)
  if rolled_back:
    say(f'rolled_back: {rolled_back} iterations were not finite and were repeated')
  stretch = f'steps {steps[first]}-{steps[-1]}' if len(kept) else 'no steps'
  which = 'all of the inference run' if run.inference else 'the second half of the run'
  say(f'ansatz: {networks.describe(run.cfg.network)}')
  say(
    f'energy_Ha: {stats.mean:.6f} +/- {stats.stderr:.6f} '
    f'(reblocked over {stretch}: {which}; {stats.n} iterations, block {stats.block_size})'
  )
  if not run.inference:
    d = analysis.drift(kept)
    if d.significant:
      half = first + len(kept) // 2
      say(
        f'warning: the energy is still falling: {d.first.mean:.6f} +/- {d.first.stderr:.6f} '
        f'over steps {steps[first]}-{steps[half - 1]}, {d.second.mean:.6f} +/- '
        f'{d.second.stderr:.6f} over steps {steps[half]}-{steps[-1]} ({d.sigmas:.1f} error '
        'bars apart), so the error bar above misses the drift. For a final number, evaluate '
        'the trained wavefunction with fixed parameters: '
        + inference_command(run.save_path, max(1000, len(kept)))
      )
  if ref is not None:
    error, stderr = (stats.mean - ref[0]) * 1000, stats.stderr * 1000
    say(f'reference_Ha: {ref[0]:.6f} ({ref[1]}); error_mHa: {error:.2f} +/- {stderr:.2f}')
  say(f'outputs: {run.save_path}')
  return Result(stats.mean, stats.stderr, ref[0] if ref else None, run.save_path, state, energies)


_INFERENCE_KEYS = (
  'optim.optimizer',
  'optim.iterations',
  'log.save_path',
  'log.restore_path',
  'log.init_from',  # the inference run evaluates this run's checkpoint, not the source's
  'log.init_optimizer_state',
)


def inference_command(
  save_path: pathlib.Path, iterations: int, argv: list[str] | None = None
) -> str:
  """The command that evaluates the run in ``save_path`` with fixed parameters.

  From the ``ferminet`` command line in ``argv`` (default ``sys.argv``) with the
  optimizer, iteration count and paths replaced; the inference run continues the
  final checkpoint in ``save_path`` and writes inference_stats.csv beside it.
  """
  argv = list(sys.argv if argv is None else argv)
  new = [
    '--config.optim.optimizer=none',
    f'--config.optim.iterations={iterations}',
    f'--config.log.save_path={shlex.quote(str(save_path))}',
  ]
  if not argv or pathlib.Path(argv[0]).name != 'ferminet':
    return f'the same config with {" ".join(a.removeprefix("--config.") for a in new)}'
  kept, skip = ['ferminet'], False
  for arg in argv[1:]:
    if skip:
      skip = False
      continue
    key = arg.removeprefix('--config.').split('=', 1)[0]
    if arg.startswith('--config.') and key in _INFERENCE_KEYS:
      skip = '=' not in arg  # the value is the next argument
      continue
    kept.append(shlex.quote(arg))
  return ' '.join(kept + new)


class _Recorder:
  """Statistics of iterations, fetched from the devices in batches; process 0 writes the CSV.

  Writes a row for every ``every``-th step (``log.stats_frequency``; steps divisible
  by it, as the reference). Keeps this segment's energies (every process, every step)
  and counts rolled-back (non-finite) iterations: ``failures`` in a row and in total.
  """

  def __init__(
    self,
    csv_path: pathlib.Path,
    first_step: int,
    every: int = 1,
    observed: tuple[str, ...] = (),
    files: dict[str, Any] | None = None,
  ):
    main = parallel.is_main()
    self.observed = observed
    self.files = files or {}  # observables written to files of their own, every step
    self.columns = _observable_columns(observed)
    self.writer = (
      writers.StatsWriter(csv_path, first_step=first_step, observables=self.columns)
      if main
      else None
    )
    self.every = every
    self.pending: list[tuple[int, dict[str, jax.Array]]] = []
    self.energies: list[float] = []
    self.failures = 0  # consecutive rolled-back iterations, up to the last flush
    self.total_failures = 0
    self.first_failure = -1  # first step of the current run of failures
    self.first_nonfinite = -1  # first rolled-back step of this segment

  def add(self, step: int, stats: dict[str, jax.Array]) -> None:
    self.pending.append((step, stats))

  def flush(self) -> None:
    """Fetches the pending statistics (one host synchronisation) and writes them."""
    for step, stats in jax.device_get(self.pending):
      ok = bool(stats['ok'][0])
      energy = float(stats['energy'][0])
      self.energies.append(energy)
      if self.writer is not None and step % self.every == 0:
        self.writer.write(
          step,
          energy,
          float(stats['pmove'][0]),
          float(stats['variance'][0]),
          rolled_back=not ok,
          observed=self._row(stats.get('observables')),
        )
      elif self.writer is not None:
        self.writer.observe(energy)  # ewmean follows every step, as in the reference
      for name, file in self.files.items():
        file.write(step, stats['observables'][name][0])
      if ok:
        self.failures = 0
      else:
        self.first_failure = step if self.failures == 0 else self.first_failure
        self.first_nonfinite = step if self.total_failures == 0 else self.first_nonfinite
        self.failures += 1
        self.total_failures += 1
    self.pending.clear()
    for file in self.files.values():
      file.flush()
    if self.writer is not None:
      self.writer.flush()

  def _row(self, values: dict[str, Any] | None) -> dict[str, float]:
    """The observable columns of one step from the estimators' means (device 0's copy)."""
    if not values:
      return {}
    row = {}
    for name in (n for n in self.observed if observables.OBSERVABLES[n].columns):
      flat = np.asarray(values[name][0]).reshape(-1)
      row.update(zip(observables.OBSERVABLES[name].columns, map(float, flat), strict=True))
    if 'dipole_x' in row:  # |⟨μ⟩| of this step's walkers
      moment = np.array([row['dipole_x'], row['dipole_y'], row['dipole_z']])
      row['dipole_debye'] = float(observables.to_debye(np.linalg.norm(moment)))
    return row

  def close(self) -> None:
    for file in self.files.values():
      file.close()
    if self.writer is not None:
      self.writer.close()

  def line(self) -> str:
    if self.writer is None or not self.writer.last:
      return ''
    last = self.writer.last
    text = (
      f'E {last["energy"]:.6f} | ewmean {self.writer.ewmean or float("nan"):.6f} | '
      f'var {last["variance"]:.4f} | pmove {last["pmove"]:.2f}'
    )
    for column, label in (('s2', 'S2'), ('dipole_debye', 'dipole D')):
      if column in last:
        text += f' | {label} {last[column]:.3f}'
    return text + (f' | rolled back {self.total_failures}' if self.total_failures else '')


def _observable_columns(observed: tuple[str, ...]) -> tuple[str, ...]:
  """The statistics-file columns of the observables ``observed``; the dipole adds
  dipole_debye, the magnitude of each step's mean dipole in debye."""
  columns = observables.columns(observed)
  return columns + (('dipole_debye',) if 'dipole' in observed else ())


def _observable_files(run: Run, first_step: int) -> dict[str, Any]:
  """Process 0's writers of the observables written to files of their own (the density
  matrix: density_matrix.npy, or inference_density_matrix.npy), continuing at first_step."""
  if not parallel.is_main() or not run.observed:
    return {}
  dtype = np.float64 if run.cfg.debug.float64 else np.float32
  return observables.open_files(
    run.observed, run.system, run.cfg.observables, run.save_path, first_step, run.inference, dtype
  )


def agreement_interval(seconds_per_iteration: float) -> int:
  """Iterations between fetches (and, with several processes, agreements on signals and
  saves): STATS_BATCH, fewer when that would take longer than AGREE_SECONDS."""
  if not seconds_per_iteration > 0:
    return STATS_BATCH
  return max(1, min(STATS_BATCH, int(AGREE_SECONDS / seconds_per_iteration)))


def _remedy(cfg: ml_collections.ConfigDict) -> str:
  """What to change after non-finite steps: the learning rate, and the damping of the
  optimizer in use if it has one."""
  name = cfg.optim.optimizer
  damping = f' or raise optim.{name}.damping' if name in ('kfac', 'spring') else ''
  return f'Lower optim.lr.rate{damping}'


def optimize(run: Run, state: TrainState, csv_path: pathlib.Path) -> tuple[TrainState, list[float]]:
  """Iterates until ``optim.iterations``, writing statistics and periodic checkpoints.

  Returns the final state and this segment's energies (Ha). With one process,
  signals and the save timer are looked at after every iteration; with several,
  the processes agree on them (so that all stop or save at the same iteration) at
  every fetch of the statistics: after the first iteration, then every
  STATS_BATCH iterations or AGREE_SECONDS, whichever is sooner (the slowest
  process's time per iteration sets the count, so all agree at the same one).
  Inference runs save their own checkpoints the same way.

  Raises:
    errors.Interrupted: after SIGTERM/SIGINT, once the state is saved.
    errors.NonFiniteError: after ``optim.max_nonfinite_steps`` rolled-back
      iterations in a row (never with ``optim.reset_if_nan``), or after the first
      one with ``debug.check_nan`` (which then fetches statistics every iteration),
      once the last finite state is saved.
  """
  cfg = run.cfg
  total = cfg.optim.iterations
  single = parallel.process_count() == 1
  files = _observable_files(run, state.step)
  recorder = _Recorder(csv_path, state.step, cfg.log.stats_frequency, run.observed, files)
  label = 'inference' if run.inference else 'train'
  progress = writers.Progress(label, total, start=state.step, enabled=parallel.is_main())
  last_save = last_agree = time.monotonic()
  interval = 1  # the first agreement comes after the first (compiling) iteration
  stop = False
  try:
    while state.step < total and not stop:
      state, stats = iteration(run, state)
      run.watchdog.track(f'{label} step {state.step}', stats['energy'])
      recorder.add(state.step - 1, stats)
      save_due = time.monotonic() - last_save > 60 * cfg.log.save_frequency
      signalled = run.stop.requested is not None
      agree = len(recorder.pending) >= interval or state.step >= total or cfg.debug.check_nan
      if not (agree or (single and (progress.due(state.step) or save_due or signalled))):
        continue
      done = len(recorder.pending)
      recorder.flush()
      now = time.monotonic()
      (stop, save_due), seconds = parallel.agree((signalled, save_due), (now - last_agree) / done)
      interval, last_agree = agreement_interval(seconds), now
      progress.update(state.step, recorder.line())
      if cfg.debug.check_nan and recorder.total_failures:
        where = save(run, state)
        raise errors.NonFiniteError(
          f'debug.check_nan: step {recorder.first_nonfinite} gave a non-finite energy or '
          f'state; it was rolled back and the last finite state is saved in {where}. '
          f'{_remedy(cfg)}, then rerun to continue'
        )
      if not cfg.optim.reset_if_nan and recorder.failures >= cfg.optim.max_nonfinite_steps:
        where = save(run, state)
        raise errors.NonFiniteError(
          f'{recorder.failures} iterations in a row (from step {recorder.first_failure}) '
          f'gave a non-finite energy or state and were rolled back; the last finite '
          f'state is saved in {where}. {_remedy(cfg)}, then rerun to continue'
        )
      if save_due and not stop:
        save(run, state)
        last_save = time.monotonic()
    recorder.flush()
  finally:
    recorder.close()
  if stop:
    where = save(run, state)
    name = run.stop.name or 'a signal to another process'
    raise errors.Interrupted(
      f'stopped by {name} after step {state.step}; saved {where}; '
      'rerun the same command to continue',
      run.stop.requested or signal.SIGTERM,
    )
  return state, recorder.energies


def run(cfg: ml_collections.ConfigDict) -> Result:
  """Runs a whole VMC optimisation (or inference with optimizer 'none').

  SIGTERM or SIGINT stops it cleanly: the current iteration finishes, a
  checkpoint is written and errors.Interrupted is raised.
  """
  r = setup(cfg)
  csv_path = stats_csv(r)
  with r.stop, r.watchdog:
    state = start(r)
    state, energies = optimize(r, state, csv_path)
    save(r, state, final=True)
  return summarize(r, csv_path, state, energies)


train = run  # the reference's name: train.train(cfg)
