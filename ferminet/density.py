"""The spin-resolved one-body reduced density matrix in a Gaussian AO basis, by Monte Carlo.

Definitions (real ψ, as the network's; positions in bohr, x = (r_1, ..., r_N) with the
n_α α electrons first). For spin σ and any electron i of that spin,

  γ_σ(r, r') = N_σ ∫ ψ(r', x_≠i) ψ(r, x_≠i) dx_≠i / ⟨ψ|ψ⟩,

with r and r' in electron i's slot (the same for every i of spin σ, by antisymmetry).
In the AO basis {χ_μ} of ``observables.density_basis``, γ_σ ≈ Σ_μν P^σ_μν χ_μ(r) χ_ν(r')
(PySCF's convention: ``mf.make_rdm1()`` is C_occ C_occᵀ, Σ_μν D_μν χ_μ(r) χ_ν(r') is the
density matrix of the determinant). Least squares in both arguments gives

  M^σ_μν = ∫∫ χ_μ(r) γ_σ(r, r') χ_ν(r') dr dr',    P^σ = S⁻¹ M^σ S⁻¹,

S the AO overlap. P^σ is the projection of γ_σ on the basis: exactly γ_σ's matrix when
the basis spans γ_σ's natural orbitals (e.g. a determinant whose orbitals it contains),
and trace(P^σ S) = N_σ then; otherwise trace(P^σ S) ≤ N_σ. The wavefunction's own
basis (if it has one) need not be the density basis.

Estimator. Write the integral over r' as an average over points r' drawn from a
normalised density g that can be sampled directly (:class:`AuxDensity`), and the
integral over x as the average over walkers x ~ |ψ|²:

  M^σ_μν = E_{x~|ψ|²} Σ_{i∈σ} E_{r'~g} [ χ_μ(r_i) ψ(x with r_i → r')/ψ(x) χ_ν(r') / g(r') ].

Check: |ψ(x)|² · ψ(x; r_i → r')/ψ(x) = ψ(r_i, x_≠i) ψ(r', x_≠i), so the x and r' integrals
give ∫∫ χ_μ(r) χ_ν(r') ψ(r, ·)ψ(r', ·), and the sum over the N_σ electrons of spin σ
gives the factor N_σ: the walker's electron (r_i) is in χ_μ, the moved one (r') in χ_ν.
For a real ψ γ_σ is symmetric, so the value returned is (M + Mᵀ)/2 of the sample, which
has the same mean and less noise. For a determinant with orbitals φ = χC and the matrix
A_kj = φ_j(r_k), ψ(x; r_i → r')/ψ(x) = Σ_j φ_j(r') (A⁻¹)_ji, so the mean over r' of one
walker's sample is Σ_i χ(r_i) ⊗ (S C A⁻¹)_{:,i} (before symmetrising): the tests check
the estimator against that, and the mean over walkers against PySCF.

The variance is finite whenever g's tails are wider than those of χ_ν ψ: with
g ∝ exp(-α_min r²) far from the nuclei (α_min the smallest primitive exponent of the
basis, bohr⁻²), f = χ_ν ψ decays at least as exp(-α_min r²) times ψ's own decay, so
∫ f²/g converges (by a margin exp(-α_min r²)). The walker's side is safe too: the
second moment over x ~ |ψ|² is ∫ χ_μ(r_i)² ψ(x; r_i → r')² ..., finite, so nodes of
ψ(x) do not matter.

Cost: N · ``n_aux`` evaluations of ψ per walker (vmapped, or in chunks of
``batch_size``), plus AO values at N(1 + n_aux) points. LiH with the default FermiNet
(CPU, float32): 0.2 ms per walker at n_aux = 1, 40% of the local energy's 0.5 ms. For
a determinant a walker's trace(P S), averaged over r', is exactly N_σ, so the noise
of the trace (and much of P's) comes from the points r': n_aux = 4 halved the error
bars of LiH's P at four times this estimator's cost. The default, n_aux = 1, keeps
the estimate a by-product of training; the average over steps does the rest.

Output: the estimator returns M^σ flattened, (2 · n_ao · n_ao,) dimensionless (the
AOs are normalised); the mean over all walkers of a step is transformed on the host to
P = S⁻¹ M S⁻¹ (:func:`to_density_matrix`, linear, so averaging P over steps is
averaging M) and appended to the run folder's ``density_matrix.npy`` (inference runs:
``inference_density_matrix.npy``): ``np.load`` gives (steps, 2, n_ao, n_ao), row s the
step s, [:, 0] α and [:, 1] β, in PySCF's AO order of ``scf.make_mole(system,
observables.density_basis)`` (:class:`DensityMatrixFile`; :func:`make_basis` rebuilds
that basis and its S).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import pathlib
import struct
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pyscf

from ferminet import errors, scf
from ferminet import system as system_lib

Params = Any
SignedLogPsi = Callable[[Params, jax.Array], tuple[jax.Array, jax.Array]]
Estimator = Callable[[Params, jax.Array, jax.Array], jax.Array]

DEFAULT_AUX = 1  # auxiliary points r' per electron, walker and step
DEFAULT_BASIS = 'def2-tzvpd'  # observables.density_basis's default, as the reference's
NARROW_WIDTH = 1.0  # bohr: std of g's component at each nucleus for the atoms' valence region
WIDE_FRACTION = 0.25  # weight of the wide (tail) components of g
FILE = 'density_matrix.npy'  # in the run folder; inference runs write inference_density_matrix.npy


# ---------------------------------------------------------------------------------------
# The auxiliary density g


@dataclasses.dataclass(frozen=True)
class AuxDensity:
  """A normalised mixture of isotropic Gaussians, g(r) = Σ_c w_c N(r; R_c, σ_c² 1).

  Attributes:
    centres: (C, 3) bohr.
    widths: (C,) standard deviations σ_c, bohr.
    weights: (C,) summing to 1.
  """

  centres: np.ndarray
  widths: np.ndarray
  weights: np.ndarray

  def sample(self, key: jax.Array, shape: tuple[int, ...], dtype: Any) -> jax.Array:
    """Points drawn from g: (*shape, 3) bohr."""
    k_comp, k_pos = jax.random.split(key)
    u = jax.random.uniform(k_comp, shape, dtype)  # the component: the first with CDF > u
    cdf = jnp.asarray(np.cumsum(self.weights)[:-1], dtype)
    comp = jnp.sum(u[..., None] >= cdf, axis=-1)
    noise = jax.random.normal(k_pos, (*shape, 3), dtype)
    centres = jnp.asarray(self.centres, dtype)[comp]
    return centres + jnp.asarray(self.widths, dtype)[comp][..., None] * noise

  def log_density(self, r: jax.Array) -> jax.Array:
    """log g(r) for r (..., 3) bohr: (...,), g in bohr⁻³."""
    dtype = r.dtype
    widths = jnp.asarray(self.widths, dtype)
    d2 = jnp.sum((r[..., None, :] - jnp.asarray(self.centres, dtype)) ** 2, axis=-1)
    log_norm = -1.5 * jnp.log(2.0 * jnp.pi * widths**2)
    terms = jnp.log(jnp.asarray(self.weights, dtype)) + log_norm - 0.5 * d2 / widths**2
    return jax.scipy.special.logsumexp(terms, axis=-1)


def smallest_exponent(mol: pyscf.gto.Mole) -> float:
  """The most diffuse primitive Gaussian exponent of ``mol``'s basis, bohr⁻²."""
  return float(min(np.min(mol.bas_exp(i)) for i in range(mol.nbas)))


