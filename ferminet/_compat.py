"""Compatibility between kfac-jax 0.0.8 and newer JAX.

Why this exists
---------------
Up to jax 0.9.1, ``Primitive.get_bind_params(params)`` returns a pair
``(subfuns, bind_params)``. From jax 0.9.2 on it returns a plain ``dict`` of
keyword arguments for ``bind`` (call-like primitives carry their sub-functions
inside it, under ``'subfuns'``). kfac-jax's tag graph matcher evaluates jaxpr
equations with ``kfac_jax._src.tag_graph_matcher.eval_jaxpr_eqn``, which
unpacks that result unconditionally, so every KFAC optimizer fails while
registering layers ("too many values to unpack" or "not enough values").
kfac-jax 0.0.8 (its newest release) has this bug. Upstream fixed it on
kfac-jax's main branch (commit 086619d, ``eval_jaxpr_eqn`` branches on
``jax_version >= (0, 9, 2)``) without a release so far; we found no kfac-jax
issue that tracks it. folx had the same bug in its own interpreter and fixed it
in microsoft/folx PR #42 ("Handle the new JAX bind-params API", in folx 0.2.30).

What this does
--------------
:func:`patch_kfac_jax` replaces the module attribute
``tag_graph_matcher.eval_jaxpr_eqn`` with a wrapper that accepts both forms.
kfac-jax looks the function up through that attribute at call time (the
tracer calls ``tgm.eval_jaxpr_eqn``; nothing imports it by name), so this one
attribute covers every use. When ``get_bind_params`` returns a pair, the
wrapper calls the original function unchanged; only the dict case is handled
here. Nothing is patched unless both probes say it is needed: the installed
JAX returns dicts, and the installed kfac-jax's function fails on an equation
it should evaluate. The patch is idempotent; no other kfac-jax internal is
touched. Remove this module once a kfac-jax release handles dicts.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import jax
import jax.extend as jex
import jax.numpy as jnp

_MARK = '_ferminet_dict_bind_params'
_applied: bool | None = None  # None: not decided yet; then whether the patch is active


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


def patch_kfac_jax() -> bool:
  """Makes kfac-jax's graph matcher work with this JAX if it does not; idempotent.

  Returns whether the patch is active. Call before any kfac-jax optimizer or
  curvature estimator traces a function (``ferminet.optimizers`` does so on import).
  """
  global _applied
  from kfac_jax._src import tag_graph_matcher as tgm  # the one private module touched

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


def _kfac_version() -> str:
  import kfac_jax

  return getattr(kfac_jax, '__version__', '?')
