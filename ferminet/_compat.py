"""Compatibility between kfac-jax 0.0.8 and newer JAX.

kfac-jax 0.0.8 (its newest release) needs three fixes on newer JAX; each is applied
only where the installed JAX and kfac-jax need it, and is otherwise a no-op. A fourth,
on every JAX, makes its KFAC step the same program in every process.
:func:`patch_kfac_jax` applies the second to fourth (``ferminet.optimizers`` calls
it on import); importing this module applies the first.

1. ``jax.core`` names (jax >= 0.11): :func:`install_jax_core_aliases`
----------------------------------------------------------------------
kfac-jax reads seven names from ``jax.core`` that jax 0.10 deprecated (with a
``DeprecationWarning`` pointing to ``jax.extend.core``) and jax 0.11 removed:
``DebugInfo``, ``DropVar``, ``Effects``, ``gensym``, ``new_jaxpr_eqn``,
``no_effects`` and ``unsafe_get_axis_names_DO_NOT_USE`` (see
:data:`JAX_CORE_NAMES`). Two are read while kfac-jax is imported
(``DebugInfo`` at module level in ``tag_graph_matcher``, ``Effects`` in an
annotation of ``LossTag``), so on jax 0.11 and 0.12 ``import kfac_jax`` fails
with ``AttributeError: jax.core.Effects was deprecated in JAX v0.10.0 and removed
in JAX v0.11.0. Use jax.extend.core.Effects.``; the others are read when KFAC
traces (layer registration, the loss tags' abstract evaluation, ``pmap``
detection). :func:`install_jax_core_aliases` sets each name that ``jax.core``
lacks to the same object from ``jax.extend.core``, its public home since jax
0.4.x, and touches nothing on a jax that still has them (up to 0.10.x, where
they are the same objects, deprecated). kfac-jax reads all seven through the
``jax.core`` module attribute, so setting them there covers every use. It must
run before ``import kfac_jax``, so importing this module runs it, and the
modules that import kfac_jax (``networks``, ``loss``, ``optimizers``) import
this module first (``ferminet/__init__.py`` stays free of jax, for the CLI's
start-up time). Delete it once a kfac-jax release reads these names from
``jax.extend.core`` (kfac-jax 0.0.8 does not).

2. Dict bind params (jax >= 0.9.2): :func:`patch_kfac_jax_eval_eqn`
--------------------------------------------------------------------
Up to jax 0.9.1, ``Primitive.get_bind_params(params)`` returns a pair
``(subfuns, bind_params)``. From jax 0.9.2 on it returns a plain ``dict`` of
keyword arguments for ``bind`` (call-like primitives carry their sub-functions
inside it, under ``'subfuns'``). kfac-jax's tag graph matcher evaluates jaxpr
equations with ``kfac_jax._src.tag_graph_matcher.eval_jaxpr_eqn``, which
unpacks that result unconditionally, so every KFAC optimizer fails while
registering layers ("too many values to unpack" or "not enough values").
kfac-jax 0.0.8 has this bug. Upstream fixed it on
kfac-jax's main branch (commit 086619d, ``eval_jaxpr_eqn`` branches on
``jax_version >= (0, 9, 2)``) without a release so far; we found no kfac-jax
issue that tracks it. folx had the same bug in its own interpreter and fixed it
in microsoft/folx PR #42 ("Handle the new JAX bind-params API", in folx 0.2.30).

:func:`patch_kfac_jax_eval_eqn` replaces the module attribute
``tag_graph_matcher.eval_jaxpr_eqn`` with a wrapper that accepts both forms.
kfac-jax looks the function up through that attribute at call time (the
tracer calls ``tgm.eval_jaxpr_eqn``; nothing imports it by name), so this one
attribute covers every use. When ``get_bind_params`` returns a pair, the
wrapper calls the original function unchanged; only the dict case is handled
here. Nothing is patched unless both probes say it is needed: the installed
JAX returns dicts, and the installed kfac-jax's function fails on an equation
it should evaluate. The patch is idempotent; this fix touches no other kfac-jax internal
(fix 3 touches three more). Remove it once a kfac-jax release handles dicts.

3. ClosedJaxpr merged into Jaxpr (jax >= 0.11): :func:`patch_kfac_jax_closed_jaxpr`
-----------------------------------------------------------------------------------
jax 0.11 merged ``ClosedJaxpr`` into ``Jaxpr``: a ``Jaxpr`` carries its constants
(``consts``, also ``literals``; ``constvars`` are the inputs they belong to),
``jaxpr.jaxpr`` is the jaxpr itself, and ``jax.extend.core.ClosedJaxpr`` is the
``Jaxpr`` class. Its constructor takes ``(constvars, invars, ...)``, and the legacy
positional ``Jaxpr(jaxpr, consts)``, but not kfac-jax's keywords, so kfac-jax 0.0.8
fails while registering layers with ``TypeError: Jaxpr.__init__() got an unexpected
keyword argument 'jaxpr'``. kfac-jax builds closed jaxprs in two modules:

* ``tag_graph_matcher`` calls its module attribute ``ClosedJaxpr(jaxpr=...,
  consts=...)`` six times (``make_jax_graph``, ``clean_jaxpr``,
  ``clean_layer_tags_jaxpr``, ``merge_broadcasts_jaxpr`` and ``_auto_register_tags``
  twice), and its ``to_closed_jaxpr(jaxpr)``, which those functions call on the
  jaxprs they are given, turns a ``Jaxpr`` into ``ClosedJaxpr(jaxpr=jaxpr,
  consts=[])``. Every ``Jaxpr`` is now closed, so that would detach the constants
  of every jaxpr kfac-jax cleans (the traced function's and those of its ``pjit``
  and ``scan`` equations): their constvars would become plain inputs.
* ``tracer`` (``ProcessedJaxpr.__init__``) calls ``jex.core.ClosedJaxpr(jaxpr=...,
  consts=...)`` through its module attribute ``jex``, the ``jax.extend`` module.

The rest of kfac-jax works on merged jaxprs unchanged: it reads ``.jaxpr`` (the jaxpr
itself), ``.consts``/``.literals``, ``.jaxpr.constvars`` (paired with those consts)
and ``.jaxpr.invars``; ``.replace(eqns=...)`` keeps the constants, and
``.replace(constvars=...)`` (``make_jax_graph``) drops them but is immediately
rewrapped with the matching ones; ``to_jaxpr_or_closed_jaxpr`` (whose
``isinstance(original, Jaxpr)`` is now always true) returns ``.jaxpr``, the jaxpr
itself; nothing checks ``isinstance(..., ClosedJaxpr)``.

:func:`patch_kfac_jax_closed_jaxpr` sets three module attributes, all read at call
time: ``tag_graph_matcher.ClosedJaxpr`` to :func:`closed_jaxpr` (``jaxpr`` with
``consts`` attached, ``jaxpr.with_consts(consts)``),
``tag_graph_matcher.to_closed_jaxpr`` to :func:`jaxpr_unchanged` (returns its
argument, constants included), and ``tracer.jex`` to a stand-in for ``jax.extend``
whose ``core`` is a stand-in for ``jax.extend.core`` with ``ClosedJaxpr`` =
:func:`closed_jaxpr` (:func:`module_with`); both stand-ins forward every other
attribute to the real module at lookup time. The
stand-in is there because ``tracer`` reaches ``ClosedJaxpr`` only through
``jax.extend.core`` itself; changing that public attribute would change it for
jax and every other library in the process (and break their ``isinstance`` checks),
and copying ``ProcessedJaxpr.__init__`` would copy more of kfac-jax. Applied only
where jax has merged the classes (``jax.extend.core.ClosedJaxpr is
jax.extend.core.Jaxpr``) and kfac-jax's own ``ClosedJaxpr(jaxpr=..., consts=...)``
fails; idempotent. Remove it once a kfac-jax release supports jax >= 0.11
(kfac-jax 0.0.8 does not).

4. The same program in every process (any jax): :func:`patch_kfac_jax_layer_tag_order`
--------------------------------------------------------------------------------------
kfac-jax's ``tracer._layer_tag_vjp`` (the curvature estimate of every KFAC step) takes
the distinct inputs of all layer tags as ``list(set(v for v in layer_tag_invars ...))``.
Jaxpr variables hash by identity, so that order, and with it the order of operations in
the compiled KFAC step, changes from process to process. The results do not (it only
permutes independent operations), but JAX's persistent compilation cache
(``debug.compilation_cache``) keys on the program, so the KFAC step, the costliest
compilation of a run, was compiled again at every launch (measured: every launch of the
same Li run gave a different key). :func:`patch_kfac_jax_layer_tag_order` sets the module
global ``set`` of ``tracer`` (found before the builtin) to :func:`ordered_set`: for an
iterable of jaxpr variables only, the distinct ones in first-seen order (a list; that
``list(set(...))`` is the only use of ``set`` on variables in ``tracer``); for anything
else (``tracer``'s sets of parameter indices) the builtin ``set``. Idempotent. Remove it
once kfac-jax orders these deterministically (0.0.8 does not).
"""

