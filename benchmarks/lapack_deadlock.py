"""Reproducer of the jaxlib CPU deadlock in batched LAPACK calls (not a test).

    python benchmarks/lapack_deadlock.py            # jnp.linalg.inv: hangs on jaxlib 0.10.2
    python benchmarks/lapack_deadlock.py --ferminet # ferminet.linalg: finishes

One jitted function holds four independent batched inverses (8 matrices of
128 x 128 each). jaxlib 0.10.0 to 0.11.0 split each batched LAPACK call over
XLA's intra-op thread pool and wait for the pieces inside a task of that same
pool; when as many such calls run at once as the pool has threads (2 on a
2-core machine), none is left to run the pieces and the process waits forever
(gdb: every ``tf_XLAEigen`` thread in ``absl::BlockingCounter::Wait`` under
``jax::ParallelBatchMap``). A batch of one matrix, or one core, runs inline and
never hangs. Measured on a 2-core machine with jaxlib 0.10.2: 3 of 3 tries hung
within 100 calls; jaxlib 0.8.x has no such path, and from 0.11.1 on it is
compiled out of the public wheels. The script gives up after ``--timeout``
seconds and exits with status 1 if it hung.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--ferminet', action='store_true', help='use ferminet.linalg')
  parser.add_argument('--calls', type=int, default=100)
  parser.add_argument('--timeout', type=float, default=60.0)
  args = parser.parse_args()

  import jax
  import jax.numpy as jnp

  from ferminet import linalg

  def inverse(a):
    return linalg.slogdet_inverse(a)[2] if args.ferminet else jnp.linalg.inv(a)

  @jax.jit
  def four_inverses(a):
    return sum(inverse(a[i] + 0.01 * i).sum() for i in range(4))

  a = jax.random.normal(jax.random.PRNGKey(0), (4, 8, 128, 128)) + 10 * jnp.eye(128)
  done = threading.Event()

  def work():
    for _ in range(args.calls):
      four_inverses(a).block_until_ready()
    done.set()

  start = time.monotonic()
  threading.Thread(target=work, daemon=True).start()
  finished = done.wait(args.timeout)
  which = 'ferminet.linalg' if args.ferminet else 'jnp.linalg.inv'
  print(
    f'jax {jax.__version__}, {which}: '
    + (f'{args.calls} calls in {time.monotonic() - start:.1f} s' if finished else 'HUNG')
  )
  sys.stdout.flush()
  os._exit(0 if finished else 1)  # a hung XLA thread would abort a normal interpreter exit


if __name__ == '__main__':
  main()
