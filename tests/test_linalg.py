"""ferminet.linalg: determinants and inverses without batched LAPACK calls on CPU."""

import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_network_cfg

from ferminet import linalg, molecules, networks
from ferminet import system as system_lib

pytestmark = pytest.mark.compat


def _matrices(seed=0):
  """Random matrices, some that need pivoting (zero diagonal, permuted rows), and n = 1."""
  rng = np.random.default_rng(seed)
  a = rng.normal(size=(4, 3, 6, 6))
  a[0, 0] -= np.diag(np.diag(a[0, 0]))  # zero diagonal: no step can skip pivoting
  a[0, 1] = a[0, 1][[5, 3, 0, 1, 4, 2]]  # an odd permutation of rows of a[0, 1]
  a[1, 2] = np.eye(6)[[1, 0, 2, 3, 4, 5]] * 1e-3 + 1e-9 * a[1, 2]  # tiny, badly scaled
  return a


def test_native_slogdet_and_inverse_match_numpy():
  assert linalg.uses_native()  # the tests run on CPU
  for a in (_matrices(), np.random.default_rng(1).normal(size=(5, 1, 1))):
    sign, logdet, inv = linalg.slogdet_inverse(jnp.asarray(a))
    ref_sign, ref_logdet = np.linalg.slogdet(a)
    np.testing.assert_array_equal(sign, ref_sign)
    np.testing.assert_allclose(logdet, ref_logdet, rtol=0, atol=1e-12)
    np.testing.assert_allclose(inv @ a, np.broadcast_to(np.eye(a.shape[-1]), a.shape), atol=1e-9)
    np.testing.assert_array_equal(linalg.slogdet(jnp.asarray(a))[1], logdet)


def test_singular_matrix_is_sign_zero_log_minus_inf():
  a = jnp.asarray([[[1.0, 2.0], [2.0, 4.0]], [[0.0, 0.0], [0.0, 0.0]], [[2.0, 0.0], [0.0, 3.0]]])
  sign, logdet = linalg.slogdet(a)
  np.testing.assert_array_equal(sign, [0.0, 0.0, 1.0])
  np.testing.assert_allclose(logdet, [-np.inf, -np.inf, np.log(6.0)])


def test_derivatives_are_those_of_log_det_and_inverse():
  """Gradient and Hessian of log|det| and the JVP of the inverse, against finite differences."""
  a = jnp.asarray(_matrices(2)[0, 0, :4, :4])  # zero diagonal
  da = jnp.asarray(np.random.default_rng(3).normal(size=a.shape))

  def logdet(x):
    return linalg.slogdet(x)[1]

  eps = 1e-6
  fd = (logdet(a + eps * da) - logdet(a - eps * da)) / (2 * eps)
  np.testing.assert_allclose(jnp.sum(jax.grad(logdet)(a) * da), fd, rtol=1e-7)
  np.testing.assert_allclose(jax.grad(logdet)(a), np.linalg.inv(np.asarray(a)).T, atol=1e-10)
  hess = jax.hessian(logdet)(a)
  fd_grad = (jax.grad(logdet)(a + eps * da) - jax.grad(logdet)(a - eps * da)) / (2 * eps)
  np.testing.assert_allclose(jnp.einsum('ijkl,kl->ij', hess, da), fd_grad, atol=1e-6)

  def inverse(x):
    return linalg.slogdet_inverse(x)[2]

  _, dinv = jax.jvp(inverse, (a,), (da,))
  np.testing.assert_allclose(
    dinv, (inverse(a + eps * da) - inverse(a - eps * da)) / (2 * eps), atol=1e-6
  )


def _batched_lapack_calls(hlo: str) -> list[str]:
  """Shapes of the LAPACK custom calls of an executable that have batch dimensions."""
  calls = [line for line in hlo.splitlines() if 'custom_call_target="lapack_' in line]
  shapes = [re.search(r'operand_layout_constraints=\{([a-z0-9]+\[[0-9,]*\])', ln) for ln in calls]
  assert all(shapes), calls
  return [s.group(1) for s in shapes if s.group(1).count(',') > 1]


def test_network_executables_have_no_batched_lapack_call():
  """The cause of the jaxlib 0.10 deadlock cannot come back: every LAPACK call is one matrix.

  Sampling (log|ψ| over walkers), the gradient of the VMC loss and the forward
  Laplacian, compiled for a batch of walkers (spin-blocked determinants call the
  same functions).
  """
  lih = system_lib.make_system(molecules.build('LiH'))
  cfg = tiny_network_cfg(determinants=1)
  net = networks.make(cfg, lih)
  params = net.init(jax.random.PRNGKey(0))
  x = jnp.asarray(np.random.default_rng(0).normal(size=(8, 3 * lih.n_electrons)))
  functions = {
    'log_abs': jax.vmap(net.log_abs, (None, 0)),
    'gradient': jax.grad(lambda p, x: jnp.sum(jax.vmap(net.log_abs_tagged, (None, 0))(p, x))),
    'forward laplacian': jax.vmap(net.laplacian, (None, 0)),
  }
  for name, fn in functions.items():
    hlo = jax.jit(fn).lower(params, x).compile().as_text()
    assert not _batched_lapack_calls(hlo), (name, _batched_lapack_calls(hlo))


def test_batched_lapack_calls_are_seen(monkeypatch):
  """The check above can fail: with jnp.linalg (LAPACK) the batched calls are found."""
  monkeypatch.setattr(linalg, 'uses_native', lambda: False)
  lih = system_lib.make_system(molecules.build('LiH'))
  net = networks.make(tiny_network_cfg(determinants=1), lih)
  params = net.init(jax.random.PRNGKey(0))
  x = jnp.zeros((8, 3 * lih.n_electrons), jax.tree.leaves(params)[0].dtype)
  hlo = jax.jit(jax.vmap(net.log_abs, (None, 0))).lower(params, x).compile().as_text()
  assert _batched_lapack_calls(hlo) == ['f64[8,1,4,4]']


def test_no_batched_lapack_in_the_code_or_the_tests():
  """jnp.linalg's slogdet/det/inv/solve vmapped over walkers are batched LAPACK calls, which
  hang on jaxlib 0.10 on two cores (see ferminet/linalg.py): a slow S² test built its
  Hartree–Fock determinants with jnp.linalg.slogdet and hung in lapack_dgetrf_ffi. Only
  linalg.py, the test above (which shows the calls) and the benchmark that reproduces the
  hang may use them."""
  root = pathlib.Path(__file__).resolve().parent.parent
  pattern = re.compile(r'jnp\.linalg\.(slogdet|det|inv|solve|lu)\(')
  allowed = {
    root / 'ferminet' / 'linalg.py',
    root / 'benchmarks' / 'lapack_deadlock.py',  # reproduces the hang on purpose
    pathlib.Path(__file__).resolve(),
  }
  found = [
    f'{path.relative_to(root)}:{n}'
    for folder in ('ferminet', 'tests', 'benchmarks', 'examples')
    for path in sorted((root / folder).rglob('*.py'))
    if path not in allowed
    for n, line in enumerate(path.read_text().splitlines(), 1)
    if pattern.search(line)
  ]
  assert not found, f'use ferminet.linalg instead of jnp.linalg at {found}'