from __future__ import annotations

import functools
import logging
import types
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import jax
import jax.extend as jex
import jax.numpy as jnp
import numpy as np

# The names kfac-jax 0.0.8 reads from ``jax.core`` that jax 0.11 removed (all in
# ``jax.extend.core``); the other ``jax.core`` names it reads (``AbstractValue``,
# ``Atom``) are still there in jax 0.12.
JAX_CORE_NAMES = (
  'DebugInfo',
  'DropVar',
  'Effects',
  'gensym',
  'new_jaxpr_eqn',
  'no_effects',
  'unsafe_get_axis_names_DO_NOT_USE',
)

# The names install_jax_core_aliases has set on jax.core (none on jax <= 0.10).
jax_core_aliases: tuple[str, ...] = ()

# kfac-jax's tag_graph_matcher attributes patch_kfac_jax_closed_jaxpr replaced (for tests).
kfac_jax_originals: dict[str, Any] = {}

_MARK = '_ferminet_dict_bind_params'
_applied: bool | None = None  # None: not decided yet; then whether the patch is active


def _has(module: types.ModuleType, name: str) -> bool:
  """``hasattr`` without the ``DeprecationWarning`` jax 0.10 gives for deprecated names."""
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', DeprecationWarning)
    return hasattr(module, name)


