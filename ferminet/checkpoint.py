"""Checkpoints: everything needed to continue a run exactly, written atomically.

A checkpoint is a pickle of plain numpy data (no JAX objects):
``params`` (the parameter pytree), ``opt_state`` (the optimizer state's leaves;
the structure comes from a freshly initialised state on restore, so a
checkpoint does not depend on the number of devices), ``walkers`` (all of them,
(batch, 3N) bohr), ``width``, ``step``, ``key`` and ``meta`` (system and
network shape, checked on restore). Files are ``ckpt_<step>.pkl`` in the run
folder, written to a temporary file, fsynced and renamed.
"""

from __future__ import annotations

import pathlib
import pickle
import re
import warnings
from typing import Any

import numpy as np

from ferminet import errors, writers

_PATTERN = re.compile(r'ckpt_(\d+)\.pkl$')
FORMAT_VERSION = 1


def path_for(directory: pathlib.Path, step: int) -> pathlib.Path:
  return pathlib.Path(directory) / f'ckpt_{step:08d}.pkl'


def list_checkpoints(directory: pathlib.Path) -> list[pathlib.Path]:
  """Checkpoints in ``directory``, oldest first."""
  directory = pathlib.Path(directory)
  if not directory.is_dir():
    return []
  found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _PATTERN.match(p.name))]
  return [p for _, p in sorted(found)]


def save(directory: pathlib.Path, data: dict[str, Any], keep: int = 3) -> pathlib.Path:
  """Writes ``data`` (with key 'step') atomically; keeps the newest ``keep`` files."""
  directory = pathlib.Path(directory)
  path = path_for(directory, int(data['step']))
  with writers.atomic_open(path, 'wb') as f:
    pickle.dump(dict(data, format_version=FORMAT_VERSION), f, protocol=pickle.HIGHEST_PROTOCOL)
  for old in list_checkpoints(directory)[:-keep]:
    old.unlink(missing_ok=True)
  return path


def load(path: pathlib.Path) -> dict[str, Any]:
  """Reads one checkpoint; a file that is not one raises errors.ConfigError."""
  try:
    with pathlib.Path(path).open('rb') as f:
      data = pickle.load(f)
  except (OSError, EOFError, pickle.UnpicklingError, AttributeError, ImportError) as e:
    raise errors.ConfigError(f'cannot read checkpoint {path}: {e}') from None
  if not isinstance(data, dict) or data.get('format_version') != FORMAT_VERSION:
    raise errors.ConfigError(f'{path} is not a ferminet checkpoint (format {FORMAT_VERSION})')
  return data


def load_latest(directory: pathlib.Path) -> dict[str, Any] | None:
  """The newest readable checkpoint in ``directory`` (falling back past broken ones)."""
  for path in reversed(list_checkpoints(directory)):
    try:
      return load(path)
    except Exception as e:  # noqa: BLE001 - any unreadable file: try the previous one
      warnings.warn(
        f'checkpoint {path.name} is unreadable ({e}); trying the previous one', stacklevel=2
      )
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
