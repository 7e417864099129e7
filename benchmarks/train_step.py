"""Where a training iteration's time goes: the jitted pieces, host syncs, float32 vs float64.

    python benchmarks/train_step.py [--system N2] [--batch 64] [--iterations 5]

Times, with the default network, one process per precision:
- ``sample_s``: the pmapped Metropolis sweep (mcmc.steps steps, width adapted on device);
- ``optimizer_s``: one KFAC step (local energies, gradients, curvature, update);
- ``guard_s``: the rollback guard of train.iteration alone (copying parameters and KFAC
  state, which kfac-jax donates, and keeping the old state where the new one is not finite);
- ``iteration_s``: train.iteration as the run loop calls it (no host synchronisation);
- ``iteration_synced_s``: the same, but fetching energy and acceptance to the host after
  every iteration, as a naive loop does.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time


def measure(system: str, batch: int, iterations: int, float64: bool) -> dict:
  import jax

  from ferminet import config, loss, molecules, optimizers, parallel, train

  cfg = config.default()
  if system in molecules.names():
    cfg.system.molecule_name = system
  else:
    cfg.system.atom = system
  cfg.batch_size = batch
  cfg.debug.float64 = float64
  cfg.pretrain.iterations = 0
  cfg.mcmc.burn_in = 0
  cfg.log.save_path = tempfile.mkdtemp(prefix='ferminet_step_')
  run = train.setup(cfg)
  state = train.init_optimizer(run, train.fresh_state(run))

  def timed(fn, n=iterations):
    jax.block_until_ready(fn())  # compile
    start = time.perf_counter()
    for _ in range(n):
      out = fn()
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / n

  keys = parallel.same_keys(jax.random.PRNGKey(0))
  key = jax.random.PRNGKey(0)
  sample_s = timed(lambda: run.sample(state.params, state.walkers, key, run.ids, state.width, True))
  box = {'state': state}

  def optimizer_step():
    s = box['state']
    batch = loss.Batch(s.walkers, run.ids)
    params, opt_state, energy, _ = run.optimizer.step(s.params, s.opt_state, keys, batch)
    box['state'] = s._replace(params=params, opt_state=opt_state)
    return energy

  optimizer_s = timed(optimizer_step)

  def guard():
    s = box['state']
    new = optimizers.copy_tree((s.params, s.opt_state, s.walkers, s.width))
    kept, ok = run.keep_finite(new, (s.params, s.opt_state, s.walkers, s.width), ok_energy)
    return ok

  ok_energy = parallel.replicate(jax.numpy.zeros((), state.walkers.dtype))
  guard_s = timed(guard)

  def loop(sync):
    state, stats = train.iteration(run, box['state'])
    box['state'] = state
    if sync:
      float(stats['energy'][0]), float(stats['pmove'][0])
    return state.params

  iteration_s = timed(lambda: loop(False))
  synced_s = timed(lambda: loop(True))
  return {
    'system': system,
    'batch': batch,
    'float64': float64,
    'sample_s': sample_s,
    'optimizer_s': optimizer_s,
    'guard_s': guard_s,
    'iteration_s': iteration_s,
    'iteration_synced_s': synced_s,
    'jax_version': jax.__version__,
    'device': jax.devices()[0].device_kind,
  }


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--system', default='N2')
  parser.add_argument('--batch', type=int, default=64)
  parser.add_argument('--iterations', type=int, default=5)
  parser.add_argument('--float64', action='store_true', help=argparse.SUPPRESS)
  parser.add_argument('--one', action='store_true', help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.one:
    print(json.dumps(measure(args.system, args.batch, args.iterations, args.float64)))
    return
  rows = []
  for float64 in (False, True):
    cmd = [sys.executable, __file__, '--one', '--system', args.system, '--batch', str(args.batch),
           '--iterations', str(args.iterations)] + (['--float64'] if float64 else [])  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
  print(f'{args.system}, batch {args.batch}, default network, {rows[0]["device"]}')
  print(
    f'{"precision":<10}{"sample s":>10}{"kfac s":>10}{"guard s":>10}{"iter s":>10}{"synced s":>10}'
  )
  for r in rows:
    print(
      f'{"float64" if r["float64"] else "float32":<10}{r["sample_s"]:>10.3f}'
      f'{r["optimizer_s"]:>10.3f}{r["guard_s"]:>10.4f}{r["iteration_s"]:>10.3f}'
      f'{r["iteration_synced_s"]:>10.3f}'
    )


if __name__ == '__main__':
  main()