def alias_missing(
  target: types.ModuleType, source: types.ModuleType, names: Iterable[str]
) -> tuple[str, ...]:
  """Sets ``target.<name> = source.<name>`` for each name ``target`` lacks; returns those names.

  A name ``target`` has (deprecated or not) is left alone; so is one ``source`` lacks too
  (kfac-jax then fails as it would without this module).
  """
  added = tuple(n for n in names if not _has(target, n) and _has(source, n))
  for name in added:
    setattr(target, name, getattr(source, name))
  return added


def install_jax_core_aliases() -> tuple[str, ...]:
  """Gives ``jax.core`` the :data:`JAX_CORE_NAMES` it lacks, from ``jax.extend.core``.

  Returns the names added by this call (empty on jax <= 0.10 and when called again);
  idempotent. Must run before ``import kfac_jax``; importing this module runs it.
  """
  global jax_core_aliases
  added = alias_missing(jax.core, jex.core, JAX_CORE_NAMES)
  jax_core_aliases += added
  if added:
    logging.getLogger(__name__).debug(
      'ferminet._compat: jax %s: jax.core.%s set from jax.extend.core',
      jax.__version__,
      ', '.join(added),
    )
  return added


def bind_params_is_dict(primitive: Any, params: dict[str, Any]) -> bool:
  """Whether ``primitive.get_bind_params(params)`` returns the new (dict) form."""
  return isinstance(primitive.get_bind_params(params), dict)


def jax_returns_dict_bind_params() -> bool:
  """Whether this JAX's ``Primitive.get_bind_params`` returns a dict (jax >= 0.9.2)."""
  return bind_params_is_dict(jex.core.Primitive('ferminet_compat_probe'), {})


def eval_eqn_with_dict_bind_params(original: Callable[..., list]) -> Callable[..., list]:
  """Wraps kfac-jax's ``eval_jaxpr_eqn(eqn, in_values)`` to accept dict bind params.

  Identical to ``original`` when ``get_bind_params`` returns ``(subfuns, params)``;
  when it returns a dict, binds the primitive with the dict as keyword arguments
  (and no positional sub-functions), as ``jax.core.eval_jaxpr`` does.
  """

  @functools.wraps(original)
  def eval_jaxpr_eqn(eqn: Any, in_values: list) -> list:
    bind_params = eqn.primitive.get_bind_params(eqn.params)
    if not isinstance(bind_params, dict):
      return original(eqn, in_values)
    with jex.source_info_util.user_context(eqn.source_info.traceback):
      output = eqn.primitive.bind(*in_values, **bind_params)
    return output if isinstance(output, list) else [output]

  setattr(eval_jaxpr_eqn, _MARK, True)
  return eval_jaxpr_eqn


