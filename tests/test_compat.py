"""ferminet._compat: jax.core names and kfac-jax's equation evaluator on every supported jax."""

import pathlib
import subprocess
import sys
import types
import warnings

from ferminet import _compat  # first: gives jax.core the names kfac_jax reads

# isort: split
import jax
import jax.numpy as jnp
import kfac_jax
import numpy as np
import pytest
from kfac_jax._src import tag_graph_matcher as tgm

from ferminet import optimizers as _optimizers  # noqa: F401  (applies the patch on import)

pytestmark = pytest.mark.compat


def _run(code):
  """Runs ``code`` in a fresh interpreter (nothing imported yet); returns its stdout."""
  return subprocess.run(
    [sys.executable, '-W', 'error::DeprecationWarning:ferminet', '-c', code],
    capture_output=True,
    text=True,
    timeout=120,
    check=True,
  ).stdout.strip()


def test_jax_core_aliases_are_exactly_the_missing_names():
  """Before ferminet: the names this jax lacks; after: exactly those, from jax.extend.core.

  Through ``import ferminet.networks``, as ferminet imports kfac-jax (jax >= 0.11 fails
  ``import kfac_jax`` without the aliases).
  """
  names = repr(_compat.JAX_CORE_NAMES)
  lacking = _run(
    'import warnings, jax\n'
    'warnings.simplefilter("ignore", DeprecationWarning)\n'
    f'print([n for n in {names} if not hasattr(jax.core, n)])'
  )
  added = _run(
    'import jax, jax.extend.core as c\n'
    'before = set(vars(jax.core))\n'
    'import ferminet.networks, kfac_jax\n'
    'new = set(vars(jax.core)) - before\n'
    f'print([n for n in {names} if n in new and getattr(jax.core, n) is getattr(c, n)])'
  )
  assert added == lacking == repr(list(_compat.jax_core_aliases))
  if jax.__version_info__ >= (0, 11):  # removed in jax 0.11
    assert _compat.jax_core_aliases == _compat.JAX_CORE_NAMES
  else:
    assert _compat.jax_core_aliases == ()


def test_jax_core_names_are_those_kfac_jax_reads():
  """Each name is read by kfac-jax through jax.core (else the alias is needless)."""
  import kfac_jax._src.layers_and_loss_tags as tags
  import kfac_jax._src.utils.parallel as kfac_parallel

  sources = ''.join(pathlib.Path(m.__file__).read_text() for m in (tags, tgm, kfac_parallel))
  for name in _compat.JAX_CORE_NAMES:
    assert f'core.{name}' in sources, name


def test_alias_missing_adds_exactly_the_missing_names():
  target = types.ModuleType('target')
  target.present = 'own'
  source = types.SimpleNamespace(present='other', missing='from source')
  added = _compat.alias_missing(target, source, ('present', 'missing', 'nowhere'))
  assert added == ('missing',)
  assert target.present == 'own' and target.missing == 'from source'
  assert not hasattr(target, 'nowhere')  # in neither: left missing
  assert _compat.alias_missing(target, source, ('present', 'missing')) == ()  # idempotent


def test_alias_missing_keeps_deprecated_names_without_warning():
  """A name that only warns (jax 0.10's deprecations) counts as present; no warning escapes."""
  target = types.ModuleType('target')

  def __getattr__(name):
    if name == 'old':
      warnings.warn('old is deprecated', DeprecationWarning, stacklevel=2)
      return 'deprecated'
    raise AttributeError(name)

  target.__getattr__ = __getattr__
  with warnings.catch_warnings():
    warnings.simplefilter('error')
    assert _compat.alias_missing(target, types.SimpleNamespace(old='new'), ('old',)) == ()
  assert 'old' not in vars(target)


def test_install_jax_core_aliases_is_idempotent():
  before = (dict(vars(jax.core)), _compat.jax_core_aliases)
  assert _compat.install_jax_core_aliases() == ()  # importing _compat ran it already
  assert (dict(vars(jax.core)), _compat.jax_core_aliases) == before


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
