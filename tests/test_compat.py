"""ferminet._compat: jax.core names, kfac-jax's eval_jaxpr_eqn and closed jaxprs, on every jax."""

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
from kfac_jax._src import tracer

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
  applied = _compat.patch_kfac_jax_eval_eqn()
  assert _compat.patch_kfac_jax_eval_eqn() is applied
  assert ('eval_jaxpr_eqn' in _compat.patch_kfac_jax()) is applied
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
    if _compat.patch_kfac_jax_eval_eqn():  # the unpatched kfac-jax fails here: the patch is needed
      with pytest.raises((TypeError, ValueError)):
        _unpatched()(eqn, [read(v) for v in eqn.invars])
    out = tgm.eval_jaxpr_eqn(eqn, [read(v) for v in eqn.invars])
    env.update(zip(eqn.outvars, out, strict=True))
  np.testing.assert_allclose(read(closed.jaxpr.outvars[0]), f(x, w), rtol=1e-12)


def test_closed_jaxpr_patch_matches_this_jax_and_is_idempotent():
  """Active exactly where jax merged ClosedJaxpr into Jaxpr (0.11+); patched once."""
  active = _compat.patch_kfac_jax_closed_jaxpr()
  stand_in = tracer.jex
  assert _compat.patch_kfac_jax_closed_jaxpr() is active
  both = {'eval_jaxpr_eqn': _compat.patch_kfac_jax_eval_eqn(), 'closed_jaxpr': active}
  expected = tuple(name for name, on in both.items() if on) + ('layer_tag_order',)
  assert _compat.patch_kfac_jax() == expected
  assert tracer.jex is stand_in  # not wrapped again
  if kfac_jax.__version__ == '0.0.8':
    assert active == _compat.jax_merged_closed_jaxpr() == (jax.__version_info__ >= (0, 11))
  if active:
    assert tgm.ClosedJaxpr is _compat.closed_jaxpr
    assert tgm.to_closed_jaxpr is _compat.jaxpr_unchanged
    assert tracer.jex.core.ClosedJaxpr is _compat.closed_jaxpr
    assert tracer.jex.core.Var is jax.extend.core.Var  # the rest: jax.extend's own
    assert tracer.jex.linear_util is jax.extend.linear_util
    assert jax.extend.core.ClosedJaxpr is jax.extend.core.Jaxpr  # jax itself untouched
  else:
    assert tgm.ClosedJaxpr is jax.extend.core.ClosedJaxpr
    assert tracer.jex is jax.extend
    assert _compat.kfac_jax_originals == {}


def test_module_with_overrides_and_forwards():
  module = types.ModuleType('m')
  module.a, module.b = 1, 2
  stand_in = _compat.module_with(module, b='own')
  module.c = 3  # set later: still forwarded
  assert (stand_in.a, stand_in.b, stand_in.c) == (1, 'own', 3)
  assert module.b == 2
  with pytest.raises(AttributeError):
    stand_in.missing  # noqa: B018


def _with_constant():
  """A jaxpr whose constants matter: NumPy arrays closed over, by the function and a jit in it."""
  c = np.array([0.5, -1.0, 2.0])
  d = np.array([[1.0, 0.0, -1.0]])

  def f(x):
    return jax.jit(lambda y: y * d)(x + c)

  return f, jax.make_jaxpr(f)(np.ones((2, 3)))


def test_merged_jaxpr_helpers_keep_constants():
  """closed_jaxpr/jaxpr_unchanged keep the constants kfac-jax's originals drop (jax 0.11+)."""
  if not _compat.jax_merged_closed_jaxpr():
    pytest.skip('ClosedJaxpr is its own class on this jax: the helpers are not used')
  f, jaxpr = _with_constant()
  x = np.linspace(-1.0, 1.0, 6).reshape(2, 3)
  assert len(jaxpr.consts) == len(jaxpr.jaxpr.constvars) > 0
  rebuilt = _compat.closed_jaxpr(
    jaxpr=jaxpr.jaxpr.replace(constvars=jaxpr.jaxpr.constvars), consts=jaxpr.consts
  )  # as make_jax_graph does: replacing constvars detaches the constants
  for j in (rebuilt, _compat.jaxpr_unchanged(jaxpr)):
    assert j.consts == jaxpr.consts and j.jaxpr.invars == jaxpr.jaxpr.invars
    np.testing.assert_allclose(jax.extend.core.jaxpr_as_fun(j)(x)[0], f(x), rtol=1e-15)
  if _compat.kfac_jax_originals:  # kfac-jax 0.0.8's own: fails, and drops the constants
    with pytest.raises(TypeError, match='jaxpr'):
      _compat.kfac_jax_originals['ClosedJaxpr'](jaxpr=jaxpr.jaxpr, consts=jaxpr.consts)
    # Its to_closed_jaxpr, even with a working ClosedJaxpr (the patched one): constants detached.
    dropped = _compat.kfac_jax_originals['to_closed_jaxpr'](jaxpr)
    assert dropped.consts == [] and len(dropped.invars) == len(jaxpr.invars) + len(jaxpr.consts)


