"""Smoke test of the benchmark command: one tiny case, valid JSON out."""

import json
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.mark.slow  # about 25 s: runs bench.py's quick cases in subprocesses
def test_bench_writes_json(tmp_path):
  out = subprocess.run(
      [sys.executable, str(ROOT / 'benchmarks' / 'bench.py'), '--quick', '--cases', 'tiny',
       '--name', 'smoke', '--out', str(tmp_path)],
      capture_output=True,
      text=True,
      timeout=600,
  )  # fmt: skip
  assert out.returncode == 0, out.stderr[-3000:]
  data = json.loads((tmp_path / 'smoke.json').read_text())
  assert {'name', 'quick', 'jax_version', 'platform', 'device', 'results'} <= set(data)
  (result,) = data['results']
  assert result['case'] == 'tiny' and result['electrons'] == 3
  for key in ('compile_s', 'iteration_s', 'iteration_hessian_s', 'local_energy_per_s_forward',
              'local_energy_per_s_hessian', 'peak_memory_mb'):  # fmt: skip
    assert result[key] > 0, key