def make_aux_density(mol: pyscf.gto.Mole, charges: Any, cores: Any = None) -> AuxDensity:
  """g for the basis of ``mol``: two or three Gaussians on each nucleus.

  Any g gives an unbiased estimate; the widths only set the variance, which is smallest
  where g follows |χ_ν(r') ψ(x; r_i → r')|, i.e. roughly the electron density. Atom I
  (effective charge Z_I, electrons seen by the electrons) gets

  - a K-shell component of std 1/Z_I (a 1s orbital e^{-Z r} has ⟨r²⟩ = 3/Z², a Gaussian
    of std σ 3σ²) and weight 2, for all-electron atoms with Z_I > 2;
  - a valence component of std NARROW_WIDTH (1 bohr, an atom's valence shell) and weight
    the other max(Z_I, 1) - 2 (or max(Z_I, 1)) electrons;
  - together WIDE_FRACTION of the total, a tail component of std 1/√(2 α_min):
    g ∝ exp(-α_min r²) far out, as wide as the most diffuse basis function χ itself
    (|χ|² ∝ exp(-2 α_min r²)), which keeps the variance finite (module docstring); never
    narrower than NARROW_WIDTH.

  The K-shell component cut the error bar of LiH's 1s element threefold (in variance) at
  the same cost.

  Args:
    mol: the density basis (its atoms are the nuclei, bohr).
    charges: (n_atoms,) nuclear charges seen by the electrons.
    cores: (n_atoms,) core electrons removed by a pseudopotential (no K-shell then).
  """
  coords = np.asarray(mol.atom_coords(unit='Bohr'), dtype=float)
  z = np.maximum(np.asarray(charges, dtype=float).reshape(-1), 1.0)
  cores = np.zeros(len(z)) if cores is None else np.asarray(cores, dtype=float).reshape(-1)
  k_shell = (z > 2) & (cores == 0)
  electrons = z.sum()
  wide = max(NARROW_WIDTH, 1.0 / np.sqrt(2.0 * smallest_exponent(mol)))
  rows = []  # (centre, std, weight)
  for r, z_i, k in zip(coords, z, k_shell, strict=True):
    if k:
      rows.append((r, 1.0 / z_i, (1 - WIDE_FRACTION) * 2.0 / electrons))
    rows.append((r, NARROW_WIDTH, (1 - WIDE_FRACTION) * (z_i - 2.0 * k) / electrons))
    rows.append((r, wide, WIDE_FRACTION * z_i / electrons))
  centres, widths, weights = (np.array(c, dtype=float) for c in zip(*rows, strict=True))
  return AuxDensity(centres, widths, weights / weights.sum())


