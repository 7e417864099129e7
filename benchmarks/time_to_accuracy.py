"""Time from launch to chemical accuracy: what a user waits for, case by case.

    python benchmarks/time_to_accuracy.py                  # li, be, lih with KFAC, seed 1
    python benchmarks/time_to_accuracy.py --quick          # li only, 300 iterations
    python benchmarks/time_to_accuracy.py --cases li,be --optimizers kfac,spring --seeds 1,2
    python benchmarks/time_to_accuracy.py --cases li --set optim.lr.rate=0.1 --tag lr0.1
    python benchmarks/time_to_accuracy.py --cases li --cache warm   # a second launch

Each run is the ``ferminet`` command line, launched as a user would (a fresh process:
imports, Hartree–Fock, pretraining, compilation, burn-in, training). The wall time at which
each row of ``train_stats.csv`` reached the disk is recorded (``benchmarks/launch.py``),
and the report gives the step and the seconds from launch at which the trailing 100-step
mean of the energy first came within 5, 2 and 1.6 mHa of the exact energy
(``ferminet/data/energies.csv``), and where the time before the first VMC iteration went:
start-up (Python, imports, config), Hartree–Fock, pretraining (with its compilation),
burn-in (with the sampler's compilation), and the first VMC iteration (compiling the
optimizer step). Each run starts with an empty compilation cache of its own (``--cache
cold``, as the first launch after an install), or one filled by an untimed two-iteration
launch of the same run (``--cache warm``, as every later launch), or none (``--cache
off``). A run is stopped once its trailing mean is within 1.6 mHa (``--full``: all its
iterations). Cases:

| case | system | network | batch |
|---|---|---|---|
| li | Li atom | default | 256 |
| be | Be atom | default | 256 |
| lih | LiH at 3.015 bohr | 4 dets, ((32, 8), (32, 8)) | 256 |
| n2 | N2 at 2.068 bohr | 4 dets, ((64, 16), (64, 16)) | 256 |

``--set KEY=VALUE`` (repeatable) changes a config key in every run, ``--tag`` names the
result file: ``benchmarks/results/time_to_accuracy_<date>_jax<version>[_<tag>].json``.
Every other setting is ferminet's default. Runs share the 2 cores with nothing else:
run nothing heavy beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import launch  # noqa: E402

from ferminet import analysis  # noqa: E402

_n = launch.never  # a figure, or 'never' for a threshold not reached

THRESHOLDS_MHA = (5.0, 2.0, 1.6)
WINDOW = 100
SMALL = '((32, 8), (32, 8))'
BATCH = 256  # every case (ferminet's default is 4096)

# case -> (config, settings, iterations, quick iterations)
CASES = {
  'li': ('configs/atom.py', {'system.atom': 'Li'}, 1000, 300),
  'be': ('configs/atom.py', {'system.atom': 'Be'}, 1500, 300),
  'lih': (
    'configs/diatomic.py',
    {
      'system.molecule_name': 'LiH',
      'system.bond_length': 3.015,
      'system.units': 'bohr',
      'network.determinants': 4,
      'network.ferminet.hidden_dims': SMALL,
    },
    1500,
    300,
  ),
  'n2': (
    'configs/diatomic.py',
    {
      'system.molecule_name': 'N2',
      'system.bond_length': 2.068,
      'system.units': 'bohr',
      'network.determinants': 4,
      'network.ferminet.hidden_dims': '((64, 16), (64, 16))',
    },
    1000,
    100,
  ),
}


def breakdown(run: launch.Launch) -> dict:
  """Seconds from launch to the end of each stage before the first VMC row, and each
  stage's own length, from the times of the run's output lines."""
  ends = {
    'startup': run.first_line('seed '),
    'hartree_fock': run.first_line('Hartree-Fock ('),
    'pretraining': run.last_line('pretrain '),
    'burn_in': run.last_line('burn-in '),
    'first_iteration': float(run.seconds[0]) if run.seconds.size else None,
  }
  out, previous = {}, 0.0
  for stage, end in ends.items():
    if end is None:  # a stage that did not run (e.g. no pretraining)
      out[stage] = None
      continue
    out[stage] = end - previous
    previous = end
  return {'seconds': out, 'first_row_s': ends['first_iteration']}


def reached(run: launch.Launch, exact: float) -> dict:
  """For each threshold: the step and the seconds from launch at which the trailing
  WINDOW-step mean first came within it of the exact energy (None: never)."""
  out = {}
  for mha in THRESHOLDS_MHA:
    i = launch.first_where(run.energy, WINDOW, lambda mean, mha=mha: mean - exact <= mha / 1000)
    found = i is not None
    out[f'{mha:g}'] = {
      'step': int(run.steps[i]) if found else None,
      'seconds': float(run.seconds[i]) if found else None,
    }
  return out


def run_case(
  case: str,
  optimizer: str,
  seed: int,
  quick: bool,
  extra: dict,
  workdir: pathlib.Path,
  cache: str = 'cold',
  full: bool = False,
  max_seconds: float | None = None,
) -> dict:
  """One launch of ``case``; ``cache``: 'cold' (an empty compilation cache, as a fresh
  install's first run), 'warm' (the cache of an untimed 2-iteration launch of the same
  run, as every later launch), 'off' (none). Unless ``full``, the run is stopped once its
  trailing mean is within the smallest threshold; and after ``max_seconds`` from launch."""
  config, settings, iterations, quick_iterations = CASES[case]
  name = f'{case}_{optimizer}_seed{seed}'
  run_dir = workdir / name
  flags = {
    'batch_size': BATCH,
    **settings,
    'optim.optimizer': optimizer,
    'optim.iterations': quick_iterations if quick else iterations,
    'debug.deterministic': True,
    'debug.seed': seed,
    'log.save_path': run_dir,
    **extra,
  }
  env = {k: v for k, v in os.environ.items() if k != 'JAX_COMPILATION_CACHE_DIR'}
  if cache == 'off':
    env['JAX_COMPILATION_CACHE_DIR'] = ''
  else:
    flags['debug.compilation_cache'] = workdir / f'cache_{name}'
  args = ['--config', config, *(f'--config.{k}={v}' for k, v in flags.items())]
  if cache == 'warm':
    warm = {**flags, 'optim.iterations': 2, 'log.save_path': workdir / f'{name}_warmup'}
    warm_args = ['--config', config, *(f'--config.{k}={v}' for k, v in warm.items())]
    launch.run_cli(warm_args, workdir / f'{name}_warmup', env=env)
  smallest = min(THRESHOLDS_MHA) / 1000

  start = time.monotonic()

  def done(energy):  # config.json is written before the first row
    if max_seconds is not None and time.monotonic() - start > max_seconds:
      return True
    if full:
      return False
    exact = _reference(run_dir).energy
    return launch.first_where(energy, WINDOW, lambda mean: mean - exact <= smallest) is not None

  run = launch.run_cli(args, run_dir, stop_when=done, env=env)
  ref = _reference(run_dir)
  last = analysis.reblock(run.energy[run.energy.size // 2 :])
  return {
    'case': case,
    'optimizer': optimizer,
    'seed': seed,
    'compilation_cache': cache,
    'system': ref.system,
    'exact_Ha': ref.energy,
    'exact_source': ref.method,
    'iterations': int(run.steps[-1]) + 1,
    'wall_s': run.wall_s,
    'within_mHa': reached(run, ref.energy),
    'before_first_iteration': breakdown(run),
    's_per_iteration': _seconds_per_iteration(run),
    'second_half_error_mHa': 1000 * (last.mean - ref.energy),
    'second_half_stderr_mHa': 1000 * last.stderr,
  }


def _reference(run_dir: pathlib.Path) -> analysis.Reference:
  """The exact energy of the run's system (ferminet/data/energies.csv)."""
  cfg = json.loads((run_dir / 'config.json').read_text())
  ref = analysis.reference(cfg['system']['name'], cfg['system']['electrons'])
  if ref is None:
    raise RuntimeError(f'no exact energy for {cfg["system"]["name"]!r}')
  return ref


