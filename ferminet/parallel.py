"""Devices and processes: the pmap axis, means over all devices, walker layout, jax.distributed.

Arrays that live on every local device carry a leading axis of size
``jax.local_device_count()`` and are processed with ``jax.pmap`` over
``AXIS``; with several processes (hosts) the pmap axis spans the devices of all
of them, so ``pmean`` is a mean over every device of every host.

Walkers have global indices 0..B-1 (B = ``batch_size``). Process p holds the
contiguous block of B/P walkers starting at p·B/P, split evenly over its local
devices. Random numbers of the Metropolis steps are drawn per walker from its
global index, so a run gives the same samples on any number of devices or hosts
(up to the round-off of means over devices).
"""

from __future__ import annotations

import math
import os
import sys
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ferminet import errors

AXIS = 'devices'


def pmean(x: Any) -> Any:
  """Mean over all devices of all processes (inside a pmapped function)."""
  return jax.lax.pmean(x, AXIS)


def psum(x: Any) -> Any:
  """Sum over all devices of all processes (inside a pmapped function)."""
  return jax.lax.psum(x, AXIS)


def pmin(x: Any) -> Any:
  """Minimum over all devices of all processes (inside a pmapped function)."""
  return jax.lax.pmin(x, AXIS)


def all_gather(x: jax.Array) -> jax.Array:
  """``x`` of every device of every process, concatenated along the first axis (inside pmap)."""
  return jax.lax.all_gather(x, AXIS).reshape(-1, *x.shape[1:])


def map_walkers(f: Any, xs: Any, chunk: int = 0) -> Any:
  """``f`` of each walker (leading axis of ``xs``, an array or a tree of arrays),
  vmapped over all of them, or with ``chunk`` > 0 that many at a time (a ``lax.map``
  over vmapped chunks, remainder included) to bound memory or stay in cache."""
  if 0 < chunk < jax.tree.leaves(xs)[0].shape[0]:
    return jax.lax.map(f, xs, batch_size=chunk)
  return jax.vmap(f)(xs)


def device_count() -> int:
  """Devices of this process."""
  return jax.local_device_count()


def process_index() -> int:
  return jax.process_index()


def process_count() -> int:
  return jax.process_count()


def is_main() -> bool:
  """Whether this process writes files and prints progress (process 0)."""
  return jax.process_index() == 0


# A pmapped function is compiled once per sharding of its inputs, and the outputs of a
# pmap carry a sharding named after its axis, which arrays made on the host (by
# broadcast_to or reshape) lack. So every pmapped step was compiled twice, once for the
# host-made first inputs and again for its own outputs (jax 0.10.2: about 3 s more for
# the pretraining step of a small Li network, at every launch). Arrays that enter the
# devices through this identity, pmapped over the same axis, have the outputs' sharding.
_to_devices = jax.pmap(lambda tree: tree, axis_name=AXIS)


def on_devices(tree: Any) -> Any:
  """``tree`` (leading axis: local devices) as pmap outputs are laid out; see above."""
  return _to_devices(tree) if jax.tree.leaves(tree) else tree


def replicate(tree: Any) -> Any:
  """Adds a leading device axis by copying ``tree`` to every local device."""
  n = device_count()
  return on_devices(
    jax.tree.map(lambda x: jnp.broadcast_to(jnp.asarray(x), (n, *jnp.shape(x))), tree)
  )


