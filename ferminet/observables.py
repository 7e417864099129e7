"""Monte Carlo estimators of observables other than the energy: ⟨S²⟩ and the dipole moment.

An *estimator* is a per-walker function ``(params, key, x) -> value`` with ``x`` of shape
(n_electrons * 3,) in bohr, the n_α α electrons first. Its mean over walkers x ~ |ψ|² is
the expectation value of the observable; deterministic estimators ignore ``key``. The
caller batches walkers (vmap) and devices, exactly as for the local energy.

The wavefunction is passed as a *signed log ψ*: ``(params, x) -> (sign, log|ψ|)``, as
``networks.make(...).apply`` returns.

``OBSERVABLES`` lists what can be estimated, with the statistics-file columns each one
writes (or, for the density matrix, the file of the run folder it is written to);
:func:`make` builds the enabled ones for a system and :func:`open_files` the writers of
those written to files.

Everything is in atomic units: positions in bohr, dipole moments in e·bohr
(:data:`DEBYE_PER_AU` converts to debye).
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from ferminet import density, errors
from ferminet import system as system_lib

Params = Any
SignedLogPsi = Callable[[Params, jax.Array], tuple[jax.Array, jax.Array]]
Estimator = Callable[[Params, jax.Array, jax.Array], jax.Array]
# The observables.* config section (or any mapping of its keys), for options such as
# observables.density_basis.
Options = Mapping[str, Any]

DEBYE_PER_AU = system_lib.DEBYE_PER_AU  # 1 e·bohr in debye (its source: system.py)


def to_debye(dipole_au: Any) -> Any:
  """A dipole moment (any shape) in e·bohr converted to debye."""
  return dipole_au * DEBYE_PER_AU


# ---------------------------------------------------------------------------------------
# S²


def _exchange_permutations(electrons: tuple[int, int]) -> np.ndarray:
  """Electron orders with one α and one β electron exchanged; (n_α·n_β, N) integers.

  Row k is the identity order with electrons i (α) and j (β) swapped, for the pairs
  (i, j) in row-major order over i = 0..n_α-1 and j = n_α..N-1.
  """
  n_alpha, n_beta = electrons
  n = n_alpha + n_beta
  i, j = np.meshgrid(np.arange(n_alpha), n_alpha + np.arange(n_beta), indexing='ij')
  i, j = i.ravel(), j.ravel()
  perms = np.tile(np.arange(n), (len(i), 1))
  rows = np.arange(len(i))
  perms[rows, i], perms[rows, j] = j, i
  return perms


def make_s2(
  signed_log_psi: SignedLogPsi,
  electrons: tuple[int, int],
  pair_batch_size: int | None = None,
) -> Estimator:
  """The local estimator of ⟨S²⟩ for a spin-assigned wavefunction.

  The network's ψ(r_1, ..., r_N) is the spatial factor of the antisymmetric state with
  electrons 1..n_α spin up and the rest spin down, so S_z = (n_α - n_β)/2 is fixed. With
  S² = S_z(S_z + 1) + S₋S₊ and the antisymmetry of the full state, applying S₋S₊ and
  projecting back on the assigned spins gives (Szabo & Ostlund eq. 2.271 is the
  determinant case of the same algebra)

    S²ψ/ψ (x) = S_z(S_z + 1) + n_β - Σ_{i∈α, j∈β} ψ(x with r_i ↔ r_j) / ψ(x).

  Check of the sign: for two electrons in one spatial orbital (the singlet) the ratio is
  +1 and S² = 0; for ψ = φ_a(r_1)φ_b(r_2) - φ_b(r_1)φ_a(r_2) (the S_z = 0 triplet) it
  is -1 and S² = 2. The local value is constant, S(S+1), wherever ψ is an eigenfunction
  of S² (a closed-shell RHF or high-spin ROHF determinant); otherwise only its mean
  over |ψ|² is ⟨S²⟩. The formula holds for n_β > n_α and for empty channels too
  (one electron alone: 3/4).

  Cost: n_α·n_β extra evaluations of ψ per walker (vmapped over the pairs), plus one of
  ψ(x); memory grows as n_α·n_β forward passes at once unless ``pair_batch_size`` is
  set.

  Args:
    signed_log_psi: ``(params, x (3N,)) -> (sign, log|ψ|)``.
    electrons: (n_α, n_β).
    pair_batch_size: if set, evaluate the exchanged wavefunctions in chunks of this
      many pairs (``lax.map``) instead of all at once.

  Returns:
    ``s2(params, key, x) -> ()``: the local S² (dimensionless, units of ħ²); ``key``
    is unused.
  """
  n_alpha, n_beta = (int(n) for n in electrons)
  s_z = 0.5 * (n_alpha - n_beta)
  constant = s_z * (s_z + 1.0) + n_beta
  perms = _exchange_permutations((n_alpha, n_beta))

  def s2(params: Params, key: jax.Array, x: jax.Array) -> jax.Array:
    del key
    if not len(perms):  # no α-β pairs: ψ is an eigenfunction, S² = |S_z|(|S_z| + 1)
      return jnp.asarray(constant, x.dtype)
    sign, log_abs = signed_log_psi(params, x)
    pos = x.reshape(-1, 3)

    def ratio(perm):  # ψ(exchanged) / ψ(x)
      sign_p, log_p = signed_log_psi(params, pos[perm].reshape(-1))
      return sign_p * sign * jnp.exp(log_p - log_abs)

    table = jnp.asarray(perms)
    if pair_batch_size is None:
      ratios = jax.vmap(ratio)(table)
    else:
      ratios = jax.lax.map(ratio, table, batch_size=int(pair_batch_size))
    return constant - jnp.sum(ratios)

  return s2


# ---------------------------------------------------------------------------------------
# Dipole moment


def electron_position_sum(x: jax.Array) -> jax.Array:
  """Σ_i r_i of one walker: x (3N,) bohr -> (3,) bohr.

  DeepMind's FermiNet writes the batch mean of this as ``mu_x, mu_y, mu_z``: no nuclear
  part and no electron charge sign, so it is minus the electronic dipole moment.
  """
  return jnp.sum(x.reshape(-1, 3), axis=0)


def make_electron_position_sum() -> Estimator:
  """The estimator of ⟨Σ_i r_i⟩ (the reference's ``mu``): ``(params, key, x) -> (3,)`` bohr."""

  def estimator(params: Params, key: jax.Array, x: jax.Array) -> jax.Array:
    del params, key
    return electron_position_sum(x)

  return estimator


def nuclear_dipole(charges: Any, coords: Any) -> np.ndarray:
  """Σ_I Z_I R_I for charges (n_atoms,) and coords (n_atoms, 3) bohr; (3,) e·bohr."""
  charges = np.asarray(charges, dtype=float).reshape(-1)
  coords = np.asarray(coords, dtype=float).reshape(-1, 3)
  if len(charges) != len(coords):
    raise ValueError(f'{len(charges)} charges but {len(coords)} nuclear positions')
  return charges @ coords


def make_dipole(charges: Any, coords: Any) -> Estimator:
  """The estimator of the electric dipole moment about the origin, in e·bohr.

  μ = Σ_I Z_I R_I - Σ_i r_i (nuclei clamped, electrons of charge -e): the physical
  dipole, the sign and origin convention of PySCF's ``dip_moment``. For a neutral
  molecule it does not depend on the origin.

  Args:
    charges: nuclear charges, (n_atoms,) in e.
    coords: nuclear positions, (n_atoms, 3) bohr.

  Returns:
    ``dipole(params, key, x) -> (3,)`` e·bohr; ``params`` and ``key`` are unused.
  """
  nuclear = nuclear_dipole(charges, coords)

  def dipole(params: Params, key: jax.Array, x: jax.Array) -> jax.Array:
    del params, key
    return jnp.asarray(nuclear, x.dtype) - electron_position_sum(x)

  return dipole


# ---------------------------------------------------------------------------------------
# Registry


class FileWriter(Protocol):
  """Writes an observable's per-step mean to its own file in the run folder."""

  def write(self, step: int, value: Any) -> None:
    """Records step ``step``'s mean of the estimator (its value's shape, host array)."""

  def flush(self) -> None:
    """Makes what was written so far readable."""

  def close(self) -> None: ...


# (path, system, options, first_step, dtype) -> the writer of an observable's file
FileOpener = Callable[[pathlib.Path, system_lib.System, Options, int, Any], FileWriter]


@dataclasses.dataclass(frozen=True)
class Observable:
  """One observable the training loop can estimate.

  Attributes:
    columns: the statistics-file columns it writes, in the order of its estimator's
      value flattened (``value.reshape(-1)``); none for one written to a file.
    factory: ``(signed_log_psi, system, options) -> Estimator``, options the
      observables.* config keys.
    description: one line for logs and errors.
    file: the file of the run folder it is written to instead of columns ('' for
      none); inference runs write ``inference_`` + file.
    open_file: ``(path, system, options, first_step, dtype) -> FileWriter`` for
      ``file``: continues at step ``first_step``, stores rows in ``dtype``.
  """

  columns: tuple[str, ...]
  factory: Callable[[SignedLogPsi, system_lib.System, Options], Estimator]
  description: str
  file: str = ''
  open_file: FileOpener | None = None


def _s2_factory(
  signed_log_psi: SignedLogPsi, system: system_lib.System, options: Options
) -> Estimator:
  del options
  return make_s2(signed_log_psi, tuple(system.electrons))


def _dipole_factory(
  signed_log_psi: SignedLogPsi, system: system_lib.System, options: Options
) -> Estimator:
  del signed_log_psi, options  # the dipole is a function of positions only
  dipole = make_dipole(system.charges, system.coords)

  def estimator(params: Params, key: jax.Array, x: jax.Array) -> jax.Array:
    return jnp.concatenate([electron_position_sum(x), dipole(params, key, x)])

  return estimator


def _density_basis(options: Options) -> str:
  return str(options.get('density_basis') or density.DEFAULT_BASIS)


def _density_factory(
  signed_log_psi: SignedLogPsi, system: system_lib.System, options: Options
) -> Estimator:
  return density.make(signed_log_psi, system, _density_basis(options))


def _density_file(
  path: pathlib.Path, system: system_lib.System, options: Options, first_step: int, dtype: Any
) -> FileWriter:
  basis = density.make_basis(system, _density_basis(options))
  return density.DensityWriter(path, basis, first_step, dtype)


OBSERVABLES: dict[str, Observable] = {
  's2': Observable(('s2',), _s2_factory, 'total spin ⟨S²⟩'),
  'dipole': Observable(
    ('mu_x', 'mu_y', 'mu_z', 'dipole_x', 'dipole_y', 'dipole_z'),
    _dipole_factory,
    "Σ r_i as DeepMind's FermiNet writes it (mu_*, bohr) and the physical dipole "
    'Σ Z R - Σ r (dipole_*, e·bohr)',
  ),
  'density': Observable(
    (),
    _density_factory,
    'the one-body density matrices P^α, P^β in the AO basis observables.density_basis '
    '(steps, 2, n_ao, n_ao), written to density_matrix.npy',
    file=density.FILE,
    open_file=_density_file,
  ),
}


def _checked(names: Iterable[str]) -> list[str]:
  if isinstance(names, str):
    names = [names]
  unique = list(dict.fromkeys(str(n) for n in names))
  unknown = [n for n in unique if n not in OBSERVABLES]
  if unknown:
    raise errors.ConfigError(
      f'unknown observable(s) {", ".join(map(repr, unknown))}: '
      f'choose from {", ".join(map(repr, OBSERVABLES))}'
    )
  return unique


def columns(names: Iterable[str]) -> tuple[str, ...]:
  """The statistics-file columns of the observables ``names``, in order."""
  return tuple(c for n in _checked(names) for c in OBSERVABLES[n].columns)


def make(
  names: Iterable[str],
  signed_log_psi: SignedLogPsi,
  system: system_lib.System,
  options: Options | None = None,
) -> dict[str, Estimator]:
  """The estimators of the observables ``names`` (keys of :data:`OBSERVABLES`).

  Args:
    names: observable names, e.g. ``('s2', 'dipole')``; duplicates are built once.
    signed_log_psi: ``(params, x (3N,)) -> (sign, log|ψ|)``.
    system: the nuclei and electron counts.
    options: the observables.* config keys (e.g. ``density_basis``); defaults if None.

  Returns:
    name -> per-walker estimator ``(params, key, x) -> value``, in the order given;
    ``value.reshape(-1)`` matches ``OBSERVABLES[name].columns`` (for those with columns).

  Raises:
    errors.ConfigError: for a name not in :data:`OBSERVABLES`.
  """
  options = {} if options is None else options
  return {n: OBSERVABLES[n].factory(signed_log_psi, system, options) for n in _checked(names)}


def open_files(
  names: Iterable[str],
  system: system_lib.System,
  options: Options,
  folder: pathlib.Path,
  first_step: int,
  inference: bool = False,
  dtype: Any = np.float32,
) -> dict[str, FileWriter]:
  """Writers of the observables ``names`` that go to files of their own (``Observable.file``).

  Args:
    names: observable names; those without a file are skipped.
    system: the nuclei and electron counts.
    options: the observables.* config keys.
    folder: the run folder.
    first_step: the step of the next row (rows from it on are replaced; see the writers).
    inference: name the files ``inference_<file>`` (as inference_stats.csv).
    dtype: the dtype of the rows stored (the run's).

  Returns:
    name -> writer, whose ``write(step, value)`` takes the step's mean of the estimator.
  """
  writers = {}
  for n in _checked(names):
    o = OBSERVABLES[n]
    if o.file and o.open_file is not None:
      path = pathlib.Path(folder) / (f'inference_{o.file}' if inference else o.file)
      writers[n] = o.open_file(path, system, options, first_step, dtype)
  return writers