# ---------------------------------------------------------------------------------------
# The density basis


@dataclasses.dataclass(frozen=True, eq=False)
class Basis:
  """The AO basis the density matrix is expanded in.

  Attributes:
    mol: the PySCF molecule of the basis (bohr).
    ao_fn: positions (..., 3) bohr -> AO values (..., n_ao), PySCF's order.
    overlap: S, (n_ao, n_ao).
    aux: the auxiliary density g of the estimator.
  """

  mol: pyscf.gto.Mole
  ao_fn: Callable[[jax.Array], jax.Array]
  overlap: np.ndarray
  aux: AuxDensity

  @property
  def n_ao(self) -> int:
    return int(self.overlap.shape[0])


@functools.lru_cache(maxsize=8)
def make_basis(system: system_lib.System, basis: str = DEFAULT_BASIS) -> Basis:
  """The density basis ``basis`` (a PySCF name) on ``system``'s nuclei (cached).

  Raises:
    errors.ConfigError: if PySCF does not know ``basis`` for some element.
  """
  try:
    mol = scf.make_mole(system, basis)
  except errors.ConfigError as e:
    raise errors.ConfigError(
      f'observables.density_basis: {e}'.replace('--config.pretrain.basis', 'this key')
    ) from None
  overlap = np.asarray(mol.intor('int1e_ovlp'))
  overlap.setflags(write=False)
  aux = make_aux_density(mol, system.charges, system.core_counts)
  return Basis(mol, scf.make_ao_fn(mol), overlap, aux)


def to_density_matrix(m: Any, overlap: Any) -> np.ndarray:
  """P = S⁻¹ M S⁻¹ for each spin, in float64.

  Args:
    m: M^α and M^β, flattened or (2, n_ao, n_ao), as :func:`make_density_matrix` returns
      (or a mean of them).
    overlap: S, (n_ao, n_ao).

  Returns:
    (2, n_ao, n_ao): P^α and P^β, PySCF's ``make_rdm1`` convention.
  """
  s = np.asarray(overlap, dtype=np.float64)
  m = np.asarray(m, dtype=np.float64).reshape(2, *s.shape)
  s_inv_m = np.linalg.solve(s, m)  # S⁻¹ M, broadcast over the spins
  return np.swapaxes(np.linalg.solve(s, np.swapaxes(s_inv_m, -1, -2)), -1, -2)


# ---------------------------------------------------------------------------------------
# The estimator


