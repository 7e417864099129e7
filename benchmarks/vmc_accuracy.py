"""VMC accuracy on CPU: small systems against exact energies, and Li with the default network.

    python benchmarks/vmc_accuracy.py                 # H, He, H2, Li (each <= 15 min on 2 cores)
    python benchmarks/vmc_accuracy.py --cases H,He
    python benchmarks/vmc_accuracy.py --cases li_default   # batch 256, default network, 1000 its
    python benchmarks/vmc_accuracy.py --cases He,He_psiformer,Li,Li_psiformer  # the ansätze

Prints one line per case (energy, reblocked error, reference, error in mHa,
seconds per iteration, wall time) and writes benchmarks/results/vmc_accuracy[_CASES].json.
"""

import argparse
import json
import pathlib
import tempfile
import time

import jax

from ferminet import config, networks, train

SMALL = ((64, 16), (64, 16))
MEDIUM = ((64, 16), (64, 16), (64, 16))

# A Psiformer of about the small FermiNets' size: 2 layers of 4 heads of 16 (width 64),
# an MLP of 64, the simple_ee Jastrow (its default), log-rescaled inputs (the
# reference's psiformer preset). Its determinants are always full.
PSIFORMER = {
  'network_type': 'psiformer',
  'rescale_inputs': True,
  'psiformer': {'num_layers': 2, 'num_heads': 4, 'heads_dim': 16, 'mlp_hidden_dims': (64,)},
}

# name -> (system settings, batch, hidden dims, determinants, pretrain its, iterations[,
# network settings])
CASES = {
  'H': ({'atom': 'H'}, 256, SMALL, 4, 100, 1000),
  'He': ({'atom': 'He'}, 512, SMALL, 4, 200, 2000),
  'H2': ({'molecule_name': 'H2', 'bond_length': 1.4}, 512, SMALL, 4, 200, 2000),  # bohr
  'Li': ({'atom': 'Li'}, 512, MEDIUM, 8, 200, 3000),
  'li_default': ({'atom': 'Li'}, 256, None, None, 1000, 1000),
  'He_psiformer': ({'atom': 'He'}, 512, SMALL, 4, 200, 2000, PSIFORMER),
  'Li_psiformer': ({'atom': 'Li'}, 512, MEDIUM, 8, 200, 3000, PSIFORMER),
}


def run_case(name: str, workdir: pathlib.Path) -> dict:
  system, batch, hidden, dets, pretrain_its, iterations, *network = CASES[name]
  cfg = config.default()
  for key, value in (network[0] if network else {}).items():
    if isinstance(value, dict):
      cfg.network[key].update(value)
    else:
      cfg.network[key] = value
  for key, value in system.items():
    cfg.system[key] = value
  cfg.batch_size = batch
  if hidden is not None:
    cfg.network.ferminet.hidden_dims = hidden
    cfg.network.determinants = dets
  cfg.pretrain.iterations = pretrain_its
  cfg.optim.iterations = iterations
  cfg.log.save_path = str(workdir / name)
  cfg.log.save_frequency = 1e9
  start = time.monotonic()
  result = train.train(cfg)
  wall = time.monotonic() - start
  rows = (workdir / name / 'train_stats.csv').read_text().splitlines()[1:]
  return {
    'case': name,
    'settings': {
      'batch_size': batch,
      'network': cfg.network.network_type,
      'ansatz': networks.describe(cfg.network),
      'hidden_dims': cfg.network.ferminet.hidden_dims,
      'determinants': cfg.network.determinants,
      'pretrain_iterations': pretrain_its,
      'iterations': iterations,
      'optimizer': cfg.optim.optimizer,
      'laplacian': cfg.optim.laplacian,
    },
    'energy_Ha': result.energy,
    'stderr_Ha': result.stderr,
    'reference_Ha': result.reference,
    'error_mHa': None if result.reference is None else 1000 * (result.energy - result.reference),
    'wall_s': wall,
    'iterations_recorded': len(rows),
  }


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--cases', default='H,He,H2,Li')
  args = parser.parse_args()
  results = []
  with tempfile.TemporaryDirectory() as tmp:
    for name in args.cases.split(','):
      results.append(run_case(name, pathlib.Path(tmp)))
  print(f'\n{"case":<11} {"energy (Ha)":>22} {"reference":>11} {"error (mHa)":>12} {"wall (s)":>9}')
  for r in results:
    err = '' if r['error_mHa'] is None else f'{r["error_mHa"]:.2f}'
    ref = '' if r['reference_Ha'] is None else f'{r["reference_Ha"]:.6f}'
    energy = f'{r["energy_Ha"]:.6f} +/- {r["stderr_Ha"]:.6f}'
    print(f'{r["case"]:<11} {energy:>22} {ref:>11} {err:>12} {r["wall_s"]:>9.0f}')
  suffix = '' if args.cases == 'H,He,H2,Li' else '_' + args.cases.replace(',', '_')
  out = pathlib.Path(__file__).parent / 'results' / f'vmc_accuracy{suffix}.json'
  out.parent.mkdir(exist_ok=True)
  payload = {'jax': jax.__version__, 'device': jax.devices()[0].device_kind, 'results': results}
  out.write_text(json.dumps(payload, indent=2))
  print(f'wrote {out}')


if __name__ == '__main__':
  main()