def _evaluates_simple_eqn(eval_jaxpr_eqn: Callable[..., list]) -> bool:
  """Whether ``eval_jaxpr_eqn`` evaluates ``-x`` (traced only, nothing is compiled)."""
  # Abstract arguments: probing must not initialise a backend (jax.distributed and
  # platform settings must stay possible after importing ferminet.optimizers).
  x = jax.ShapeDtypeStruct((), jnp.float32)
  (eqn,) = jax.make_jaxpr(jax.lax.neg)(x).eqns
  try:
    jax.make_jaxpr(lambda x: eval_jaxpr_eqn(eqn, [x]))(x)
  except (TypeError, ValueError):
    return False
  return True


def patch_kfac_jax() -> tuple[str, ...]:
  """Applies the kfac-jax fixes this JAX needs (sections 2 to 4 above); idempotent.

  Returns the names of the active ones (``'eval_jaxpr_eqn'``, ``'closed_jaxpr'``,
  ``'layer_tag_order'``).
  Call before any kfac-jax optimizer or curvature estimator traces a function
  (``ferminet.optimizers`` does so on import).
  """
  active = {
    'eval_jaxpr_eqn': patch_kfac_jax_eval_eqn(),
    'closed_jaxpr': patch_kfac_jax_closed_jaxpr(),
    'layer_tag_order': patch_kfac_jax_layer_tag_order(),
  }
  return tuple(name for name, on in active.items() if on)


def patch_kfac_jax_eval_eqn() -> bool:
  """Makes kfac-jax's ``eval_jaxpr_eqn`` work with dict bind params if it does not; idempotent.

  Returns whether the patch is active.
  """
  global _applied
  from kfac_jax._src import tag_graph_matcher as tgm  # the one private module this fix touches

  if getattr(tgm.eval_jaxpr_eqn, _MARK, False):
    _applied = True
    return True
  if _applied is not None:
    return _applied
  _applied = False
  if jax_returns_dict_bind_params() and not _evaluates_simple_eqn(tgm.eval_jaxpr_eqn):
    patched = eval_eqn_with_dict_bind_params(tgm.eval_jaxpr_eqn)
    if not _evaluates_simple_eqn(patched):
      raise RuntimeError(
        f'kfac-jax {_kfac_version()} cannot evaluate jaxpr equations on jax {jax.__version__}, '
        'even with ferminet._compat; use a supported jax (see README).'
      )
    tgm.eval_jaxpr_eqn = patched
    _applied = True
    logging.getLogger(__name__).info(
      'ferminet._compat: patched kfac-jax %s eval_jaxpr_eqn for dict get_bind_params (jax %s)',
      _kfac_version(),
      jax.__version__,
    )
  return _applied


def jax_merged_closed_jaxpr() -> bool:
  """Whether this JAX has merged ``ClosedJaxpr`` into ``Jaxpr`` (jax >= 0.11)."""
  return getattr(jex.core, 'ClosedJaxpr', None) is jex.core.Jaxpr


def closed_jaxpr(jaxpr: Any, consts: Any) -> Any:
  """kfac-jax's ``ClosedJaxpr(jaxpr=..., consts=...)`` on jax >= 0.11: ``jaxpr`` with ``consts``.

  The constants become the values of its first ``len(consts)`` inputs (``constvars``),
  as ``ClosedJaxpr`` did; everything else is shared with ``jaxpr``.
  """
  return jaxpr.with_consts(consts)


def jaxpr_unchanged(jaxpr: Any) -> Any:
  """kfac-jax's ``to_closed_jaxpr`` on jax >= 0.11: every jaxpr is closed, constants kept."""
  return jaxpr


def module_with(module: types.ModuleType, **overrides: Any) -> types.ModuleType:
  """A stand-in for ``module``: ``overrides``, and every other attribute from ``module``.

  Other attributes are looked up in ``module`` at each access (PEP 562 ``__getattr__``),
  so the stand-in follows later changes to ``module``.
  """
  proxy = types.ModuleType(f'{__name__}:{module.__name__}', module.__doc__)
  proxy.__dict__.update(overrides, __getattr__=functools.partial(getattr, module))
  return proxy


