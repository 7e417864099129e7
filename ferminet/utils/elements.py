"""The reference FermiNet's ``ferminet.utils.elements``, backed by :mod:`ferminet.elements`.

``SYMBOLS`` (symbol -> element) and ``ATOMIC_NUMS`` (Z -> element) cover H–Og;
``PERIODS`` maps a period to its elements in order of Z. Each :class:`Element` has
``symbol``, ``atomic_number``, ``period``, ``group``, ``spin_config`` (unpaired
electrons of the neutral ground-state atom; NotImplementedError where unknown),
``nalpha`` and ``nbeta``. The reference's dummy element 'X' (Z = 0) is not included.
"""

from __future__ import annotations

from ferminet import elements as _elements

Element = _elements.Element

SYMBOLS: dict[str, Element] = dict(_elements.PERIODIC_TABLE)
ATOMIC_NUMS: dict[int, Element] = {e.atomic_number: e for e in SYMBOLS.values()}
PERIODS: dict[int, tuple[Element, ...]] = {
  p: tuple(e for e in SYMBOLS.values() if e.period == p)
  for p in sorted({e.period for e in SYMBOLS.values()})
}
