"""Reading checkpoints of DeepMind's FermiNet (``qmcjax_ckpt_<t>.npz``) into our layout.

The reference saves, after iteration ``t`` (counted from 0), ``np.savez`` of

- ``t``: that iteration, so ``t + 1`` iterations are complete (our ``step``);
- ``data``: a dict ``positions`` (devices, walkers per device, 3N) bohr, α electrons
  first, ``spins`` (devices, walkers, N) of ±1, ``atoms`` (devices, walkers, atoms, 3)
  bohr and ``charges`` (devices, walkers, atoms); older versions saved the positions
  array alone;
- ``params``: the parameter tree, every leaf with a leading device axis (replicated);
- ``opt_state``: the optimizer's state (kfac-jax or optax objects: never read here,
  so KFAC statistics restart);
- ``mcmc_width``: the Metropolis proposal width, bohr, replicated over devices.

``params`` is ``{'layers': {'input': {}, 'streams': [{'single': {w, b}, 'double':
{w, b}}, ..., {'single': {w, b}}]}, 'orbital': [{w[, b]}, ...], 'envelope': [{pi,
sigma}, ...]}`` (older versions: ``single`` and ``double`` lists at the top level), with
one orbital and envelope entry per spin channel that holds electrons. The
conversion (:func:`to_params`) into :func:`ferminet.networks.make`'s tree:

========================  =================================================================
reference                 ours
========================  =================================================================
features per atom, pair   (r, x, y, z) -> (x, y, z, r): rows of the first layer permuted,
                          and rows and columns of layers whose residual carries them on
one-electron layer input  [h, mean h and mean h_i· of occupied channels only] -> [h, mean_α h,
                          mean_β h, mean_α h_i·, mean_β h_i·]: zero rows for an empty channel
orbital columns           det * n_orbitals + orbital: the same
isotropic envelope        exp(-r σ) -> exp(-r |σ|): the same for σ >= 0 (σ < 0 is refused)
full envelope σ           (3, 3, atoms, out) -> (atoms, 3, 3, out)
residual, r_ii            (h + tanh z) / sqrt(2), 0: ``network.ferminet.reference_layers``
========================  =================================================================

Security: the file holds pickled Python objects (``np.load(..., allow_pickle=True)``),
and unpickling can run arbitrary code: only restore files you trust.
"""

from __future__ import annotations

import dataclasses
import pathlib
import re
import warnings
from typing import Any

import ml_collections
import numpy as np

from ferminet import errors
from ferminet import system as system_lib

PATTERN = re.compile(r'qmcjax_ckpt_(\d+)\.npz')
# Where the reference keeps each input feature of an atom (or pair): ours are (x, y, z, r),
# its are (r, x, y, z).
_FEATURE_ORDER = np.array([1, 2, 3, 0])


@dataclasses.dataclass(frozen=True)
class ReferenceCheckpoint:
  """The parts of a reference checkpoint that we restore (numpy, on the host)."""

  path: pathlib.Path
  step: int  # completed iterations (the file's t + 1)
  walkers: np.ndarray  # (all walkers, 3N) bohr
  electrons: tuple[int, int] | None  # from ``spins``; None in the oldest format
  atoms: np.ndarray | None  # (atoms, 3) bohr
  charges: np.ndarray | None  # (atoms,)
  width: float | None  # bohr
  params: Any  # the reference's tree, device axis removed


def is_reference(path: pathlib.Path) -> bool:
  """Whether ``path`` is named like a reference checkpoint."""
  return PATTERN.fullmatch(pathlib.Path(path).name) is not None


def list_checkpoints(directory: pathlib.Path) -> list[pathlib.Path]:
  """Reference checkpoints in ``directory``, oldest first."""
  directory = pathlib.Path(directory)
  if not directory.is_dir():
    return []
  found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := PATTERN.fullmatch(p.name))]
  return [p for _, p in sorted(found)]


