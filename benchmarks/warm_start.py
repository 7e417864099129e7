"""Warm starts across geometries against training from scratch: a LiH bond scan on CPU.

    python benchmarks/warm_start.py             # 5 bond lengths, about 15 min on 2 cores
    python benchmarks/warm_start.py --quick     # 3 bond lengths, toy lengths: a smoke test
    python benchmarks/warm_start.py --chain reference   # every structure from the first one

Every structure of the scan (LiH at ``--lengths`` bohr) is trained from scratch (HF
pretraining, ``--scratch-iterations``) with the ``ferminet`` command line. Then the scan
is trained again by warm starts (``log.init_from``): the first structure's scratch run
starts the second, whose run starts the third, and so on (``--chain previous``), or every
structure starts from the first (``--chain reference``); each warm run has
``--warm-iterations``. Same network, batch and seed for all.

For each run it reports the iterations and the wall time from launch (HF, pretraining,
compilation and burn-in included) until the trailing 100-step mean of the energy is first
within 1 mHa of the structure's long-run value: the reblocked mean of the last
``--tail`` rows of its scratch run. It also reports the final energy of both ways (the
last ``--tail`` rows of the scratch run, the second half of the warm run), their
difference in combined standard errors, and the standard error of a 100-step mean at the
end of each run (the resolution of the 1 mHa criterion). Results:
``benchmarks/results/warm_start_<date>_jax<version>[_quick].json``.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import launch  # noqa: E402

from ferminet import analysis  # noqa: E402

_n = launch.never  # a figure, or 'never' for a threshold not reached

TOLERANCE_HA = 1e-3
WINDOW = 100
NETWORK = {
  'network.determinants': 4,
  'network.ferminet.hidden_dims': '((32, 8), (32, 8))',
}


def common_args(length: float, batch: int, seed: int, run_dir: pathlib.Path) -> list[str]:
  """The ferminet flags every run of this structure shares."""
  settings = {
    'system.molecule_name': 'LiH',
    'system.bond_length': length,
    'system.units': 'bohr',
    'batch_size': batch,
    'debug.deterministic': True,  # else debug.seed is ignored
    'debug.seed': seed,
    'log.save_path': run_dir,
    **NETWORK,
  }
  args = ['--config', 'ferminet/configs/diatomic.py']
  return args + [f'--config.{key}={value}' for key, value in settings.items()]


def tail_energy(run: launch.Launch, rows: int) -> analysis.Reblocked:
  """Reblocked energy of the last ``rows`` rows."""
  return analysis.reblock(run.energy[-rows:])


def window_stderr(run: launch.Launch) -> float:
  """Standard error of a WINDOW-step mean at the end of the run (Ha): the reblocked
  error of the last 4·WINDOW rows, scaled to WINDOW rows."""
  tail = analysis.reblock(run.energy[-4 * WINDOW :])
  return tail.stderr * np.sqrt(tail.n / WINDOW)


def reached(run: launch.Launch, target: float) -> dict:
  """Iterations and seconds from launch until the trailing mean is within TOLERANCE_HA."""
  index = launch.first_within(run.energy, target, TOLERANCE_HA, WINDOW)
  if index is None:
    return {'iterations': None, 'seconds': None}
  return {'iterations': int(run.steps[index]) + 1, 'seconds': float(run.seconds[index])}


def summary(run: launch.Launch, final: analysis.Reblocked, target: float) -> dict:
  return {
    'wall_s': run.wall_s,
    'iterations': int(run.steps[-1]) + 1,
    'first_row_s': float(run.seconds[0]),
    'to_1mHa': reached(run, target),
    'final_Ha': final.mean,
    'final_stderr_Ha': final.stderr,
    'final_rows': final.n,
    'window_stderr_mHa': 1000 * window_stderr(run),
    'variance_end_Ha2': float(np.nanmean(run.variance[-WINDOW:])),
  }


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--quick', action='store_true', help='3 structures, short runs')
  parser.add_argument('--lengths', help='bond lengths in bohr, comma-separated')
  parser.add_argument('--chain', choices=('previous', 'reference'), default='previous')
  parser.add_argument('--batch', type=int, default=None, help='default 512 (--quick 128)')
  parser.add_argument('--scratch-iterations', type=int, default=None, help='default 3000')
  parser.add_argument('--warm-iterations', type=int, default=None, help='default 1000')
  parser.add_argument('--tail', type=int, default=None, help='rows of the long-run value')
  parser.add_argument('--seed', type=int, default=7)
  parser.add_argument('--workdir', type=pathlib.Path, help='keep the runs here')
  args = parser.parse_args()
  quick = args.quick
  lengths = [
    float(x)
    for x in (args.lengths or ('2.8,3.015,3.2' if quick else '2.6,2.8,3.015,3.2,3.4')).split(',')
  ]
  batch = args.batch or (128 if quick else 512)
  n_scratch = args.scratch_iterations or (400 if quick else 3000)
  n_warm = args.warm_iterations or (200 if quick else 1000)
  tail = args.tail or (200 if quick else 1000)
  extra = ['--config.pretrain.iterations', '100'] if quick else []
  workdir = args.workdir or pathlib.Path(tempfile.mkdtemp(prefix='warm_start_'))
  print(f'runs in {workdir}', flush=True)

  scratch, warm, rows = {}, {}, []
  for length in lengths:
    run_dir = workdir / 'scratch' / f'R{length}'
    cmd = common_args(length, batch, args.seed, run_dir)
    cmd += ['--config.optim.iterations', str(n_scratch), *extra]
    scratch[length] = launch.run_cli(cmd, run_dir)
    print(f'scratch R={length}: {scratch[length].wall_s:.0f} s', flush=True)
  for k, length in enumerate(lengths[1:], start=1):
    if args.chain == 'previous' and k > 1:
      source = warm[lengths[k - 1]].run_dir
    else:
      source = scratch[lengths[0]].run_dir
    run_dir = workdir / 'warm' / f'R{length}'
    cmd = common_args(length, batch, args.seed, run_dir)
    cmd += ['--config.optim.iterations', str(n_warm), '--config.log.init_from', str(source)]
    warm[length] = launch.run_cli(cmd, run_dir)
    print(f'warm R={length} from {source.name}: {warm[length].wall_s:.0f} s', flush=True)

  for length in lengths:
    s_final = tail_energy(scratch[length], tail)
    row = {'bond_length_bohr': length, 'scratch': summary(scratch[length], s_final, s_final.mean)}
    if length in warm:
      w = warm[length]
      w_final = tail_energy(w, w.energy.size // 2)
      row['warm'] = summary(w, w_final, s_final.mean)
      row['warm']['to_1mHa_of_own_final'] = reached(w, w_final.mean)
      combined = np.hypot(s_final.stderr, w_final.stderr)
      row['warm_minus_scratch_mHa'] = 1000 * (w_final.mean - s_final.mean)
      row['warm_minus_scratch_sigmas'] = float((w_final.mean - s_final.mean) / combined)
    rows.append(row)

  print(f'\nLiH scan, batch {batch}, network {NETWORK}, seed {args.seed}, chain {args.chain}')
  print(f"time to a {WINDOW}-step mean within 1 mHa of the scratch run's last {tail} rows")
  head = (
    f'{"R/bohr":>7} | {"scratch: its":>12} {"s":>6} {"E (Ha)":>20} | '
    f'{"warm: its":>9} {"s":>6} {"E (Ha)":>20} | {"warm-scratch (mHa)":>18}'
  )
  print(head)
  for r in rows:
    s = r['scratch']
    line = (
      f'{r["bond_length_bohr"]:>7} | {_n(s["to_1mHa"]["iterations"]):>12} '
      f'{_n(s["to_1mHa"]["seconds"], ".0f"):>6} '
      f'{s["final_Ha"]:>11.5f} +/- {s["final_stderr_Ha"]:.5f} | '
    )
    if 'warm' in r:
      w = r['warm']
      line += (
        f'{_n(w["to_1mHa"]["iterations"]):>9} {_n(w["to_1mHa"]["seconds"], ".0f"):>6} '
        f'{w["final_Ha"]:>11.5f} +/- {w["final_stderr_Ha"]:.5f} | '
        f'{r["warm_minus_scratch_mHa"]:>+7.2f} ({r["warm_minus_scratch_sigmas"]:+.1f} sigma)'
      )
    else:
      line += f'{"(source of the chain)":>38} |'
    print(line)
  total_s = sum(scratch[x].wall_s for x in lengths)
  total_w = scratch[lengths[0]].wall_s + sum(warm[x].wall_s for x in lengths[1:])
  print(
    f'wall time of the scan: from scratch {total_s:.0f} s; '
    f'first from scratch + warm starts {total_w:.0f} s'
  )
  payload = {
    'settings': {
      'molecule': 'LiH',
      'batch_size': batch,
      'network': NETWORK,
      'seed': args.seed,
      'scratch_iterations': n_scratch,
      'warm_iterations': n_warm,
      'tail_rows': tail,
      'chain': args.chain,
      'tolerance_Ha': TOLERANCE_HA,
      'window': WINDOW,
      'extra': extra,
    },
    'structures': rows,
    'scan_wall_s': {'scratch': total_s, 'warm': total_w},
    'suffix': '_quick' if quick else '',
  }
  launch.write_result('warm_start', payload)


if __name__ == '__main__':
  main()