def _builds_closed_jaxpr(tgm: types.ModuleType, tracer: types.ModuleType) -> bool:
  """Whether kfac-jax's ``ClosedJaxpr(jaxpr=..., consts=...)`` works, and keeps constants.

  Builds one through each module kfac-jax builds them in, as it does (with
  ``constvars`` replaced, as ``make_jax_graph`` does), then ``to_closed_jaxpr`` of the
  results; traced only (nothing is compiled).
  """
  c = np.arange(3.0, dtype=np.float32)  # a NumPy constant: a constvar, no backend needed
  probe = jax.make_jaxpr(lambda x: x * c)(jax.ShapeDtypeStruct((3,), jnp.float32))
  try:
    built = [
      tgm.ClosedJaxpr(
        jaxpr=probe.jaxpr.replace(constvars=probe.jaxpr.constvars), consts=probe.consts
      ),
      tracer.jex.core.ClosedJaxpr(jaxpr=probe.jaxpr, consts=probe.consts),
    ]
  except TypeError:
    return False
  built += [tgm.to_closed_jaxpr(b) for b in built]
  return all(
    len(b.consts) == len(b.jaxpr.constvars) == 1 and b.consts[0] is probe.consts[0] for b in built
  )


def patch_kfac_jax_closed_jaxpr() -> bool:
  """Makes kfac-jax build closed jaxprs on a JAX that merged them into ``Jaxpr``; idempotent.

  Returns whether the patch is active: set :func:`closed_jaxpr` as
  ``tag_graph_matcher.ClosedJaxpr`` and ``tracer``'s ``jex.core.ClosedJaxpr``, and
  :func:`jaxpr_unchanged` as ``tag_graph_matcher.to_closed_jaxpr`` (section 3 above).
  A no-op unless this JAX has merged the classes and kfac-jax fails to build one.
  """
  from kfac_jax._src import tag_graph_matcher as tgm
  from kfac_jax._src import tracer

  if tgm.ClosedJaxpr is closed_jaxpr:
    return True
  if not jax_merged_closed_jaxpr() or _builds_closed_jaxpr(tgm, tracer):
    return False
  originals = tgm.ClosedJaxpr, tgm.to_closed_jaxpr, tracer.jex
  kfac_jax_originals.update(ClosedJaxpr=tgm.ClosedJaxpr, to_closed_jaxpr=tgm.to_closed_jaxpr)
  tgm.ClosedJaxpr = closed_jaxpr
  tgm.to_closed_jaxpr = jaxpr_unchanged
  tracer.jex = module_with(jex, core=module_with(jex.core, ClosedJaxpr=closed_jaxpr))
  if not _builds_closed_jaxpr(tgm, tracer):
    tgm.ClosedJaxpr, tgm.to_closed_jaxpr, tracer.jex = originals
    kfac_jax_originals.clear()
    raise RuntimeError(
      f'kfac-jax {_kfac_version()} cannot build closed jaxprs on jax {jax.__version__}, '
      'even with ferminet._compat; use a supported jax (see README).'
    )
  logging.getLogger(__name__).info(
    'ferminet._compat: patched kfac-jax %s ClosedJaxpr, to_closed_jaxpr (tag_graph_matcher) '
    'and jex.core.ClosedJaxpr (tracer) for jax %s, where ClosedJaxpr is Jaxpr',
    _kfac_version(),
    jax.__version__,
  )
  return True


def ordered_set(items: Iterable[Any] = ()) -> Any:
  """``set(items)`` for kfac-jax's tracer: jaxpr variables unique in first-seen order (a
  list), anything else a builtin set (section 4 above)."""
  items = list(items)
  if items and all(isinstance(v, jex.core.Var) for v in items):
    return list(dict.fromkeys(items))
  return set(items)


def patch_kfac_jax_layer_tag_order() -> bool:
  """Makes kfac-jax's tracer order layer-tag inputs the same in every process (section 4)."""
  from kfac_jax._src import tracer

  tracer.set = ordered_set
  return True


def _kfac_version() -> str:
  import kfac_jax

  return getattr(kfac_jax, '__version__', '?')


# Before the importer's ``import kfac_jax`` (see the module docstring); a no-op on jax <= 0.10.
install_jax_core_aliases()