def load(path: pathlib.Path) -> ReferenceCheckpoint:
  """Reads a reference checkpoint (unpickles it: trusted files only).

  Raises:
    errors.ConfigError: the file is unreadable or not laid out as the reference's.
  """
  path = pathlib.Path(path)
  try:
    with np.load(path, allow_pickle=True) as f:
      fields = set(f.files)
      if not {'t', 'data', 'params'} <= fields:
        raise errors.ConfigError(
          f'{path} is not a FermiNet checkpoint: it holds {sorted(fields)}, not t, data, params'
        )
      t = int(np.asarray(f['t']))
      data = f['data']
      data = data.item() if data.dtype == object else data
      params = f['params'].item()
      width = np.asarray(f['mcmc_width'].tolist()) if 'mcmc_width' in fields else None
  except errors.ConfigError:
    raise
  except Exception as e:  # a damaged zip, a pickle naming classes we lack, ...
    raise errors.ConfigError(f'cannot read reference checkpoint {path}: {e}') from None
  if isinstance(data, dict):
    positions = np.asarray(data['positions'])
    spins = np.asarray(data['spins']) if data.get('spins') is not None else None
    atoms = np.asarray(data['atoms']) if data.get('atoms') is not None else None
    charges = np.asarray(data['charges']) if data.get('charges') is not None else None
  else:
    positions, spins, atoms, charges = np.asarray(data), None, None, None
  if positions.ndim not in (2, 3):
    raise errors.ConfigError(
      f'{path}: walker positions of shape {positions.shape}, expected (devices, walkers, 3N)'
    )
  devices = positions.shape[0] if positions.ndim == 3 else None
  first = (0,) * (positions.ndim - 1)  # the first walker (of the first device)
  electrons = None
  if spins is not None:
    s = spins.reshape(-1, spins.shape[-1])[0]
    electrons = (int(np.sum(s > 0)), int(np.sum(s < 0)))
  return ReferenceCheckpoint(
    path=path,
    step=t + 1,
    walkers=positions.reshape(-1, positions.shape[-1]),
    electrons=electrons,
    atoms=None if atoms is None else atoms[first],
    charges=None if charges is None else charges[first],
    width=None if width is None else float(np.ravel(width)[0]),
    params=_strip_device_axis(params, devices),
  )


def _strip_device_axis(params: Any, devices: int | None) -> Any:
  """The tree with the leading (replica) axis removed when every leaf has one."""
  leaves = _leaves(params)
  if devices and leaves and all(np.ndim(x) >= 1 and np.shape(x)[0] == devices for _, x in leaves):
    return _map(lambda x: np.asarray(x)[0], params)
  return _map(np.asarray, params)


def _leaves(tree: Any, prefix: str = '') -> list[tuple[str, Any]]:
  """(path, leaf) of a tree of dicts, lists and tuples, e.g. ('orbital[0].w', array)."""
  if isinstance(tree, dict):
    return [kv for k, v in tree.items() for kv in _leaves(v, f'{prefix}.{k}' if prefix else k)]
  if isinstance(tree, list | tuple):
    return [kv for i, v in enumerate(tree) for kv in _leaves(v, f'{prefix}[{i}]')]
  return [(prefix, tree)]


def _map(fn, tree: Any) -> Any:
  if isinstance(tree, dict):
    return {k: _map(fn, v) for k, v in tree.items()}
  if isinstance(tree, list | tuple):
    return [_map(fn, v) for v in tree]
  return fn(tree)


def latest(directory: pathlib.Path) -> ReferenceCheckpoint | None:
  """The newest readable reference checkpoint in ``directory`` (None: there is none).

  Unreadable ones (e.g. truncated by a killed job) are skipped with a warning, as the
  reference does; when none can be read, the newest one's error is raised.
  """
  first_error = None
  for path in reversed(list_checkpoints(directory)):
    try:
      return load(path)
    except errors.ConfigError as e:
      warnings.warn(f'{e}; trying the previous checkpoint', stacklevel=2)
      first_error = first_error or e
  if first_error is not None:
    raise first_error
  return None