def _dense_model():
  """A dense layer and constants (of the function and of a jit in it), a squared-error loss."""
  shift, scale = np.array([0.25, -0.5]), np.array([1.5, 0.5])  # NumPy constants: constvars

  def predict(params, x):
    return jax.jit(lambda h: jnp.tanh(h) * scale)(x @ params['w'] + params['b']) + shift

  def loss(params, batch):
    x, y = batch
    pred = predict(params, x)
    kfac_jax.register_squared_error_loss(pred, y)
    return 0.5 * jnp.mean(jnp.sum((pred - y) ** 2, axis=-1))

  rng = np.random.default_rng(0)
  params = {'w': jnp.asarray(rng.normal(size=(3, 2))), 'b': jnp.zeros(2)}
  batch = (jnp.asarray(rng.normal(size=(8, 3))), jnp.asarray(rng.normal(size=(8, 2))))
  return predict, loss, params, batch


def test_kfac_graph_matcher_keeps_constants():
  """kfac-jax's auto-registration (graph, cleaning, sub-jaxprs) computes f with its constants."""
  predict, loss, params, batch = _dense_model()
  jaxpr = jax.make_jaxpr(loss)(params, batch)
  (jit,) = [eqn for eqn in jaxpr.jaxpr.eqns if eqn.primitive.name in ('jit', 'pjit')]
  assert jaxpr.consts and jit.params['jaxpr'].consts  # they reach kfac-jax as constants
  tagged = tgm.auto_register_tags(loss, (params, batch), compute_only_loss_tags=False)
  np.testing.assert_allclose(tagged(params, batch), loss(params, batch), rtol=1e-12)
  (prediction,) = tgm.auto_register_tags(loss, (params, batch))(params, batch)  # loss tags only
  np.testing.assert_allclose(prediction, predict(params, batch[0]), rtol=1e-12)


def test_kfac_registers_dense_layer_and_steps():
  """kfac-jax's tracer (ProcessedJaxpr) and one optimizer step on a model with a constant."""
  predict, loss, params, batch = _dense_model()
  compute_losses, _ = tracer.compute_all_losses(loss)
  (squared_error,) = compute_losses((params, batch))
  np.testing.assert_allclose(squared_error.mean, predict(params, batch[0]), rtol=1e-12)
  optimizer = kfac_jax.Optimizer(
    jax.value_and_grad(loss),
    l2_reg=0.0,
    learning_rate_schedule=lambda t: 0.1,
    use_adaptive_momentum=False,
    use_adaptive_damping=False,
    estimation_mode='fisher_exact',
    num_burnin_steps=0,
    multi_device=False,
  )
  key = jax.random.PRNGKey(0)
  state = optimizer.init(params, key, batch)
  (block,) = state.estimator_state.blocks_states  # w and b: one dense layer, Kronecker-factored
  assert [f.shape for f in block.factors] == [(4, 4), (2, 2)], block  # (inputs + bias, outputs)
  before = float(loss(params, batch))
  new_params, _, stats = optimizer.step(  # donates params and state
    params, state, key, batch=batch, momentum=0.0, damping=1e-3, global_step_int=0
  )
  assert float(stats['loss']) == pytest.approx(before, rel=1e-12)
  assert float(loss(new_params, batch)) < before


@pytest.mark.compat
def test_layer_tag_inputs_in_the_same_order_in_every_process():
  """kfac-jax's tracer dedups jaxpr variables (hashed by identity) with set(): patched to
  first-seen order, so the KFAC step is the same program at every launch; its other sets
  (of integers) stay sets. End to end: tests/test_cli_errors.py, a second launch compiles
  nothing the first did (slow)."""
  import inspect

  assert _compat.patch_kfac_jax_layer_tag_order() and tracer.set is _compat.ordered_set
  source = inspect.getsource(tracer)
  assert source.count('list(set(v for v in layer_tag_invars') == 1  # the use it is for
  a, b = (jax.extend.core.Var(jax.core.ShapedArray((2,), jnp.float32)) for _ in range(2))
  assert _compat.ordered_set(iter([b, a, b, a])) == [b, a]
  assert _compat.ordered_set(range(3)) == {0, 1, 2} and isinstance(_compat.ordered_set(), set)
