"""Checkpoint files and the stats CSV: atomic writes, fallbacks, clear errors."""

import errno
import os
import pickle

import numpy as np
import pytest

from ferminet import checkpoint, errors, writers


def test_save_keeps_newest_and_falls_back_past_truncated(tmp_path):
  for step in (1, 2, 3, 4):
    checkpoint.save(tmp_path, {'step': step, 'x': np.arange(step)}, keep=3)
  assert [p.name for p in checkpoint.list_checkpoints(tmp_path)] == [
    'ckpt_00000002.pkl',
    'ckpt_00000003.pkl',
    'ckpt_00000004.pkl',
  ]
  assert not list(tmp_path.glob('*.tmp'))
  newest = checkpoint.path_for(tmp_path, 4)
  newest.write_bytes(newest.read_bytes()[:-7])  # a node died while writing (no atomic rename)
  with pytest.warns(UserWarning, match='damaged'):
    assert checkpoint.load_latest(tmp_path)['step'] == 3


def test_flipped_byte_is_detected(tmp_path):
  path = checkpoint.save(tmp_path, {'step': 1, 'x': np.arange(100.0)})
  blob = bytearray(path.read_bytes())
  blob[-20] ^= 1
  path.write_bytes(bytes(blob))
  with pytest.raises(errors.ConfigError, match='checksum'):
    checkpoint.load(path)


def test_final_checkpoint_survives_rotation(tmp_path):
  checkpoint.save(tmp_path, {'step': 5}, keep=2, final=True)
  for step in (6, 7, 8):
    checkpoint.save(tmp_path, {'step': step}, keep=2)
  names = [p.name for p in checkpoint.list_checkpoints(tmp_path)]
  assert names == ['ckpt_00000005_final.pkl', 'ckpt_00000007.pkl', 'ckpt_00000008.pkl']
  checkpoint.save(tmp_path, {'step': 8}, keep=2, final=True)  # a newer final replaces it
  names = [p.name for p in checkpoint.list_checkpoints(tmp_path)]
  assert names == ['ckpt_00000007.pkl', 'ckpt_00000008.pkl', 'ckpt_00000008_final.pkl']
  assert checkpoint.load_latest(tmp_path)['step'] == 8


def test_disk_full_is_a_clear_error_and_keeps_the_previous(tmp_path, monkeypatch):
  checkpoint.save(tmp_path, {'step': 1, 'x': np.arange(3)})

  def full(fd):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

  monkeypatch.setattr(os, 'fsync', full)
  with pytest.raises(errors.OutputError, match='No space left.*ckpt_00000001.pkl is intact'):
    checkpoint.save(tmp_path, {'step': 2, 'x': np.arange(3)})
  monkeypatch.undo()
  assert [p.name for p in tmp_path.iterdir()] == ['ckpt_00000001.pkl']  # no temporary debris
  assert checkpoint.load_latest(tmp_path)['step'] == 1


def test_foreign_files_are_clear_errors(tmp_path):
  path = tmp_path / 'other.pkl'
  path.write_bytes(pickle.dumps({'not': 'ours'}))
  with pytest.raises(errors.ConfigError, match='not a ferminet checkpoint'):
    checkpoint.load(path)
  path.write_bytes(b'\x00garbage')
  with pytest.raises(errors.ConfigError, match='not a ferminet checkpoint'):
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
  # A file from before the rolled_back column, with a half-written last row.
  path.write_text('step,energy,ewmean,ewvar,pmove,variance\n0,-1,-1,0,0.5,0.1\n1,-1.1,-1')
  assert [r['step'] for r in writers.read_rows(path)] == ['0']
  writer = writers.StatsWriter(path, first_step=1)
  writer.write(1, -1.2, 0.5, 0.1)
  writer.write(2, float('nan'), 0.5, float('nan'), rolled_back=True)  # ewmean unchanged
  writer.close()
  assert path.read_text().splitlines() == [
    'step,energy,ewmean,ewvar,pmove,variance,rolled_back',
    '0,-1,-1,0,0.5,0.1,0',
    '1,-1.2,-1.02,0.0035999999999999986,0.5000,0.1,0',  # exact (repr)
    '2,nan,-1.02,0.0035999999999999986,0.5000,nan,1',
  ]
  other = tmp_path / 'other.csv'
  other.write_text('a,b\n1,2\n')
  with pytest.raises(errors.ConfigError, match='columns'):
    writers.read_rows(other)