def shard(x: jax.Array) -> jax.Array:
  """Splits the leading (walker) axis of x over local devices: (B, ...) -> (D, B/D, ...)."""
  n = device_count()
  return on_devices(jnp.reshape(x, (n, x.shape[0] // n, *x.shape[1:])))


def unshard(x: jax.Array) -> jax.Array:
  """Inverse of :func:`shard`: (D, B/D, ...) -> (B, ...)."""
  return x.reshape(-1, *x.shape[2:])


def first(tree: Any) -> Any:
  """The copy of a replicated tree held by the first device, on the host."""
  return jax.device_get(jax.tree.map(lambda x: x[0], tree))


def same_keys(key: jax.Array) -> jax.Array:
  """``key`` on every local device, shape (D, 2): keys of estimators, which fold in each
  walker's global index, so that they do not depend on the device layout."""
  return on_devices(jnp.broadcast_to(key, (device_count(), *key.shape)))


def check_batch(batch_size: int) -> None:
  """batch_size must split evenly over every device of every process."""
  n = jax.device_count()
  if batch_size % n:
    where = f'{n} devices' + (f' of {process_count()} processes' if process_count() > 1 else '')
    raise errors.ConfigError(
      f'batch_size {batch_size} is not divisible by the {where}: use a multiple of {n}'
    )


def local_block(batch_size: int) -> slice:
  """The global walker indices held by this process."""
  per_process = batch_size // process_count()
  return slice(process_index() * per_process, (process_index() + 1) * per_process)


def walker_ids(batch_size: int) -> jax.Array:
  """Global indices of this process's walkers, sharded: (D, B/(P·D)) int32."""
  block = local_block(batch_size)
  return shard(jnp.arange(block.start, block.stop, dtype=jnp.int32))


def local_walkers(walkers: np.ndarray | jax.Array) -> jax.Array:
  """This process's walkers from all of them ((B, 3N) -> (D, B/(P·D), 3N))."""
  return shard(jnp.asarray(walkers[local_block(walkers.shape[0])]))


def all_walkers(walkers: jax.Array) -> np.ndarray:
  """Every process's walkers, in global order: (D, b, 3N) -> (B, 3N) numpy.

  A collective: every process must call it.
  """
  local = np.asarray(unshard(walkers))
  if process_count() == 1:
    return local
  from jax.experimental import multihost_utils

  gathered = multihost_utils.process_allgather(local)  # (P, B/P, 3N)
  return np.asarray(gathered).reshape(-1, local.shape[-1])


def agree(flags: tuple[bool, ...], value: float) -> tuple[tuple[bool, ...], float]:
  """Each flag OR-ed and ``value`` maxed over all processes (a collective with several)."""
  if process_count() == 1:
    return tuple(bool(f) for f in flags), float(value)
  from jax.experimental import multihost_utils

  local = np.asarray([*map(float, flags), value], dtype=np.float32)
  gathered = np.asarray(multihost_utils.process_allgather(local)).reshape(-1, local.size)
  return tuple(bool(x) for x in gathered[:, :-1].max(axis=0)), float(gathered[:, -1].max())


def same_on_all(value: int) -> int:
  """Process 0's value of an integer, on every process."""
  if process_count() == 1:
    return int(value)
  from jax.experimental import multihost_utils

  return int(multihost_utils.broadcast_one_to_all(np.int32(value)))


# What srun sets in the environment of each task of a job step and JAX's SLURM detection
# reads. salloc and sbatch set the job's SLURM_JOB_ID and SLURM_NTASKS (sbatch also a
# SLURM_PROCID and SLURM_LOCALID of 0 for its batch script) but none of the SLURM_STEP_*
# variables, so a process they start directly is alone even when SLURM_NTASKS > 1.
_SRUN_STEP_VARS = (
  'SLURM_STEP_ID',
  'SLURM_STEP_NUM_TASKS',
  'SLURM_STEP_NODELIST',
  'SLURM_PROCID',
  'SLURM_LOCALID',
)


def _env_int(name: str) -> int | None:
  """An integer environment variable; None when unset or not an integer."""
  try:
    return int(os.environ[name])
  except (KeyError, ValueError):
    return None


def slurm_step() -> tuple[int, int] | None:
  """(tasks in the step, this task's rank) when srun started this process, else None."""
  if not all(name in os.environ for name in _SRUN_STEP_VARS):
    return None
  tasks, rank = _env_int('SLURM_STEP_NUM_TASKS'), _env_int('SLURM_PROCID')
  if tasks is None or rank is None or not 0 <= rank < tasks:
    return None
  return tasks, rank


def _gpus_of_lone_task() -> list[int] | None:
  """All GPUs of this node when the srun step runs one task per node, else None.

  JAX's SLURM support gives each task only the GPU numbered SLURM_LOCALID, which
  suits one task per GPU; with one task per node (``--ntasks-per-node=1``) that
  would leave all but one GPU of each node idle. The GPUs are those the job sees
  (CUDA_VISIBLE_DEVICES, else SLURM_GPUS_ON_NODE); None when neither says.
  """
  tasks, nodes = _env_int('SLURM_STEP_NUM_TASKS'), _env_int('SLURM_STEP_NUM_NODES')
  if tasks is None or tasks != nodes:
    return None
  visible = [x for x in os.environ.get('CUDA_VISIBLE_DEVICES', '').split(',') if x.strip()]
  count = len(visible) or _env_int('SLURM_GPUS_ON_NODE') or 0
  return list(range(count)) if count > 1 else None


def detected_cluster() -> str:
  """'Open MPI' (mpirun -np N, N > 1) or 'SLURM' (an srun step of several tasks), else ''.

  Open MPI comes first: mpirun inside a SLURM job also sees the job's variables.
  """
  if (_env_int('OMPI_COMM_WORLD_SIZE') or 1) > 1:
    return 'Open MPI'
  step = slurm_step()
  if step is not None and step[0] > 1:
    return 'SLURM'
  return ''


def _lone_slurm_task_note() -> str | None:
  """The note for a process alone in a SLURM job of several tasks, else None."""
  job_tasks = _env_int('SLURM_NTASKS') or 1
  if 'SLURM_JOB_ID' not in os.environ or job_tasks <= 1:
    return None
  step = slurm_step()
  how = 'was not started by srun' if step is None else f'its srun step has {step[0]} task'
  return (
    f'ferminet: note: the SLURM job has {job_tasks} tasks but this process {how}, so it '
    'runs as one process; to use them, start it with srun ferminet ...'
  )


def initialize(cfg: ml_collections.ConfigDict) -> None:
  """Starts JAX's distributed runtime when ``cfg.distributed`` or the launcher asks for it.

  Explicit: ``coordinator_address`` (host:port of process 0), ``num_processes`` and
  ``process_id``. Else, with ``distributed.detect``: Open MPI (mpirun -np N, N > 1; JAX
  reads the rest), or an srun job step with several tasks (SLURM_STEP_NUM_TASKS > 1),
  whose task count and rank (SLURM_PROCID) are passed, while JAX takes the coordinator
  from the step's first node. A SLURM job with several tasks whose process srun did not
  start (salloc -n 4 or an sbatch script running ferminet directly) runs as one process
  and prints a note on stderr; so does anything else. Every process waits at most
  ``distributed.initialization_timeout`` seconds for the others; a failure to connect is
  one ConfigError. Must run before JAX uses any device; idempotent.
  """
  d = cfg.distributed
  if jax.distributed.is_initialized():
    return
  timeout = max(1, math.ceil(d.initialization_timeout))  # JAX takes whole seconds
  if d.coordinator_address:
    kwargs = {
      'coordinator_address': d.coordinator_address,
      'num_processes': d.num_processes,
      'process_id': d.process_id,
    }
    expected, coordinator = str(d.num_processes), d.coordinator_address
    cause = 'a process not started or given another address, or a firewall'
  elif d.detect and detected_cluster() == 'Open MPI':
    kwargs = {}
    expected = os.environ['OMPI_COMM_WORLD_SIZE']
    coordinator = 'chosen by JAX from mpirun'
    cause = 'a process that did not start, or a firewall'
  elif d.detect and detected_cluster() == 'SLURM':
    tasks, rank = slurm_step()
    kwargs = {'num_processes': tasks, 'process_id': rank}
    gpus = _gpus_of_lone_task()
    if gpus is not None:  # JAX would give the task only GPU [SLURM_LOCALID]
      kwargs['local_device_ids'] = gpus
    expected = str(tasks)
    coordinator = f'the first node of SLURM_STEP_NODELIST={os.environ["SLURM_STEP_NODELIST"]}'
    cause = (
      'a task that did not start, a wrong SLURM step (e.g. tasks of another srun), or a '
      'firewall between the nodes'
    )
  else:
    note = _lone_slurm_task_note() if d.detect else None
    if note is not None:
      print(note, file=sys.stderr, flush=True)
    return
  try:
    jax.distributed.initialize(**kwargs, initialization_timeout=timeout)
  except (RuntimeError, ValueError) as e:  # XlaRuntimeError is a RuntimeError
    detail = ' '.join(str(e).split())  # one line
    raise errors.ConfigError(
      f'cannot start jax.distributed with {expected} processes (coordinator: {coordinator}; '
      f'distributed.initialization_timeout {timeout} s): {detail}. Likely cause: {cause}. '
      'Call ferminet before any other JAX work; distributed.detect=False runs one process'
    ) from None
