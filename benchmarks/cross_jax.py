"""Cross-version check: a short float64 KFAC run's energies as JSON, to compare jax versions.

    python benchmarks/cross_jax.py > a.json             # in one environment (e.g. jax 0.8.1)
    python benchmarks/cross_jax.py > b.json             # in another (e.g. jax 0.12)
    python benchmarks/cross_jax.py --compare a.json b.json [--tol 1e-8]

The run is the H atom with the tiny network and settings of tests/test_train.py
(32 walkers, 5 pretraining iterations, 6 KFAC iterations, ``debug.deterministic``),
in float64 on the CPU; it prints one JSON line: the Python, jax, jaxlib and kfac-jax
versions, the ferminet._compat fixes active and the energy of every iteration
(about 20 seconds on one CPU core). ``--compare`` prints the largest absolute
difference between the energies of the first file and those of the others, and
exits with status 1 if it exceeds ``--tol`` (hartree).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import platform
import sys
import tempfile


def run(iterations: int) -> dict:
  os.environ.setdefault('JAX_PLATFORMS', 'cpu')
  import jax

  jax.config.update('jax_enable_x64', True)

  from ferminet import _compat, train  # before kfac_jax: _compat gives jax.core its names
  from ferminet import config as config_lib

  # isort: split
  import jaxlib
  import kfac_jax

  cfg = config_lib.default()
  cfg.system.atom = 'H'
  cfg.batch_size = 32
  cfg.network.determinants = 2
  cfg.network.ferminet.hidden_dims = ((8, 4), (8, 4))
  cfg.pretrain.iterations = 5
  cfg.mcmc.burn_in = 5
  cfg.mcmc.steps = 3
  cfg.optim.optimizer = 'kfac'
  cfg.optim.iterations = iterations
  cfg.debug.deterministic = True
  # The run's own output goes to stderr: stdout is the JSON only.
  with tempfile.TemporaryDirectory() as save_path, contextlib.redirect_stdout(sys.stderr):
    cfg.log.save_path = save_path
    result = train.train(cfg)
  return {
    'python': platform.python_version(),
    'jax': jax.__version__,
    'jaxlib': jaxlib.__version__,
    'kfac_jax': kfac_jax.__version__,
    'jax_core_aliases': list(_compat.jax_core_aliases),
    'kfac_jax_patches': list(_compat.patch_kfac_jax()),
    'energies': [float(e) for e in result.energies],
  }


def compare(paths: list[str], tol: float) -> int:
  runs = [json.loads(pathlib.Path(p).read_text()) for p in paths]
  lengths = {len(r['energies']) for r in runs}
  if len(lengths) != 1:
    print(f'different numbers of iterations: {sorted(lengths)}')
    return 1
  diff = max(
    abs(a - b) for r in runs[1:] for a, b in zip(runs[0]['energies'], r['energies'], strict=True)
  )
  for p, r in zip(paths, runs, strict=True):
    print(f'{p}: jax {r["jax"]}, python {r["python"]}, last energy {r["energies"][-1]!r}')
  print(f'max |energy difference| from the first: {diff:.3g} Ha (tolerance {tol:g})')
  return int(diff > tol)


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--iterations', type=int, default=6)
  parser.add_argument('--compare', nargs='+', metavar='JSON', help='compare earlier outputs')
  parser.add_argument('--tol', type=float, default=1e-8)
  args = parser.parse_args()
  if args.compare:
    return compare(args.compare, args.tol)
  print(json.dumps(run(args.iterations)))
  return 0


if __name__ == '__main__':
  sys.exit(main())