def check_system(ckpt: ReferenceCheckpoint, system: system_lib.System) -> None:
  """Raises a clear error when the checkpoint holds another molecule than ``system``.

  Compares atoms (to 1e-5 bohr: the reference may run in float32), charges, electrons
  (α, β) and the walkers' 3N.
  """
  electrons = tuple(int(n) for n in system.electrons)
  coords = np.asarray(system.coords, dtype=float)
  charges = np.asarray(system.charges, dtype=float)
  differences = []
  if ckpt.atoms is not None and (
    ckpt.atoms.shape != coords.shape or not np.allclose(ckpt.atoms, coords, atol=1e-5, rtol=0)
  ):
    differences.append(f'atoms at {ckpt.atoms.tolist()} bohr, this run {coords.tolist()}')
  if ckpt.charges is not None and (
    ckpt.charges.shape != charges.shape or not np.allclose(ckpt.charges, charges)
  ):
    differences.append(f'charges {ckpt.charges.tolist()}, this run {charges.tolist()}')
  if ckpt.electrons is not None and ckpt.electrons != electrons:
    differences.append(f'electrons (alpha, beta) {ckpt.electrons}, this run {electrons}')
  if ckpt.walkers.shape[-1] != 3 * sum(electrons):
    n = ckpt.walkers.shape[-1] / 3
    differences.append(f'walkers of {n:g} electrons, this run {sum(electrons)}')
  if differences:
    raise errors.ConfigError(
      f'reference checkpoint {ckpt.path} is of another system: {"; ".join(differences)}. '
      'Use the same molecule, charge and spin'
    )


def _layers(params: dict) -> tuple[list[dict], list[str]]:
  """The reference's layer list in its newer form, and the parameters we have no place for."""
  extra = [k for k in params if k not in ('layers', 'single', 'double', 'orbital', 'envelope')]
  if 'layers' in params:
    layers = params['layers']
    if not isinstance(layers, dict) or 'streams' not in layers:
      return [], extra + ['layers']
    if _leaves(layers.get('input', {})):
      extra.append('layers.input (learned input features)')
    extra += [f'layers.{k}' for k in layers if k not in ('input', 'streams')]
    streams = list(layers['streams'])
  else:  # before the 'layers' dict: parallel lists
    single, double = list(params.get('single', [])), list(params.get('double', []))
    streams = [
      {'single': s, **({'double': double[i]} if i < len(double) else {})}
      for i, s in enumerate(single)
    ]
  if streams and 'single' not in streams[-1]:
    extra.append('a last layer without a one-electron part (use_last_layer)')
    streams = streams[:-1]
  for i, layer in enumerate(streams):
    extra += [f'layer {i} {k}' for k in layer if k not in ('single', 'double')]
    if 'double' in layer and not isinstance(layer['double'], dict):
      extra.append(f'layer {i} double (separate_spin_channels)')
  return streams, extra


def _shape(tree: Any, *keys: Any) -> tuple[int, ...] | None:
  for key in keys:
    try:
      tree = tree[key]
    except (KeyError, IndexError, TypeError):
      return None
  return tuple(np.shape(tree))


