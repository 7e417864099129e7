"""ferminet._compat: kfac-jax's jaxpr equation evaluator on every supported jax."""

import types

import jax
import jax.numpy as jnp
import kfac_jax
import numpy as np
import pytest
from kfac_jax._src import tag_graph_matcher as tgm

from ferminet import _compat
from ferminet import optimizers as _optimizers  # noqa: F401  (applies the patch on import)

pytestmark = pytest.mark.compat


class _FakePrimitive:
  """Records its binds; ``get_bind_params`` returns what the test asks for."""

  def __init__(self, bind_params):
    self._bind_params = bind_params
    self.calls = []

  def get_bind_params(self, params):
    return self._bind_params

  def bind(self, *args, **params):
    self.calls.append((args, params))
    return 'out'


def _fake_eqn(bind_params):
  source_info = types.SimpleNamespace(traceback=None)
  return types.SimpleNamespace(
    primitive=_FakePrimitive(bind_params), params={'p': 1}, source_info=source_info
  )


def _unpatched():
  return getattr(tgm.eval_jaxpr_eqn, '__wrapped__', tgm.eval_jaxpr_eqn)


def test_dict_bind_params_are_keyword_arguments():
  """New jax (>= 0.9.2): the dict is passed as keywords, with no positional sub-functions."""
  eqn = _fake_eqn({'p': 1, 'subfuns': ('f',)})

  def original(eqn, in_values):
    raise AssertionError('the dict case must not reach the original')

  assert _compat.bind_params_is_dict(eqn.primitive, eqn.params)
  out = _compat.eval_eqn_with_dict_bind_params(original)(eqn, ['x', 'y'])
  assert out == ['out']
  assert eqn.primitive.calls == [(('x', 'y'), {'p': 1, 'subfuns': ('f',)})]


def test_tuple_bind_params_reach_kfac_unchanged():
  """Old jax: the wrapper defers to kfac-jax's own function, which binds subfuns first."""
  eqn = _fake_eqn((['f'], {'p': 1}))
  assert not _compat.bind_params_is_dict(eqn.primitive, eqn.params)
  out = _compat.eval_eqn_with_dict_bind_params(_unpatched())(eqn, ['x'])
  assert out == ['out']
  assert eqn.primitive.calls == [(('f', 'x'), {'p': 1})]


def test_patch_matches_this_jax_and_is_idempotent():
  applied = _compat.patch_kfac_jax()
  assert _compat.patch_kfac_jax() is applied
  if kfac_jax.__version__ == '0.0.8':  # the release with the bug
    assert applied == _compat.jax_returns_dict_bind_params()
  if applied:
    assert not hasattr(tgm.eval_jaxpr_eqn.__wrapped__, '__wrapped__')  # wrapped only once
  else:
    assert not hasattr(tgm.eval_jaxpr_eqn, '__wrapped__')


def test_kfac_evaluates_real_equations():
  """Equation by equation through kfac-jax (patched where needed) equals the function."""

  @jax.custom_jvp
  def softplus(x):
    return jnp.logaddexp(x, 0.0)

  softplus.defjvp(lambda p, t: (softplus(p[0]), t[0] * jax.nn.sigmoid(p[0])))

  def f(x, w):
    h = jax.jit(lambda a: jnp.tanh(a @ w))(x)  # a call-like primitive (jit / pjit)
    return jnp.sum(softplus(h) ** 2, axis=-1)

  x, w = jnp.linspace(-1.0, 1.0, 6).reshape(2, 3), jnp.ones((3, 4))
  closed = jax.make_jaxpr(f)(x, w)
  env = dict(zip(closed.jaxpr.invars, (x, w), strict=True))
  env.update(zip(closed.jaxpr.constvars, closed.consts, strict=True))

  def read(v):
    return v.val if isinstance(v, jax.extend.core.Literal) else env[v]

  names = {eqn.primitive.name for eqn in closed.jaxpr.eqns}
  assert 'custom_jvp_call' in names and names & {'jit', 'pjit'}, names
  for eqn in closed.jaxpr.eqns:
    if _compat.patch_kfac_jax():  # the unpatched kfac-jax fails here: the patch is needed
      with pytest.raises((TypeError, ValueError)):
        _unpatched()(eqn, [read(v) for v in eqn.invars])
    out = tgm.eval_jaxpr_eqn(eqn, [read(v) for v in eqn.invars])
    env.update(zip(eqn.outvars, out, strict=True))
  np.testing.assert_allclose(read(closed.jaxpr.outvars[0]), f(x, w), rtol=1e-12)
