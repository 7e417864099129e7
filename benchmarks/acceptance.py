"""Metropolis acceptance over the first 300 iterations: our width adaptation vs the reference's.

    python benchmarks/acceptance.py

Li atom, default network at its initial parameters, 256 walkers, 10 steps per
iteration, initial width 0.02 bohr. "reference" multiplies the width by 1.1
every 100 iterations when pmove > 0.55 (divides when < 0.5), as DeepMind's
FermiNet does; "ferminet" is mcmc.adapt_width after every iteration.
"""

import jax
import numpy as np

from ferminet import config, mcmc, networks, system


def trace(scheme: str, iterations: int = 300) -> list[float]:
  cfg = config.default()
  li = system.make_system([system.Atom('Li')])
  net = networks.make(cfg.network, li)
  params = net.init(jax.random.PRNGKey(0))
  step = jax.jit(mcmc.make_step(lambda p, x: 2 * net.log_abs(p, x), cfg.mcmc.steps))
  walkers = mcmc.init_walkers(jax.random.PRNGKey(1), li, 256, cfg.mcmc.init_width)
  log_p = jax.vmap(lambda x: 2 * net.log_abs(params, x))(walkers)
  width, out, window = cfg.mcmc.move_width, [], []
  for i in range(iterations):
    walkers, log_p, pmove = step(params, walkers, log_p, jax.random.PRNGKey(10 + i), width)
    out.append(float(pmove))
    if scheme == 'ferminet':
      width = float(mcmc.adapt_width(width, pmove, cfg.mcmc.target_acceptance))
    else:
      window.append(float(pmove))
      if (i + 1) % 100 == 0:
        mean = np.mean(window)
        width = width * 1.1 if mean > 0.55 else (width / 1.1 if mean < 0.5 else width)
        window = []
  return out


def main():
  traces = {scheme: trace(scheme) for scheme in ('reference', 'ferminet')}
  marks = [0, 1, 2, 5, 10, 20, 50, 100, 150, 200, 299]
  print('iteration  ' + '  '.join(f'{m:>5d}' for m in marks))
  for scheme, values in traces.items():
    print(f'{scheme:<10} ' + '  '.join(f'{values[m]:5.2f}' for m in marks))
  for scheme, values in traces.items():
    far = sum(abs(v - 0.5) > 0.1 for v in values)
    print(f'{scheme}: {far} of 300 iterations with |pmove - 0.5| > 0.1; '
          f'mean pmove over iterations 100-299: {np.mean(values[100:]):.3f}')  # fmt: skip


if __name__ == '__main__':
  main()