def _determinants(widths: list[int], active: list[int], full_det: bool) -> int | None:
  """Determinants giving orbital layers of these widths, None if none does."""
  per_det = [sum(active) if full_det else n for n in active]
  if len(widths) != len(active) or any(w % k for w, k in zip(widths, per_det, strict=True)):
    return None
  dets = {w // k for w, k in zip(widths, per_det, strict=True)}
  return dets.pop() if len(dets) == 1 else None


def _describe(params: dict, spins: tuple[int, int], full_det: bool) -> dict[str, Any]:
  """The reference network's options as far as the parameter shapes tell them.

  The orbital widths are read with this run's ``full_det`` first (some widths fit both:
  K full determinants of (1, 1) electrons look like 2K spin-factored ones).
  """
  streams, _ = _layers(params)
  ones = [(_shape(layer, 'single', 'w') or (0, 0))[1] for layer in streams]
  twos = [(_shape(layer, 'double', 'w') or (0, 0))[1] for layer in streams[:-1]]
  active = [n for n in spins if n]
  widths = [(_shape(o, 'w') or (0, 0))[-1] for o in params.get('orbital', [])]
  their_full_det: Any = full_det
  dets: Any = _determinants(widths, active, full_det)
  if dets is None and _determinants(widths, active, not full_det) is not None:
    their_full_det, dets = not full_det, _determinants(widths, active, not full_det)
  if dets is None:
    dets = f'unknown (orbital layer widths {widths})'
  if len(active) == 1:
    their_full_det = 'either'  # one spin channel: the same network
  envelope = params.get('envelope', [{}])
  first = envelope[0] if isinstance(envelope, list | tuple) and envelope else envelope
  keys = sorted(first) if isinstance(first, dict) else []
  kinds = {2: 'isotropic', 3: 'diagonal', 4: 'full'}
  kind = kinds.get(np.ndim(first['sigma'])) if keys == ['pi', 'sigma'] else None
  return {
    'one-electron widths': tuple(ones),
    'two-electron widths': tuple(twos),
    'determinants': dets,
    'full_det': their_full_det,
    'bias_orbitals': any('b' in o for o in params.get('orbital', [])),
    'envelope_type': kind or f'an envelope with parameters {keys}',
  }


def _ours(cfg: ml_collections.ConfigDict, spins: tuple[int, int]) -> dict[str, Any]:
  hidden = [tuple(int(d) for d in layer) for layer in cfg.ferminet.hidden_dims]
  full_det: Any = bool(cfg.full_det)
  active = [n for n in spins if n]
  if len(active) == 1:
    full_det = 'either'
  return {
    'one-electron widths': tuple(h[0] for h in hidden),
    'two-electron widths': tuple(h[1] for h in hidden[:-1]),
    'determinants': int(cfg.determinants),
    'full_det': full_det,
    'bias_orbitals': bool(cfg.bias_orbitals),
    'envelope_type': cfg.envelope_type,
  }


_FLAGS = {
  'one-electron widths': 'network.ferminet.hidden_dims',
  'two-electron widths': 'network.ferminet.hidden_dims (the last layer has none)',
  'determinants': 'network.determinants',
  'full_det': 'network.full_det',
  'bias_orbitals': 'network.bias_orbitals',
  'envelope_type': 'network.envelope_type',
}


def _unconverted_options(cfg: Any) -> list[str]:
  """Network settings whose parameters the converter does not map (yet)."""
  out = []
  if cfg.network_type != 'ferminet':
    out.append(f'network.network_type {cfg.network_type!r}')
  for key in ('use_last_layer', 'separate_spin_channels'):
    if cfg.ferminet.get(key):
      out.append(f'network.ferminet.{key}')
  if cfg.jastrow not in ('default', 'none'):  # 'default' is none for the FermiNet
    out.append(f'network.jastrow {cfg.jastrow!r}')
  if cfg.envelope_type in ('null', 'bottleneck', 'sto'):
    out.append(f'network.envelope_type {cfg.envelope_type!r}')
  if cfg.rescale_inputs:  # the same parameters, but their values mean other inputs
    out.append('network.rescale_inputs')
  return out


def to_params(
  ckpt: ReferenceCheckpoint,
  cfg: ml_collections.ConfigDict,
  system: system_lib.System,
  template: Any,
) -> Any:
  """The reference's parameters in our layout (numpy leaves shaped as ``template``'s).

  Args:
    ckpt: the loaded checkpoint.
    cfg: the ``network`` section of this run's config.
    system: this run's system (electrons, atoms).
    template: parameters of this run's network (``networks.make(cfg, system).init``).

  Raises:
    errors.ConfigError: one error naming everything that differs (options, parameters
      we have no place for, shapes), when the network is not this run's.
  """
  spins = tuple(int(n) for n in system.electrons)
  params = ckpt.params
  unconverted = _unconverted_options(cfg)
  if unconverted:
    raise errors.ConfigError(
      f'{ckpt.path}: converting reference checkpoints is written for the basic FermiNet; '
      f'this run sets {", ".join(unconverted)}'
    )
  if not isinstance(params, dict):
    raise errors.ConfigError(f'{ckpt.path}: parameters are a {type(params).__name__}, not a dict')
  streams, extra = _layers(params)
  theirs, ours = _describe(params, spins, bool(cfg.full_det)), _ours(cfg, spins)
  problems = [
    f'{key} {theirs[key]} (this run {ours[key]}: {_FLAGS[key]})'
    for key in ours
    if theirs[key] != ours[key]
  ]
  if extra:
    problems.append(f'parameters this FermiNet does not have: {", ".join(extra)}')
  if not cfg.ferminet.get('reference_layers', False):
    problems.append(
      'its layers use residual (h + tanh z)/sqrt(2) and r_ii = 0: set '
      '--config.network.ferminet.reference_layers=True'
    )
  if not problems:
    if cfg.envelope_type == 'isotropic':
      negative = [i for i, e in enumerate(params['envelope']) if np.any(np.asarray(e['sigma']) < 0)]
      if negative:
        problems.append(
          f'isotropic envelope sigma < 0 in spin channel(s) {negative}: exp(-r sigma) grows, '
          'which our exp(-r |sigma|) cannot represent'
        )
    if not problems:
      converted = _convert(streams, params, cfg, spins, len(system.charges))
      problems += _shape_problems(converted, template)
  if problems:
    raise errors.ConfigError(
      f"reference checkpoint {ckpt.path} holds another network than this run's: "
      + '; '.join(problems)
    )
  return converted


def _dense(p: dict, rows: np.ndarray, cols: np.ndarray | None) -> dict:
  """A dense layer {w (in, out)[, b (out,)]} with its rows (and columns) reordered."""
  out = {**p, 'w': np.asarray(p['w'])[rows]}
  if cols is not None:
    out['w'] = out['w'][:, cols]
    if 'b' in p:
      out['b'] = np.asarray(p['b'])[cols]
  return out


def _convert(
  streams: list[dict],
  params: dict,
  cfg: ml_collections.ConfigDict,
  spins: tuple[int, int],
  n_atoms: int,
) -> dict:
  """The tree in our layout; shapes are checked afterwards (:func:`_shape_problems`).

  ``order_one[c]`` and ``order_two[c]`` are the reference's index of our feature c in
  each stream: at the input, (x, y, z, r) of ours are its (1, 2, 3, 0). A residual layer
  adds its input to its output, so its output units keep the input's order (its columns
  are reordered too); any other layer's output is in the reference's order.
  """
  active = [k for k, n in enumerate(spins) if n]
  order_one = (np.arange(n_atoms)[:, None] * 4 + _FEATURE_ORDER[None, :]).reshape(-1)
  order_two = _FEATURE_ORDER
  layers = []
  for layer in streams:
    w = np.asarray(layer['single']['w'])
    d_one, d_two = len(order_one), len(order_two)
    if w.ndim != 2 or w.shape[0] != (1 + len(active)) * d_one + len(active) * d_two:
      layers.append({'single': dict(layer['single'])})
      continue  # the shape check names it
    # Rows: [h, mean h of each occupied channel, mean h_i. of each] -> [h, mean_α h,
    # mean_β h, mean_α h_i., mean_β h_i.], zero rows for an empty channel.
    starts = np.cumsum([0] + [d_one] * (1 + len(active)) + [d_two] * len(active))
    h, *rest = (w[a:b] for a, b in zip(starts[:-1], starts[1:], strict=True))
    means, pairs = rest[: len(active)], rest[len(active) :]
    ours_means = [np.zeros((d_one, w.shape[1]), w.dtype)] * 2
    ours_pairs = [np.zeros((d_two, w.shape[1]), w.dtype)] * 2
    for a, k in enumerate(active):
      ours_means[k], ours_pairs[k] = means[a][order_one], pairs[a][order_two]
    stacked = np.concatenate([h[order_one], *ours_means, *ours_pairs])
    residual = w.shape[1] == d_one
    single = {**layer['single'], 'w': stacked}
    new = {'single': _dense(single, np.arange(len(stacked)), order_one) if residual else single}
    if 'double' in layer:
      wd = np.asarray(layer['double']['w'])
      pair_residual = wd.ndim == 2 and wd.shape == (d_two, d_two)
      new['double'] = _dense(layer['double'], order_two, order_two if pair_residual else None)
      order_two = order_two if pair_residual else np.arange(wd.shape[-1])
    order_one = order_one if residual else np.arange(w.shape[1])
    layers.append(new)
  orbital = [_dense(o, order_one, None) for o in params['orbital']]
  envelope = []
  for e in params['envelope']:
    sigma = np.asarray(e['sigma'])
    if cfg.envelope_type == 'full':
      sigma = np.transpose(sigma, (2, 0, 1, 3))
    envelope.append({'pi': e['pi'], 'sigma': sigma})
  tree = {'layers': layers, 'orbital': orbital, 'envelope': envelope}
  return _map(np.asarray, tree)


def _shape_problems(converted: Any, template: Any) -> list[str]:
  ours, theirs = dict(_leaves(template)), dict(_leaves(converted))
  problems = [f'{k} missing' for k in ours if k not in theirs]
  problems += [f'{k} has no place here' for k in theirs if k not in ours]
  problems += [
    f'{k} of shape {np.shape(theirs[k])}, expected {np.shape(v)}'
    for k, v in ours.items()
    if k in theirs and np.shape(theirs[k]) != np.shape(v)
  ]
  return problems