def make_density_matrix(
  signed_log_psi: SignedLogPsi,
  electrons: tuple[int, int],
  ao_fn: Callable[[jax.Array], jax.Array],
  aux: AuxDensity,
  n_aux: int = DEFAULT_AUX,
  batch_size: int | None = None,
) -> Estimator:
  """The estimator of M^α and M^β (module docstring) of one walker.

  Args:
    signed_log_psi: ``(params, x (3N,)) -> (sign, log|ψ|)``.
    electrons: (n_α, n_β).
    ao_fn: the density basis, positions (..., 3) bohr -> (..., n_ao).
    aux: the density g the points r' are drawn from.
    n_aux: points r' per electron (N · n_aux evaluations of ψ).
    batch_size: if set, evaluate the moved wavefunctions in chunks of this many
      (``lax.map``) instead of all N · n_aux at once.

  Returns:
    ``density(params, key, x) -> (2 · n_ao · n_ao,)``: the symmetrised sample of M^α
    and M^β, row-major (spin, μ, ν), dimensionless; its mean over x ~ |ψ|² is M.
    The points r' are drawn from ``key`` (the walker's key: independent of the
    device layout).
  """
  n_alpha, n_beta = (int(n) for n in electrons)
  n = n_alpha + n_beta
  n_aux = int(n_aux)
  if n_aux < 1:
    raise ValueError(f'n_aux must be at least 1, got {n_aux}')
  electron_of = np.repeat(np.arange(n), n_aux)  # (n · n_aux,) the electron each r' moves

  def density(params: Params, key: jax.Array, x: jax.Array) -> jax.Array:
    pos = x.reshape(n, 3)
    sign, log_abs = signed_log_psi(params, x)
    r_aux = aux.sample(key, (n, n_aux), x.dtype)  # (n, n_aux, 3)
    log_g = aux.log_density(r_aux)  # (n, n_aux)

    def moved(args):  # log|ψ(x with r_i -> r')| and its sign relative to ψ(x)
      i, r = args
      moved_pos = jnp.where((jnp.arange(n) == i)[:, None], r, pos)
      sign_m, log_m = signed_log_psi(params, moved_pos.reshape(-1))
      return sign_m * sign, log_m

    args = (jnp.asarray(electron_of), r_aux.reshape(-1, 3))
    if batch_size is None:
      signs, logs = jax.vmap(moved)(args)
    else:
      signs, logs = jax.lax.map(moved, args, batch_size=int(batch_size))
    # ψ(x; r_i -> r') / (ψ(x) g(r')), in one exponent
    weights = signs.reshape(n, n_aux) * jnp.exp(logs.reshape(n, n_aux) - log_abs - log_g)
    w = jnp.einsum('ik,ika->ia', weights, ao_fn(r_aux)) / n_aux  # (n, n_ao)
    chi = ao_fn(pos)  # (n, n_ao)
    m = jnp.stack([chi[:n_alpha].T @ w[:n_alpha], chi[n_alpha:].T @ w[n_alpha:]])
    return (0.5 * (m + jnp.swapaxes(m, -1, -2))).reshape(-1)

  return density


def make(
  signed_log_psi: SignedLogPsi,
  system: system_lib.System,
  basis: str = DEFAULT_BASIS,
  n_aux: int = DEFAULT_AUX,
) -> Estimator:
  """:func:`make_density_matrix` in the basis named ``basis`` on ``system``'s nuclei."""
  b = make_basis(system, basis)
  return make_density_matrix(signed_log_psi, tuple(system.electrons), b.ao_fn, b.aux, n_aux)


# ---------------------------------------------------------------------------------------
# The file


_MAGIC = b'\x93NUMPY\x01\x00'  # .npy format version 1.0
HEADER_BYTES = 128  # a fixed header, rewritten in place as rows are appended


def _header(shape: tuple[int, ...], descr: str) -> bytes:
  text = repr({'descr': descr, 'fortran_order': False, 'shape': tuple(shape)})
  room = HEADER_BYTES - len(_MAGIC) - 2 - 1
  if len(text) > room:
    raise ValueError(f'shape {shape} does not fit a {HEADER_BYTES}-byte .npy header')
  return _MAGIC + struct.pack('<H', room + 1) + (text.ljust(room) + '\n').encode('latin1')


def _read_header(f) -> tuple[tuple[int, ...], np.dtype, int] | None:
  """(shape, dtype, data offset) of an open .npy file, or None if it is not one."""
  try:
    version = np.lib.format.read_magic(f)
    if version != (1, 0):
      return None
    shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
  except ValueError:
    return None
  return None if fortran else (tuple(shape), dtype, f.tell())


def _set_aside(path: pathlib.Path) -> pathlib.Path:
  n = 1
  while (backup := path.with_name(f'{path.stem}.{n}{path.suffix}')).exists():
    n += 1
  os.replace(path, backup)
  return backup


