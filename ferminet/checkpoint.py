"""Checkpoints: everything needed to continue a run exactly, written atomically.

A checkpoint holds plain numpy data (no JAX objects): ``params`` (the parameter
pytree), ``opt_state`` (the optimizer state's leaves; the structure comes from
a freshly initialised state on restore, so a checkpoint does not depend on the
number of devices), ``walkers`` (all of them, (batch, 3N) bohr), ``width``,
``step``, ``key`` and ``meta`` (system and network shape, checked on restore).

File format: a header line ``FERMINET-CHECKPOINT <version> <sha256 of the
payload>`` followed by the pickled payload, so that a truncated or damaged file
is recognised on load. Files are ``ckpt_<step>.pkl`` (periodic) and
``ckpt_<step>_final.pkl`` (end of a run) in the run folder; an inference run
writes ``inference_ckpt_<step>[_final].pkl`` (prefix INFERENCE), which training
never reads. Each is written to a temporary file, fsynced and renamed, so a
crash leaves the previous file intact.
"""

from __future__ import annotations

import hashlib
import pathlib
import pickle
import re
import warnings
from typing import Any

import numpy as np

from ferminet import errors, writers

TRAIN = 'ckpt'  # file-name prefix of training checkpoints
INFERENCE = 'inference_ckpt'  # of inference checkpoints (walkers, key and step of inference)
_MAGIC = b'FERMINET-CHECKPOINT'
FORMAT_VERSION = 2


def path_for(
  directory: pathlib.Path, step: int, final: bool = False, prefix: str = TRAIN
) -> pathlib.Path:
  return pathlib.Path(directory) / f'{prefix}_{step:08d}{"_final" if final else ""}.pkl'


def parse_name(path: pathlib.Path, prefix: str = TRAIN) -> tuple[int, bool] | None:
  m = re.fullmatch(rf'{re.escape(prefix)}_(\d+)(_final)?\.pkl', path.name)
  return (int(m.group(1)), bool(m.group(2))) if m else None


def list_checkpoints(directory: pathlib.Path, prefix: str = TRAIN) -> list[pathlib.Path]:
  """Checkpoints in ``directory``, oldest first (at equal steps the final one last)."""
  directory = pathlib.Path(directory)
  if not directory.is_dir():
    return []
  found = [(key, p) for p in directory.iterdir() if (key := parse_name(p, prefix)) is not None]
  return [p for _, p in sorted(found)]


def encode(data: dict[str, Any]) -> bytes:
  """The file contents for ``data``: header with checksum, then the pickle."""
  payload = pickle.dumps(data, protocol=pickle.HIGHEST_PROTOCOL)
  digest = hashlib.sha256(payload).hexdigest().encode()
  return b'%s %d %s\n' % (_MAGIC, FORMAT_VERSION, digest) + payload


def save(
  directory: pathlib.Path,
  data: dict[str, Any],
  keep: int = 3,
  final: bool = False,
  prefix: str = TRAIN,
) -> pathlib.Path:
  """Writes ``data`` (with key 'step') atomically and prunes old files.

  Keeps the newest ``keep`` periodic checkpoints and the newest final one.

  Raises:
    errors.OutputError: the file could not be written (e.g. the disk is full);
      the checkpoints written before are untouched.
  """
  directory = pathlib.Path(directory)
  path = path_for(directory, int(data['step']), final, prefix)
  blob = encode(data)
  try:
    directory.mkdir(parents=True, exist_ok=True)
    with writers.atomic_open(path, 'wb') as f:
      f.write(blob)
  except OSError as e:
    previous = [p.name for p in list_checkpoints(directory, prefix)]
    kept = f'the previous checkpoint {previous[-1]} is intact' if previous else 'none was written'
    raise errors.OutputError(
      f'cannot write checkpoint {path}: {e.strerror or e}; {kept}. Free space or fix '
      'permissions, then rerun the same command to continue'
    ) from None
  existing = list_checkpoints(directory, prefix)
  periodic = [p for p in existing if not parse_name(p, prefix)[1]]
  finals = [p for p in existing if parse_name(p, prefix)[1]]
  for old in periodic[:-keep] + finals[:-1]:
    old.unlink(missing_ok=True)
  return path


def load(path: pathlib.Path) -> dict[str, Any]:
  """Reads and verifies one checkpoint.

  Raises:
    errors.ConfigError: the file is unreadable, not a ferminet checkpoint, or damaged.
  """
  try:
    blob = pathlib.Path(path).read_bytes()
  except OSError as e:
    raise errors.ConfigError(f'cannot read checkpoint {path}: {e.strerror}') from None
  header, _, payload = blob.partition(b'\n')
  fields = header.split(b' ')
  if len(fields) != 3 or fields[0] != _MAGIC:
    raise errors.ConfigError(f'{path} is not a ferminet checkpoint')
  if fields[1] != str(FORMAT_VERSION).encode():
    raise errors.ConfigError(
      f'{path} has checkpoint format {fields[1].decode(errors="replace")}; this ferminet '
      f'reads format {FORMAT_VERSION}'
    )
  if hashlib.sha256(payload).hexdigest().encode() != fields[2]:
    raise errors.ConfigError(f'checkpoint {path} is damaged (checksum mismatch; truncated?)')
  try:
    data = pickle.loads(payload)
  except (EOFError, pickle.UnpicklingError, AttributeError, ImportError) as e:
    raise errors.ConfigError(f'cannot read checkpoint {path}: {e}') from None
  if not isinstance(data, dict) or 'step' not in data:
    raise errors.ConfigError(f'{path} is not a ferminet checkpoint')
  return data


def load_latest(directory: pathlib.Path, prefix: str = TRAIN) -> dict[str, Any] | None:
  """The newest valid checkpoint in ``directory``, warning about and skipping damaged ones."""
  found = find_latest(directory, prefix)
  return found[1] if found is not None else None


def find_latest(
  directory: pathlib.Path, prefix: str = TRAIN
) -> tuple[pathlib.Path, dict[str, Any]] | None:
  """The path and contents of the newest valid checkpoint in ``directory`` (as load_latest)."""
  for path in reversed(list_checkpoints(directory, prefix)):
    try:
      return path, load(path)
    except errors.ConfigError as e:
      warnings.warn(f'{e}; trying the previous checkpoint', stacklevel=3)
  return None


def check_compatible(meta: dict[str, Any], expected: dict[str, Any], where: str) -> None:
  """Raises a clear error when a checkpoint belongs to another system or network."""
  for key, value in expected.items():
    got = meta.get(key)
    if isinstance(value, np.ndarray):
      same = got is not None and np.shape(got) == np.shape(value) and np.allclose(got, value)
    else:
      same = got == value
    if not same:
      raise errors.ConfigError(
        f'checkpoint in {where} does not match this run: {key} is {got}, expected {value}; '
        'use the same system and network settings or another save_path'
      )
