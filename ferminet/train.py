"""One VMC run as a few named steps: setup → (restore | pretrain → burn in) → iterate → summary.

Layout: parameters, optimizer state and the MCMC width are replicated over
local devices (leading axis), walkers are sharded (D, walkers per device, 3N);
the step and the PRNG key live on the host. ``iteration`` is the whole
per-step work: a pmapped Metropolis sweep (which also adapts the width), then
an optimizer step on the new walkers; it never waits for the devices.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import pathlib
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ferminet import (
  analysis,
  checkpoint,
  errors,
  hamiltonian,
  loss,
  mcmc,
  networks,
  optimizers,
  parallel,
  pretrain,
  scf,
  writers,
)
from ferminet import config as config_lib
from ferminet import system as system_lib

# Iterations whose statistics are fetched from the devices together: the host
# never waits for the devices between these fetches.
STATS_BATCH = 20


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


@dataclasses.dataclass
class Run:
  """The fixed pieces of a run, built once by :func:`setup`."""

  cfg: ml_collections.ConfigDict
  system: system_lib.System
  network: networks.Network
  optimizer: optimizers.Optimizer
  sample: Any  # pmapped (params, walkers, keys, width, adapt) -> (walkers, pmove, width)
  save_path: pathlib.Path
  inference: bool


def _save_path(cfg: ml_collections.ConfigDict) -> pathlib.Path:
  if cfg.log.save_path:
    path = pathlib.Path(cfg.log.save_path)
  else:
    stamp = datetime.datetime.now().strftime('%Y_%m_%d_%H_%M_%S')
    path = pathlib.Path(f'ferminet_{stamp}')
  try:
    path.mkdir(parents=True, exist_ok=True)
    probe = path / '.write_test'
    probe.write_text('')
    probe.unlink()
  except OSError as e:
    raise errors.ConfigError(f'cannot write to log.save_path {str(path)!r}: {e.strerror}') from None
  return path


def setup(cfg: ml_collections.ConfigDict) -> Run:
  """Resolves the config and builds the network, local energy, loss, optimizer and sampler."""
  if cfg.debug.float64:
    jax.config.update('jax_enable_x64', True)
  cfg = config_lib.resolve(cfg)
  system = config_lib.system_of(cfg)
  n_dev = parallel.device_count()
  if cfg.batch_size % n_dev:
    raise errors.ConfigError(
      f'batch_size {cfg.batch_size} is not divisible by the {n_dev} local devices'
    )
  network = networks.make(cfg.network, system)
  local_energy = hamiltonian.make_local_energy(
    network.log_abs, system, cfg.optim.laplacian, cfg.optim.forward_laplacian_sparsity
  )
  vmc_loss = loss.make_loss(
    network.log_abs,
    local_energy,
    cfg.optim.clip_local_energy,
    cfg.optim.clip_median,
    cfg.optim.center_at_clip,
    cfg.optim.max_vmap_batch_size,
  )
  optimizer = optimizers.make(vmc_loss, cfg)

  def log_prob(params, x):  # log |ψ|² of one walker
    return 2.0 * network.log_abs(params, x)

  metropolis = mcmc.make_step(log_prob, cfg.mcmc.steps)
  batched_log_prob = jax.vmap(log_prob, in_axes=(None, 0))
  target = cfg.mcmc.target_acceptance

  def local_sample(params, walkers, key, width, adapt):
    walkers, _, pmove = metropolis(params, walkers, batched_log_prob(params, walkers), key, width)
    pmove = parallel.pmean(pmove)
    width = jnp.where(adapt, mcmc.adapt_width(width, pmove, target), width)
    return walkers, pmove, width

  sample = jax.pmap(local_sample, axis_name=parallel.AXIS, in_axes=(0, 0, 0, 0, None))
  save_path = _save_path(cfg)
  write_config(cfg, save_path)
  return Run(
    cfg=cfg,
    system=system,
    network=network,
    optimizer=optimizer,
    sample=sample,
    save_path=save_path,
    inference=cfg.optim.optimizer == 'none',
  )


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
  with writers.atomic_open(path, 'w') as f:
    json.dump(cfg.to_dict(), f, indent=1, default=encode)
  return path


def _meta(run: Run, params: Any) -> dict[str, Any]:
  shapes = jax.tree.map(lambda p: tuple(np.shape(p)), params)
  return {
    'electrons': tuple(run.system.electrons),
    'charges': np.asarray(run.system.charges),
    'coords': np.asarray(run.system.coords),
    'param_shapes': str(shapes),
    'optimizer': run.cfg.optim.optimizer,
  }


def fresh_state(run: Run) -> TrainState:
  """New parameters and walkers (before pretraining)."""
  key = jax.random.PRNGKey(run.cfg.debug.seed)
  key, k_params, k_walkers = jax.random.split(key, 3)
  params = parallel.replicate(run.network.init(k_params))
  walkers = mcmc.init_walkers(k_walkers, run.system, run.cfg.batch_size, run.cfg.mcmc.init_width)
  walkers = parallel.shard(walkers.astype(jax.tree.leaves(params)[0].dtype))
  width = parallel.replicate(jnp.asarray(run.cfg.mcmc.move_width, walkers.dtype))
  return TrainState(params, None, walkers, width, 0, key)


def init_optimizer(run: Run, state: TrainState) -> TrainState:
  """A fresh optimizer state. Leaves ``state.key`` as it is, so that a restored
  run draws the same random numbers as an uninterrupted one."""
  keys = parallel.device_keys(jax.random.fold_in(state.key, 1))
  return state._replace(opt_state=run.optimizer.init(state.params, keys, state.walkers))


def restore(run: Run) -> tuple[TrainState, str] | None:
  """The state from the newest checkpoint in save_path, else in log.restore_path."""
  for where in (run.save_path, run.cfg.log.restore_path):
    if not where:
      continue
    path = pathlib.Path(where)
    if where == run.cfg.log.restore_path and not path.exists():
      raise errors.ConfigError(f'log.restore_path {where!r} does not exist')
    data = checkpoint.load(path) if path.is_file() else checkpoint.load_latest(path)
    if data is None:
      if where == run.cfg.log.restore_path:
        raise errors.ConfigError(f'log.restore_path {where!r} holds no checkpoint')
      continue
    return _state_from(run, data, str(where)), str(where)
  return None


def _state_from(run: Run, data: dict[str, Any], where: str) -> TrainState:
  template = run.network.init(jax.random.PRNGKey(0))
  expected = _meta(run, template)
  expected.pop('optimizer')
  checkpoint.check_compatible(data['meta'], expected, where)
  dtype = jax.tree.leaves(template)[0].dtype
  params = parallel.replicate(jax.tree.map(lambda a: jnp.asarray(a, dtype), data['params']))
  walkers = np.asarray(data['walkers'])
  if walkers.shape[0] != run.cfg.batch_size:
    # Resample: keep the first walkers or repeat them to the new batch size.
    walkers = walkers[np.arange(run.cfg.batch_size) % walkers.shape[0]]
  state = TrainState(
    params=params,
    opt_state=None,
    walkers=parallel.shard(jnp.asarray(walkers, dtype)),
    width=parallel.replicate(jnp.asarray(data['width'], dtype)),
    step=int(data['step']),
    key=jnp.asarray(data['key']),
  )
  if run.inference:
    return state._replace(step=0)
  state = init_optimizer(run, state)
  leaves, treedef = jax.tree.flatten(state.opt_state)
  saved = data.get('opt_state')
  if (
    data['meta'].get('optimizer') == run.cfg.optim.optimizer
    and saved is not None
    and [np.shape(s) for s in saved] == [np.shape(x)[1:] for x in leaves]
  ):
    restored = [
      parallel.replicate(jnp.asarray(s, x.dtype)) for s, x in zip(saved, leaves, strict=True)
    ]
    state = state._replace(opt_state=jax.tree.unflatten(treedef, restored))
  else:
    print(f'note: optimizer state not restored (checkpoint from {data["meta"].get("optimizer")})')
  return state


def save(run: Run, state: TrainState) -> pathlib.Path:
  """Writes a checkpoint of ``state`` (host copies; device-count independent)."""
  params = parallel.first(state.params)
  opt_leaves = None
  if state.opt_state is not None:  # every leaf is replicated over devices: keep one copy
    opt_leaves = [np.asarray(x) for x in jax.tree.leaves(parallel.first(state.opt_state))]
  return checkpoint.save(
    run.save_path,
    {
      'step': state.step,
      'params': params,
      'opt_state': opt_leaves,
      'walkers': np.asarray(parallel.unshard(state.walkers)),
      'width': float(state.width[0]),
      'key': np.asarray(state.key),
      'meta': _meta(run, params),
    },
  )


def run_pretrain(run: Run, state: TrainState) -> TrainState:
  """Fits the network orbitals to Hartree–Fock for ``pretrain.iterations`` steps."""
  cfg = run.cfg
  if cfg.pretrain.iterations == 0:
    return state
  hf = scf.hartree_fock(run.system, cfg.pretrain.basis, cfg.pretrain.hf_method)
  print(f'Hartree-Fock ({hf.method}/{cfg.pretrain.basis}): {hf.energy:.6f} Ha', flush=True)
  init_opt, step = pretrain.make_step(
    run.network,
    hf,
    tuple(run.system.electrons),
    cfg.network.full_det,
    cfg.pretrain.lr,
    cfg.pretrain.scf_fraction,
    cfg.mcmc.steps,
    cfg.mcmc.target_acceptance,
  )
  opt_state = init_opt(state.params)
  params, walkers, width, key = state.params, state.walkers, state.width, state.key
  progress = writers.Progress('pretrain', cfg.pretrain.iterations)
  for i in range(cfg.pretrain.iterations):
    key, sub = jax.random.split(key)
    params, opt_state, walkers, width, fit, pmove = step(
      params, opt_state, walkers, parallel.device_keys(sub), width
    )
    if progress.due(i + 1):  # the only host synchronisation
      progress.update(i + 1, f'orbital MSE {float(fit[0]):.3e} | pmove {float(pmove[0]):.2f}')
  return state._replace(params=params, walkers=walkers, width=width, key=key)


def burn_in(run: Run, state: TrainState, iterations: int) -> TrainState:
  """Metropolis sweeps with fixed parameters, adapting the width."""
  walkers, width, key = state.walkers, state.width, state.key
  progress = writers.Progress('burn-in', iterations)
  for i in range(iterations):
    key, sub = jax.random.split(key)
    walkers, pmove, width = run.sample(
      state.params, walkers, parallel.device_keys(sub), width, True
    )
    if progress.due(i + 1):
      progress.update(i + 1, f'pmove {float(pmove[0]):.2f} | width {float(width[0]):.3f} bohr')
  return state._replace(walkers=walkers, width=width, key=key)


def iteration(run: Run, state: TrainState) -> tuple[TrainState, dict[str, jax.Array]]:
  """One VMC iteration: sample, then update parameters on the new walkers.

  Nothing here waits for the devices: the statistics are returned as device
  arrays (replicated, (devices,)) and fetched in batches by :func:`run`.
  """
  key, k_mcmc, k_opt = jax.random.split(state.key, 3)
  adapt = (state.step + 1) % run.cfg.mcmc.adapt_frequency == 0
  walkers, pmove, width = run.sample(
    state.params, state.walkers, parallel.device_keys(k_mcmc), state.width, adapt
  )
  params, opt_state, energy, variance = run.optimizer.step(
    state.params, state.opt_state, parallel.device_keys(k_opt), walkers
  )
  stats = {'energy': energy, 'variance': variance, 'pmove': pmove}
  return TrainState(params, opt_state, walkers, width, state.step + 1, key), stats


def start(run: Run) -> TrainState:
  """Restored state, or a fresh one after pretraining and burn-in."""
  restored = restore(run)
  if restored is not None:
    state, where = restored
    print(f'restored step {state.step} from {where}', flush=True)
    return state
  state = fresh_state(run)
  state = run_pretrain(run, state)
  state = burn_in(run, state, run.cfg.mcmc.burn_in)
  return state if run.inference else init_optimizer(run, state)


def summarize(run: Run, csv_path: pathlib.Path, state: TrainState) -> Result:
  """Reblocked energy over the second half of the run, and the reference if known."""
  energies = np.array([float(r['energy']) for r in writers.read_rows(csv_path)])
  stats = analysis.reblock(energies[len(energies) // 2 :])
  ref = analysis.reference_for(run.system, run.cfg.system.name)
  print(
    f'energy_Ha: {stats.mean:.6f} +/- {stats.stderr:.6f} '
    f'(reblocked, last {stats.n} iterations, block {stats.block_size})'
  )
  if ref is not None:
    error = (stats.mean - ref[0]) * 1000
    print(
      f'reference_Ha: {ref[0]:.6f} ({ref[1]}); error_mHa: {error:.2f} +/- {stats.stderr * 1000:.2f}'
    )
  print(f'outputs: {run.save_path}', flush=True)
  return Result(stats.mean, stats.stderr, ref[0] if ref else None, run.save_path, state)


def run(cfg: ml_collections.ConfigDict) -> Result:
  """Runs a whole VMC optimisation (or inference with optimizer 'none')."""
  r = setup(cfg)
  cfg = r.cfg
  state = start(r)
  csv_path = r.save_path / ('inference_stats.csv' if r.inference else 'train_stats.csv')
  stats_writer = writers.StatsWriter(csv_path, first_step=state.step)
  total = cfg.optim.iterations
  progress = writers.Progress('inference' if r.inference else 'train', total, start=state.step)
  last_save = time.monotonic()
  pending: list[tuple[int, dict[str, jax.Array]]] = []

  def flush():
    """Fetches the pending statistics (one host synchronisation) and writes them."""
    for step, stats in jax.device_get(pending):
      stats_writer.write(step, float(stats['energy'][0]), float(stats['pmove'][0]),
                         float(stats['variance'][0]))  # fmt: skip
    pending.clear()
    stats_writer.flush()

  try:
    while state.step < total:
      state, stats = iteration(r, state)
      pending.append((state.step - 1, stats))
      save_due = not r.inference and time.monotonic() - last_save > 60 * cfg.log.save_frequency
      if len(pending) >= STATS_BATCH or progress.due(state.step) or save_due:
        flush()
        last = stats_writer.last
        progress.update(
          state.step,
          f'E {last["energy"]:.6f} | ewmean {stats_writer.ewmean:.6f} | '
          f'var {last["variance"]:.4f} | pmove {last["pmove"]:.2f}',
        )
      if save_due:
        save(r, state)
        last_save = time.monotonic()
    flush()
  finally:
    stats_writer.close()
  if not r.inference:
    save(r, state)
  return summarize(r, csv_path, state)


train = run  # the reference's name: train.train(cfg)