class DensityMatrixFile:
  """Appends each step's P (2, n_ao, n_ao) to a .npy holding (steps, 2, n_ao, n_ao).

  Row s is step s (0-based, as the statistics file's ``step``), every step (not only
  the ``log.stats_frequency`` ones); ``np.load(path)`` reads all rows (``mmap_mode='r'``
  avoids reading a large file at once), P[s, 0] is α, P[s, 1] β, in PySCF's
  ``make_rdm1`` convention and AO order of the basis. The header is of fixed size
  and rewritten in place at each :meth:`flush`, after the rows, so a crash leaves a
  readable file (rows past the header's count are dropped on reopening).

  Continuing at ``first_step`` > 0 keeps the rows before it and drops later ones (as
  the statistics file); steps missing before it (density enabled on a resumed run)
  are rows of NaN. Starting at step 0 never overwrites: an existing file with rows
  (or one of another shape or format) is renamed ``*.1.npy`` (or the next free number).

  Args:
    path: the file.
    n_ao: basis size.
    first_step: the step of the next row written.
    dtype: the dtype the rows are stored in (the run's: float32 or float64).
  """

  def __init__(self, path: pathlib.Path, n_ao: int, first_step: int = 0, dtype: Any = np.float64):
    self.path = pathlib.Path(path)
    self.tail = (2, int(n_ao), int(n_ao))
    self.dtype = np.dtype(dtype).newbyteorder('<')
    self.row_bytes = int(np.prod(self.tail)) * self.dtype.itemsize
    self.set_aside: pathlib.Path | None = None
    kept = self._usable_rows(first_step)
    self.file = open(self.path, 'r+b' if kept is not None else 'w+b')  # noqa: SIM115
    self.rows = min(kept or 0, first_step)
    self.file.truncate(HEADER_BYTES + self.rows * self.row_bytes)
    self.file.seek(0, os.SEEK_END)
    if self.rows < first_step:
      self._append(np.full((first_step - self.rows, *self.tail), np.nan, self.dtype))
    self.flush()

  def _usable_rows(self, first_step: int) -> int | None:
    """Rows of an existing file to continue from, or None (no file, or set aside)."""
    if not self.path.exists():
      return None
    with open(self.path, 'rb') as f:
      header = _read_header(f)
    size = self.path.stat().st_size
    ours = (
      header is not None
      and header[2] == HEADER_BYTES
      and header[1] == self.dtype
      and header[0][1:] == self.tail
    )
    rows = min(header[0][0], (size - HEADER_BYTES) // self.row_bytes) if ours else 0
    if ours and (first_step > 0 or rows == 0):
      return rows
    empty = header is not None and (0 in header[0][:1] or size == header[2])
    if size and not empty:  # rows (or something else) that a fresh file would lose
      self.set_aside = _set_aside(self.path)
    return None

  def _append(self, rows: np.ndarray) -> None:
    self.file.write(np.ascontiguousarray(rows, self.dtype).tobytes())
    self.rows += len(rows)

  def write(self, step: int, p: Any) -> None:
    """Appends step ``step``'s P (2, n_ao, n_ao) (NaN rows for any steps skipped)."""
    if step < self.rows:
      raise ValueError(f'step {step} is already written ({self.rows} rows)')
    if step > self.rows:
      self._append(np.full((step - self.rows, *self.tail), np.nan, self.dtype))
    self._append(np.asarray(p).reshape(1, *self.tail))

  def flush(self) -> None:
    """Writes the header for the rows appended so far, after them."""
    self.file.flush()
    self.file.seek(0)
    self.file.write(_header((self.rows, *self.tail), self.dtype.str))
    self.file.seek(0, os.SEEK_END)
    self.file.flush()

  def close(self) -> None:
    if not self.file.closed:
      self.flush()
      self.file.close()


class DensityWriter:
  """Writes the mean M of each step as P = S⁻¹ M S⁻¹ to a :class:`DensityMatrixFile`."""

  def __init__(self, path: pathlib.Path, basis: Basis, first_step: int, dtype: Any):
    self.overlap = basis.overlap
    self.file = DensityMatrixFile(path, basis.n_ao, first_step, dtype)

  def write(self, step: int, m: Any) -> None:
    self.file.write(step, to_density_matrix(m, self.overlap))

  def flush(self) -> None:
    self.file.flush()

  def close(self) -> None:
    self.file.close()
