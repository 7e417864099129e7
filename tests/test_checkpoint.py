"""Checkpoint files and the stats CSV: atomic writes, fallbacks, clear errors."""

import pickle

import numpy as np
import pytest

from ferminet import checkpoint, errors, writers


def test_save_keeps_newest_and_falls_back_past_broken(tmp_path):
  for step in (1, 2, 3, 4):
    checkpoint.save(tmp_path, {'step': step, 'x': np.arange(step)}, keep=3)
  assert [p.name for p in checkpoint.list_checkpoints(tmp_path)] == [
    'ckpt_00000002.pkl',
    'ckpt_00000003.pkl',
    'ckpt_00000004.pkl',
  ]
  assert not list(tmp_path.glob('*.tmp'))
  checkpoint.path_for(tmp_path, 4).write_bytes(b'truncated')
  with pytest.warns(UserWarning, match='unreadable'):
    assert checkpoint.load_latest(tmp_path)['step'] == 3


def test_foreign_files_are_clear_errors(tmp_path):
  path = tmp_path / 'other.pkl'
  path.write_bytes(pickle.dumps({'not': 'ours'}))
  with pytest.raises(errors.ConfigError, match='not a ferminet checkpoint'):
    checkpoint.load(path)
  path.write_bytes(b'\x00garbage')
  with pytest.raises(errors.ConfigError, match='cannot read'):
    checkpoint.load(path)


def test_check_compatible_names_the_difference():
  meta = {'electrons': (1, 1), 'coords': np.zeros((2, 3))}
  with pytest.raises(errors.ConfigError, match='coords'):
    checkpoint.check_compatible(meta, {'electrons': (1, 1), 'coords': np.zeros((1, 3))}, 'x')
  with pytest.raises(errors.ConfigError, match='electrons'):
    checkpoint.check_compatible(meta, {'electrons': (2, 1)}, 'x')
  checkpoint.check_compatible(meta, {'electrons': (1, 1), 'coords': np.zeros((2, 3))}, 'x')


def test_stats_csv_drops_half_written_row_and_rejects_foreign_files(tmp_path):
  path = tmp_path / 'train_stats.csv'
  path.write_text('step,energy,ewmean,ewvar,pmove,variance\n0,-1,-1,0,0.5,0.1\n1,-1.1,-1')
  assert [r['step'] for r in writers.read_rows(path)] == ['0']
  writer = writers.StatsWriter(path, first_step=1)
  writer.write(1, -1.2, 0.5, 0.1)
  writer.close()
  assert path.read_text().splitlines()[1:] == [
    '0,-1,-1,0,0.5,0.1',
    '1,-1.2,-1.02,0.0036,0.5000,0.1',
  ]
  other = tmp_path / 'other.csv'
  other.write_text('a,b\n1,2\n')
  with pytest.raises(errors.ConfigError, match='columns'):
    writers.read_rows(other)
