"""Starting jax.distributed: which launches start several processes, and clear errors.

Nothing real starts: jax.distributed.initialize is replaced by a fake that records
its arguments (or raises), and the environment is set per test.
"""

import jax
import pytest

from ferminet import config as config_lib
from ferminet import errors, parallel

# Everything a launcher may set that the detection reads.
LAUNCH_VARS = (
  'SLURM_JOB_ID',
  'SLURM_NTASKS',
  'SLURM_STEP_ID',
  'SLURM_STEP_NUM_TASKS',
  'SLURM_STEP_NODELIST',
  'SLURM_PROCID',
  'SLURM_LOCALID',
  'SLURM_STEP_NUM_NODES',
  'SLURM_GPUS_ON_NODE',
  'CUDA_VISIBLE_DEVICES',
  'OMPI_COMM_WORLD_SIZE',
)
# salloc -n 4 or an sbatch batch script: the job's variables (sbatch also sets a
# PROCID and LOCALID of 0 for the batch script), but no step variables.
ALLOCATION = {
  'SLURM_JOB_ID': '4242',
  'SLURM_NTASKS': '4',
  'SLURM_PROCID': '0',
  'SLURM_LOCALID': '0',
}
# Task 1 of `srun -n 2` inside that allocation.
SRUN_STEP = {
  **ALLOCATION,
  'SLURM_STEP_ID': '0',
  'SLURM_STEP_NUM_TASKS': '2',
  'SLURM_STEP_NODELIST': 'node[07-08]',
  'SLURM_PROCID': '1',
  'SLURM_LOCALID': '0',
}


@pytest.fixture
def launch(monkeypatch):
  """``launch(env, **distributed)``: runs parallel.initialize with only ``env``'s launcher
  variables set and the default config's distributed keys overridden; returns the
  keyword arguments of each call it made to jax.distributed.initialize."""
  calls = []
  monkeypatch.setattr(jax.distributed, 'is_initialized', lambda: False)
  monkeypatch.setattr(jax.distributed, 'initialize', lambda **kwargs: calls.append(kwargs))

  def start(env, **distributed):
    for name in LAUNCH_VARS:
      monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
      monkeypatch.setenv(name, value)
    cfg = config_lib.default()
    for key, value in distributed.items():
      cfg.distributed[key] = value
    del calls[:]
    parallel.initialize(cfg)
    return list(calls)

  return start


def test_allocation_without_srun_runs_one_process_with_a_note(launch, capsys):
  assert launch(ALLOCATION) == []
  assert parallel.detected_cluster() == ''
  out, err = capsys.readouterr()
  (note,) = err.strip().splitlines()
  assert '4 tasks' in note and 'not started by srun' in note and 'one process' in note
  assert 'srun ferminet' in note and out == ''


def test_single_task_srun_step_runs_one_process(launch, capsys):
  """srun --pty bash (or salloc's interactive step) in a 4-task job: a step of 1 task."""
  step = {**SRUN_STEP, 'SLURM_STEP_NUM_TASKS': '1', 'SLURM_PROCID': '0'}
  assert launch(step) == []
  (note,) = capsys.readouterr().err.strip().splitlines()
  assert '4 tasks' in note and 'step has 1 task' in note and 'srun ferminet' in note


def test_srun_step_passes_the_steps_processes(launch, capsys):
  (call,) = launch(SRUN_STEP)
  # The step's size, not the job's SLURM_NTASKS=4; JAX finds the coordinator itself.
  assert call == {'num_processes': 2, 'process_id': 1, 'initialization_timeout': 300}
  assert parallel.detected_cluster() == 'SLURM'
  assert capsys.readouterr().err == ''


def test_one_task_per_node_uses_all_its_gpus(launch):
  """srun with --ntasks-per-node=1 and 4 GPUs per node: JAX alone would give each task
  GPU [SLURM_LOCALID] = [0] only."""
  one_per_node = {**SRUN_STEP, 'SLURM_STEP_NUM_NODES': '2'}
  (call,) = launch({**one_per_node, 'CUDA_VISIBLE_DEVICES': '0,1,2,3'})
  assert call['local_device_ids'] == [0, 1, 2, 3]
  (call,) = launch({**one_per_node, 'SLURM_GPUS_ON_NODE': '2'})
  assert call['local_device_ids'] == [0, 1]
  (call,) = launch(one_per_node)  # no GPUs known (a CPU cluster): JAX decides
  assert 'local_device_ids' not in call
  # One task per GPU (2 tasks on 1 node): JAX's one GPU per task.
  (call,) = launch({**SRUN_STEP, 'SLURM_STEP_NUM_NODES': '1', 'CUDA_VISIBLE_DEVICES': '0,1'})
  assert 'local_device_ids' not in call


def test_detection_off_and_single_process(launch):
  assert launch(SRUN_STEP, detect=False) == []
  assert launch({}) == []


def test_open_mpi_is_left_to_jax(launch):
  (call,) = launch({**ALLOCATION, 'OMPI_COMM_WORLD_SIZE': '4'}, initialization_timeout=60)
  assert call == {'initialization_timeout': 60}


def test_explicit_coordinator_gets_the_timeout(launch):
  (call,) = launch(
    SRUN_STEP, coordinator_address='host0:1234', num_processes=3, process_id=2,
    initialization_timeout=30,
  )  # fmt: skip
  assert call == {
    'coordinator_address': 'host0:1234',
    'num_processes': 3,
    'process_id': 2,
    'initialization_timeout': 30,
  }


def _failing(message):
  def initialize(**kwargs):
    raise RuntimeError(message)

  return initialize


def test_timeout_is_one_clear_error(launch, monkeypatch):
  monkeypatch.setattr(
    jax.distributed, 'initialize', _failing('DEADLINE_EXCEEDED: Barrier timed out')
  )
  with pytest.raises(errors.ConfigError) as info:
    launch(SRUN_STEP)
  message = str(info.value)
  assert '\n' not in message
  assert '2 processes' in message and '300 s' in message and 'DEADLINE_EXCEEDED' in message
  assert 'node[07-08]' in message  # where the coordinator is
  assert 'srun' in message and 'firewall' in message
  with pytest.raises(errors.ConfigError) as info:
    launch({}, coordinator_address='host0:1234', num_processes=3, process_id=0)
  message = str(info.value)
  assert '3 processes' in message and 'host0:1234' in message and '300 s' in message


def test_initialization_timeout_config():
  cfg = config_lib.default()
  assert cfg.distributed.initialization_timeout == 300
  config_lib.check(cfg)
  for bad in (0, -5):
    cfg.distributed.initialization_timeout = bad
    with pytest.raises(errors.ConfigError, match='distributed.initialization_timeout'):
      config_lib.check(cfg)