def _seconds_per_iteration(run: launch.Launch) -> float | None:
  """Wall seconds per iteration over the second half of the rows (rows reach the disk
  in batches, so this is a mean over many)."""
  half = run.seconds.size // 2
  if run.seconds.size < 10 or run.seconds[-1] <= run.seconds[half]:
    return None
  return float((run.seconds[-1] - run.seconds[half]) / (run.steps[-1] - run.steps[half]))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--cases', default=None, help=f'of {",".join(CASES)} (default li,be,lih)')
  parser.add_argument('--optimizers', default='kfac', help='comma-separated, e.g. kfac,spring')
  parser.add_argument('--seeds', default='1', help='comma-separated debug.seed values')
  parser.add_argument('--quick', action='store_true', help='li only (unless --cases), few steps')
  parser.add_argument('--set', action='append', default=[], metavar='KEY=VALUE')
  parser.add_argument('--tag', default='', help='suffix of the result file')
  parser.add_argument('--workdir', type=pathlib.Path, help='keep the runs here')
  parser.add_argument(
    '--cache',
    default='cold',
    choices=('cold', 'warm', 'off'),
    help='compilation cache: cold (empty, a first launch), warm (filled by an untimed '
    'launch of the same run), off',
  )
  parser.add_argument(
    '--full', action='store_true', help='run every iteration (default: stop at 1.6 mHa)'
  )
  parser.add_argument(
    '--max-seconds', type=float, help='stop each run this long after its launch (timed part)'
  )
  args = parser.parse_args()
  cases = (args.cases or ('li' if args.quick else 'li,be,lih')).split(',')
  unknown = set(cases) - set(CASES)
  if unknown:
    parser.error(f'unknown case(s) {", ".join(sorted(unknown))}; known: {", ".join(CASES)}')
  extra = dict(item.split('=', 1) for item in args.set)
  workdir = args.workdir or pathlib.Path(tempfile.mkdtemp(prefix='time_to_accuracy_'))
  print(f'runs in {workdir}', flush=True)
  results = []
  for case in cases:
    for optimizer in args.optimizers.split(','):
      for seed in (int(s) for s in args.seeds.split(',')):
        r = run_case(
          case, optimizer, seed, args.quick, extra, workdir, args.cache, args.full, args.max_seconds
        )
        results.append(r)
        w = r['within_mHa']
        print(
          f'{case} {optimizer} seed {seed}: 5 mHa at step {_n(w["5"]["step"], "d")} '
          f'({_n(w["5"]["seconds"], ".0f")} s), 2 mHa {_n(w["2"]["step"], "d")} '
          f'({_n(w["2"]["seconds"], ".0f")} s), 1.6 mHa {_n(w["1.6"]["step"], "d")} '
          f'({_n(w["1.6"]["seconds"], ".0f")} s); wall {r["wall_s"]:.0f} s',
          flush=True,
        )

  print(f'\n100-step mean within X mHa of exact: step (seconds from launch); {WINDOW=}')
  print(
    f'{"case":<5} {"opt":<7} {"seed":>4} | {"5 mHa":>12} {"2 mHa":>12} {"1.6 mHa":>12} | '
    f'{"startup":>7} {"HF":>5} {"pretrain":>8} {"burn-in":>7} {"1st it":>6} | '
    f'{"s/it":>6} {"2nd half (mHa)":>15}'
  )
  for r in results:
    w, b = r['within_mHa'], r['before_first_iteration']['seconds']
    cells = [
      f'{_n(w[k]["step"], "d")} ({_n(w[k]["seconds"], ".0f")})'.rjust(12) for k in ('5', '2', '1.6')
    ]
    stages = [
      _n(b[k], '.1f').rjust(n)
      for k, n in (
        ('startup', 7),
        ('hartree_fock', 5),
        ('pretraining', 8),
        ('burn_in', 7),
        ('first_iteration', 6),
      )
    ]
    print(
      f'{r["case"]:<5} {r["optimizer"]:<7} {r["seed"]:>4} | {" ".join(cells)} | '
      f'{" ".join(stages)} | {_n(r["s_per_iteration"], ".3f"):>6} '
      f'{r["second_half_error_mHa"]:>7.2f} +/- {r["second_half_stderr_mHa"]:.2f}'
    )
  tag = f'_{args.tag}' if args.tag else ('_quick' if args.quick else '')
  payload = {
    'settings': {
      'quick': args.quick,
      'set': extra,
      'window': WINDOW,
      'compilation_cache': args.cache,
      'stopped_at_smallest_threshold': not args.full,
      'max_seconds': args.max_seconds,
    },
    'results': results,
    'suffix': tag,
  }
  launch.write_result('time_to_accuracy', payload)


if __name__ == '__main__':
  main()
