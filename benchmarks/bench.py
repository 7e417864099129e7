"""Speed benchmark: compile time, training iteration time, local-energy throughput, memory.

    python benchmarks/bench.py            # Li, N2, C2H4, bicyclobutane; N2, bicyclobutane Psiformer
    python benchmarks/bench.py --quick    # smaller batches, <= 5 minutes on 2 CPU cores
    python benchmarks/bench.py --cases Li --name mylaptop

Each case runs in its own process (so peak memory is per case) with the
default network (cfg.network) and float32. Figures per case:

- ``compile_s``: the first two training iterations minus two steady ones (MCMC +
  optimizer);
- ``iteration_s`` / ``iteration_hessian_s``: seconds per full training
  iteration (``mcmc.steps`` Metropolis steps + one KFAC step) with the
  default ``laplacian='forward'`` and with ``hessian``, measured in the same
  process;
- ``local_energy_per_s_*``: local-energy evaluations per second (jitted, over a
  batch, in the chunks training uses: ``local_energy_chunk_*``, 0 = all at once)
  for ``forward`` (the network's own forward Laplacian, the ``ops.Stacks`` view),
  ``hessian`` and, in full runs, ``folx`` (folx's generic forward Laplacian): the
  median of 5 timings (3 with --quick), taken in turns;
- ``peak_memory_mb``: peak device memory (GPU) or peak resident memory of the
  process (CPU).

Prints a table and writes benchmarks/results/<name>.json (keys are stable).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import resource
import subprocess
import sys
import tempfile
import time

# case -> system settings, train batch (full, quick), local-energy batch (full, quick),
# network overrides ('tiny' is for the smoke test only).
CASES = {
  'Li': ({'atom': 'Li'}, (256, 64), (256, 64), {}),
  'N2': ({'molecule_name': 'N2', 'bond_length': 2.068}, (128, 32), (64, 16), {}),  # paper, bohr
  'C2H4': ({'molecule_name': 'C2H4'}, (64, 16), (32, 8), {}),
  'bicyclobutane': ({'molecule_name': 'bicyclobutane'}, (32, 8), (8, 4), {}),
  'tiny': ({'atom': 'Li'}, (4, 4), (4, 4), {'determinants': 1, 'hidden_dims': ((8, 4),)}),
  # The Psiformer with the reference's settings (4 layers, 4 heads of 64, MLP 256,
  # simple_ee Jastrow).
  'N2_psiformer': (
    {'molecule_name': 'N2', 'bond_length': 2.068},
    (128, 32),
    (64, 16),
    {'network_type': 'psiformer'},
  ),
  'bicyclobutane_psiformer': (
    {'molecule_name': 'bicyclobutane'},
    (32, 8),
    (8, 4),
    {'network_type': 'psiformer'},
  ),
}
DEFAULT_CASES = 'Li,N2,C2H4,bicyclobutane,N2_psiformer,bicyclobutane_psiformer'
TIMED_ITERATIONS = {False: 5, True: 2}
# Untimed iterations (compilation). Until parallel.on_devices, jax 0.10.2 compiled the
# KFAC step a second time in the second iteration (about 4 s at N2), which a single
# warm-up iteration would count as steady time; two stay, to be safe.
WARMUP_ITERATIONS = 2


def _config(system, batch, laplacian, network=None):
  from ferminet import config

  cfg = config.default()
  for key, value in system.items():
    cfg.system[key] = value
  for key, value in (network or {}).items():
    if key == 'hidden_dims':
      cfg.network.ferminet.hidden_dims = value
    else:
      cfg.network[key] = value
  cfg.batch_size = batch
  cfg.optim.laplacian = laplacian
  cfg.pretrain.iterations = 0
  cfg.mcmc.burn_in = 0
  cfg.log.save_path = tempfile.mkdtemp(prefix='ferminet_bench_')
  return cfg


def _time_training(system, batch, laplacian, iterations, network):
  import jax

  from ferminet import train

  run = train.setup(_config(system, batch, laplacian, network))
  state = train.init_optimizer(run, train.fresh_state(run))
  start = time.perf_counter()
  for _ in range(WARMUP_ITERATIONS):
    state, _ = train.iteration(run, state)
    jax.block_until_ready(state)
  first = time.perf_counter() - start
  start = time.perf_counter()
  for _ in range(iterations):
    state, stats = train.iteration(run, state)
  jax.block_until_ready((state, stats))
  steady = (time.perf_counter() - start) / iterations
  return first, steady


def _local_energy_rates(system, batch, laplacians, network, repeats=5):
  """Local energies per second and chunk for each laplacian, timings interleaved.

  All are compiled first; then each repeat times every method once, so a slow
  moment of a shared machine hits them alike. The rate is from the median time.
  """
  import jax

  from ferminet import config, hamiltonian, mcmc, networks, train

  fns, chunks = {}, {}
  for laplacian in laplacians:
    cfg = config.resolve(_config(system, batch, laplacian, network))
    sys_ = config.system_of(cfg)
    net = networks.make(cfg.network, sys_)
    energy = hamiltonian.make_local_energy(
      net.log_abs,
      sys_,
      laplacian,
      cfg.optim.forward_laplacian_sparsity,
      net.laplacian,  # as train.setup
      signed=net.apply,
    )
    chunks[laplacian] = train.local_energy_chunk(cfg, sys_)  # as training evaluates them
    fns[laplacian] = jax.jit(hamiltonian.batch_local_energy(energy, chunks[laplacian]))
  params = net.init(jax.random.PRNGKey(0))
  walkers = mcmc.init_walkers(jax.random.PRNGKey(1), sys_, batch, 1.0)
  key, ids = jax.random.PRNGKey(2), jax.numpy.arange(batch)
  for fn in fns.values():
    jax.block_until_ready(fn(params, key, walkers, ids))
  times = {laplacian: [] for laplacian in laplacians}
  for _ in range(repeats):  # the median: shared machines have slow moments
    for laplacian, fn in fns.items():
      start = time.perf_counter()
      jax.block_until_ready(fn(params, key, walkers, ids))
      times[laplacian].append(time.perf_counter() - start)
  rates = {k: batch / sorted(t)[repeats // 2] for k, t in times.items()}
  return rates, chunks


def _peak_memory_mb() -> float:
  import jax

  stats = jax.devices()[0].memory_stats() if jax.devices()[0].platform != 'cpu' else None
  if stats and 'peak_bytes_in_use' in stats:
    return stats['peak_bytes_in_use'] / 2**20
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def run_case(name: str, quick: bool) -> dict:
  """All figures of one case (called in a fresh process)."""
  import jax

  system, train_batch, le_batch, network = CASES[name]
  tb, lb = train_batch[quick], le_batch[quick]
  iterations = TIMED_ITERATIONS[quick]
  first, steady = _time_training(system, tb, 'forward', iterations, network)
  _, steady_hessian = _time_training(system, tb, 'hessian', iterations, network)
  # folx, the generic forward Laplacian, only in full runs (--quick keeps to 5 minutes).
  laplacians = ['forward', 'hessian'] + ([] if quick else ['folx'])
  rates, chunks = _local_energy_rates(system, lb, laplacians, network, 3 if quick else 5)
  from ferminet import config, networks

  resolved = config.resolve(_config(system, tb, 'forward', network))
  n_el = sum(config.system_of(resolved).electrons)
  cfg_network = resolved.network
  return {
    'case': name,
    'electrons': n_el,
    'train_batch': tb,
    'local_energy_batch': lb,
    'compile_s': first - WARMUP_ITERATIONS * steady,
    'iteration_s': steady,
    'iteration_hessian_s': steady_hessian,
    'iteration_speedup': steady_hessian / steady,
    'local_energy_per_s_forward': rates['forward'],
    'local_energy_per_s_hessian': rates['hessian'],
    'local_energy_speedup': rates['forward'] / rates['hessian'],
    'network': networks.describe(cfg_network),
    'local_energy_per_s_folx': rates.get('folx'),  # None with --quick
    'local_energy_chunk_forward': chunks['forward'],  # walkers per chunk, 0: all at once
    'local_energy_chunk_hessian': chunks['hessian'],
    'peak_memory_mb': _peak_memory_mb(),
    'device': jax.devices()[0].device_kind,
  }


def main():
  parser = argparse.ArgumentParser(description='ferminet speed benchmark')
  parser.add_argument(
    '--quick', action='store_true', help='small batches (<= 5 min on 2 CPU cores)'
  )
  parser.add_argument('--cases', default=DEFAULT_CASES, help=f'from {", ".join(CASES)}')
  parser.add_argument('--name', default='', help='results/<name>.json (default: device and date)')
  parser.add_argument('--out', default=str(pathlib.Path(__file__).parent / 'results'))
  parser.add_argument(
    '--xla-defaults',
    action='store_true',
    help='keep XLA defaults: do not add config.CPU_XLA_FLAGS as the ferminet command does',
  )
  parser.add_argument('--case', help=argparse.SUPPRESS)  # internal: one case in this process
  args = parser.parse_args()
  if args.case:
    print(json.dumps(run_case(args.case, args.quick)))
    return

  from ferminet import config

  env = dict(os.environ)  # the cases run as the ferminet command runs training
  if not args.xla_defaults:
    config.apply_cpu_xla_flags(env)
  results = []
  for name in args.cases.split(','):
    if name not in CASES:
      parser.error(f'unknown case {name!r}; choose from {", ".join(CASES)}')
    cmd = [sys.executable, __file__, '--case', name] + (['--quick'] if args.quick else [])
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode:
      sys.exit(f'case {name} failed:\n{out.stderr[-3000:]}')
    results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    r = results[-1]
    print(f'{name}: {r["iteration_s"]:.3f} s/iteration', file=sys.stderr, flush=True)

  header = (
    f'{"case":<14}{"e":>4}{"batch":>6}{"compile s":>10}{"s/it fwd":>10}{"s/it hess":>10}'
    f'{"speedup":>8}{"E_L/s fwd":>11}{"E_L/s hess":>11}{"speedup":>8}{"E_L/s folx":>11}'
    f'{"peak MB":>9}'
  )
  print(header)
  for r in results:
    folx = r.get('local_energy_per_s_folx')
    print(
      f'{r["case"]:<14}{r["electrons"]:>4}{r["train_batch"]:>6}{r["compile_s"]:>10.1f}'
      f'{r["iteration_s"]:>10.3f}{r["iteration_hessian_s"]:>10.3f}{r["iteration_speedup"]:>8.2f}'
      f'{r["local_energy_per_s_forward"]:>11.1f}{r["local_energy_per_s_hessian"]:>11.1f}'
      f'{r["local_energy_speedup"]:>8.2f}{f"{folx:.1f}" if folx else "-":>11}'
      f'{r["peak_memory_mb"]:>9.0f}'
    )
  write_results(results, args.name, args.quick, pathlib.Path(args.out), env.get('XLA_FLAGS', ''))


def write_results(
  results: list[dict], name: str, quick: bool, out: pathlib.Path, xla_flags: str = ''
) -> pathlib.Path:
  """Writes out/<name>.json with the environment and the per-case figures."""
  import jax

  device = jax.devices()[0]
  name = name or f'{device.platform}_{datetime.date.today().isoformat()}' + (
    '_quick' if quick else ''
  )
  payload = {
    'name': name,
    'quick': quick,
    'jax_version': jax.__version__,
    'platform': device.platform,
    'device': device.device_kind,
    'device_count': jax.device_count(),
    'xla_flags': xla_flags,
    'results': results,
  }
  path = out / f'{name}.json'
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(payload, indent=2))
  print(f'wrote {path}')
  return path


if __name__ == '__main__':
  main()
