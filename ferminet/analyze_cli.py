"""The ``ferminet-analyze`` command: numbers with honest error bars, and plots, from runs.

Usage:
    ferminet-analyze RUN_DIR [RUN_DIR ...] [--stats {auto,train,inference}]
                     [--burn-in FRACTION] [--json]
    ferminet-analyze runs/bicbut runs/con_TS runs/t-but --relative-to bicbut [--match-length]
    python -m ferminet.analysis RUN_DIR

For each run folder, one statistics file: ``inference_stats.csv`` when the folder has
one (the final energy of the trained wavefunction), else ``train_stats.csv``;
``--stats train`` or ``--stats inference`` picks one (the report's ``stats_file`` line
says which was read). Of that file: the energy (``energy_Ha: <mean> +/- <stderr>``)
reblocked after dropping the first ``--burn-in`` fraction of the steps (default: half
of train_stats.csv, none of inference_stats.csv, whose walkers are already
equilibrated; an explicit fraction applies to either), the autocorrelation time, the mean
acceptance and local-energy variance, the reference energy when the system is
known, and a convergence plot (``convergence.png`` in the run folder, or in
``--out``). With ``--relative-to NAME``, the energies relative to run NAME in
kcal/mol (errors of independent runs added in quadrature), with published values,
and ``reaction_profile.png``. Run names: ``--name`` (one per folder), else
``system.name`` from the folder's config.json, else the folder name.

Beside each raw energy, the energy extrapolated to zero local-energy variance
(:func:`ferminet.analysis.extrapolate`: a line through energy against variance over the
averaged steps), and with ``--relative-to`` the relative energies of those. Error bars
of several runs are comparable only for the same number of averaged steps and walkers:
``--match-length`` averages the last N kept rows of every run (N the fewest any has),
and a ``note:`` line names what still differs (statistics files, batch sizes, averaged
steps, and for inference runs the training step each evaluates).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
from collections.abc import Sequence

from ferminet import analysis, errors, writers


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
    prog='ferminet-analyze',
    description='Reblocked energies, reference comparison, relative energies and plots '
    'from ferminet run folders.',
  )
  parser.add_argument('run_dirs', nargs='+', metavar='RUN_DIR', help='ferminet run folder(s)')
  parser.add_argument(
    '--stats',
    choices=analysis.STATS_CHOICES,
    default='auto',
    help='statistics file to analyse: inference_stats.csv, train_stats.csv, or auto: '
    'inference_stats.csv when the folder has one, else train_stats.csv (default: auto)',
  )
  parser.add_argument(
    '--burn-in',
    type=float,
    default=None,
    metavar='FRACTION',
    help='fraction of the steps discarded from the start before averaging, applied to the '
    'file read (default: 0.5 for train_stats.csv, 0 for inference_stats.csv)',
  )
  parser.add_argument(
    '--name',
    action='append',
    default=None,
    help='system name of a run folder; give once per RUN_DIR, in order (default: '
    "config.json's system.name, else the folder name)",
  )
  parser.add_argument(
    '--relative-to',
    metavar='NAME',
    help='print and plot energies relative to the run with this name, in kcal/mol',
  )
  parser.add_argument(
    '--match-length',
    action='store_true',
    help='average every run over the same number of steps: the last N kept rows of each, '
    'N the fewest any run has, so that the error bars of the runs are comparable (for an '
    'inference run per structure, with the same batch size, of training checkpoints of '
    'the same step)',
  )
  parser.add_argument('--json', action='store_true', help='print JSON instead of text')
  parser.add_argument(
    '--out',
    type=pathlib.Path,
    help='folder for the PNGs (default: each run folder for its convergence plot, '
    'the current folder for the reaction profile)',
  )
  parser.add_argument('--no-plot', action='store_true', help='write no PNG')
  return parser.parse_args(argv)


def analyze(args: argparse.Namespace) -> dict:
  """Everything the command reports, as a JSON-ready dict (writes the PNGs)."""
  names = args.name or [None] * len(args.run_dirs)
  if len(names) != len(args.run_dirs):
    raise errors.AnalysisError(
      f'give --name once per RUN_DIR: {len(names)} names for {len(args.run_dirs)} folders'
    )
  if args.out is not None:
    args.out.mkdir(parents=True, exist_ok=True)
  plots = None
  if not args.no_plot:
    from ferminet import plots  # matplotlib is imported only when plotting
  average = None
  if args.match_length:
    average = min(analysis.kept_rows(d, args.burn_in, args.stats) for d in args.run_dirs)
  runs, summaries = [], []
  for run_dir, name in zip(args.run_dirs, names, strict=True):
    summary, data = analysis.analyze_run(run_dir, args.burn_in, name, args.stats, average)
    summaries.append(summary)
    entry = summary.to_dict()
    if plots is not None:
      folder = args.out if args.out is not None else pathlib.Path(run_dir)
      filename = 'convergence.png' if args.out is None else f'{_slug(summary.name)}_convergence.png'
      entry['plot'] = str(plots.convergence(data, summary, folder / filename))
    runs.append(entry)
  # What was asked (None: each file's default); the fraction used is in each run's entry.
  result = {
    'stats': args.stats,
    'burn_in_fraction': args.burn_in,
    'matched_rows': average,
    'runs': runs,
    'notes': analysis.comparability(summaries) if len(summaries) > 1 else [],
  }
  if args.relative_to is not None:
    triples = [(r['name'], r['energy']['mean'], r['energy']['stderr']) for r in runs]
    relative = analysis.relative_energies(triples, args.relative_to)
    lit = analysis.literature(args.relative_to)
    result['relative'] = {
      'relative_to': args.relative_to,
      'units': 'kcal/mol',
      'hartree_to_kcal_per_mol': analysis.HARTREE_TO_KCAL_PER_MOL,
      'energies': [vars(r) for r in relative],
      'extrapolated': None,
      'literature': [vars(x) for x in lit if x.name in {r.name for r in relative}],
    }
    fits = [(r['name'], r['extrapolated']) for r in runs]
    if all(fit is not None for _, fit in fits):
      triples = [(name, fit['energy'], fit['stderr']) for name, fit in fits]
      extrapolated = analysis.relative_energies(triples, args.relative_to)
      result['relative']['extrapolated'] = [vars(r) for r in extrapolated]
    if plots is not None:
      folder = args.out if args.out is not None else pathlib.Path('.')
      path = plots.profile(relative, lit, args.relative_to, folder / 'reaction_profile.png')
      result['relative']['plot'] = str(path)
  return result


_KIND = {'inference_stats.csv': 'inference run', 'train_stats.csv': 'training run'}


def _slug(name: str) -> str:
  return ''.join(c if c.isalnum() or c in '-_.' else '_' for c in name)


def _fmt(value: float | None, spec: str) -> str:
  return 'n/a' if value is None else format(value, spec)


def text(result: dict) -> list[str]:
  """The human-readable report: ``key: value`` lines per run, then the profile table."""
  lines = []
  for r in result['runs']:
    e = r['energy']
    if lines:
      lines.append('')
    lines += [
      f'run: {r["path"]}',
      f'name: {r["name"]}',
      f'stats_file: {r["stats_file"]}',
      f'energy_Ha: {e["mean"]:.6f} +/- {e["stderr"]:.6f}',
      f'averaged_steps: {e["n"]} of {r["steps"]} (first {r["discarded"]} discarded as burn-in; '
      f'{_KIND.get(r["stats_file"], "run")})',
      f'block_size: {e["block_size"]}'
      + ('' if e['converged'] else ' (reblocking not converged: run longer)'),
      f'naive_stderr_Ha: {e["naive_stderr"]:.6f}',
      f'autocorrelation_time_steps: {e["autocorrelation_time"]:.2f}',
      f'pmove_mean: {r["pmove"]:.4f}',
      f'variance_mean_Ha2: {r["variance"]:.6g}',
    ]
    if r['batch_size'] is not None:
      lines.append(f'batch_size: {r["batch_size"]}')
    if r.get('ansatz'):
      lines.append(f'ansatz: {r["ansatz"]}')
    start = r['started_from']
    if start is not None:
      what = 'evaluates' if r['stats_file'] == 'inference_stats.csv' else 'warm-started from'
      lines.append(
        f'started_from: {what} step {start["step"]} of {start["system"]} ({start["path"]})'
      )
    fit = r['extrapolated']
    if fit is None:
      lines.append('extrapolated_Ha: n/a (no local-energy variance to fit)')
    else:
      lines.append(
        f'extrapolated_Ha: {fit["energy"]:.6f} +/- {fit["stderr"]:.6f} (energy against '
        f'variance, a line through {fit["blocks"]} block means of {fit["block_size"]} steps, '
        f'variance {fit["variance_min"]:.4g} to {fit["variance_max"]:.4g} Ha2, slope '
        f'{fit["slope"]:.4g} +/- {fit["slope_stderr"]:.2g} /Ha, at zero variance)'
      )
    for column, o in r['observables'].items():
      unit = writers.OBSERVABLE_UNITS[column]
      lines.append(
        f'{column}: {o["mean"]:.6f} +/- {o["stderr"]:.6f} {unit}'.rstrip()
        + ('' if o['converged'] else ' (reblocking not converged)')
      )
    if r['dipole_debye'] is not None:
      size, err = r['dipole_debye']
      lines.append(
        f'dipole_moment_D: {size:.4f} +/- {err:.4f} (|mean of dipole_x..z|; the mean of the '
        "dipole_debye column, each step's magnitude, is biased upwards by their noise)"
      )
    ref = r['reference']
    if ref is not None:
      lines += [
        f'reference_Ha: {ref["energy"]:.6f} ({ref["method"]}; {ref["system"]})',
        f'error_mHa: {r["error_mha"]:.2f} +/- {e["stderr"] * 1000:.2f}',
        f'correlation_energy_pct: {_fmt(r["correlation_pct"], ".2f")}',
      ]
    else:
      lines.append('reference_Ha: n/a')
    if 'plot' in r:
      lines.append(f'plot: {r["plot"]}')
  if result.get('matched_rows') is not None:
    lines += ['', f'matched length: every run averaged over its last {result["matched_rows"]} rows']
  for note in result.get('notes', []):
    lines.append(f'note: {note}; their error bars are not comparable (see --match-length)')
  rel = result.get('relative')
  if rel is not None:
    lines += [
      '',
      f'relative energies to {rel["relative_to"]} in kcal/mol '
      f'(1 Ha = {rel["hartree_to_kcal_per_mol"]} kcal/mol; independent errors in quadrature):',
    ]
    width = max(len(x['name']) for x in rel['energies'])
    extrapolated = {x['name']: x for x in rel.get('extrapolated') or []}
    if extrapolated:
      lines.append(f'  {"":<{width}}  {"raw":>17}   {"extrapolated to zero variance":>17}')
    for x in rel['energies']:
      line = f'  {x["name"]:<{width}}  {x["energy"]:9.2f} +/- {x["stderr"]:.2f}'
      if x['name'] in extrapolated:
        y = extrapolated[x['name']]
        line += f'   {y["energy"]:9.2f} +/- {y["stderr"]:.2f}'
      lines.append(line)
      for lit in rel['literature']:
        if lit['name'] == x['name']:
          lines.append(
            f'  {"":<{width}}    literature {lit["energy"]:7.2f}  {lit["method"]} '
            f'[ZPVE: {lit["zpve"]}]'
          )
    if 'plot' in rel:
      lines.append(f'plot: {rel["plot"]}')
  return lines


def main(argv: Sequence[str] | None = None) -> None:
  """Console-script entry point; input errors print one line and exit with status 2."""
  args = parse_args(argv)
  try:
    result = analyze(args)
  except errors.FermiNetError as e:
    print(f'ferminet-analyze: error: {e}', file=sys.stderr)
    sys.exit(2)
  if args.json:
    out = json.dumps(_finite(result), indent=1, default=_json_default, allow_nan=False)
  else:
    out = '\n'.join(text(result))
  try:
    print(out, flush=True)
  except BrokenPipeError:  # e.g. `ferminet-analyze RUN | head`: the reader has all it wants
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit


def _finite(obj):
  """NaN and infinities (e.g. the error of a single step) as null: strict JSON."""
  if isinstance(obj, float):
    return obj if obj == obj and abs(obj) != float('inf') else None
  if isinstance(obj, dict):
    return {k: _finite(v) for k, v in obj.items()}
  if isinstance(obj, list | tuple):
    return [_finite(v) for v in obj]
  return obj


def _json_default(obj):
  if hasattr(obj, 'item'):  # numpy scalars
    return obj.item()
  raise TypeError(f'not JSON serialisable: {type(obj).__name__}')


if __name__ == '__main__':
  main()
