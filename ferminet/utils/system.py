"""The reference FermiNet's ``ferminet.utils.system``, backed by :mod:`ferminet.system`.

``Atom`` is :class:`ferminet.system.Atom` itself: ``Atom(symbol, coords=(0, 0, 0),
charge=None, atomic_number=None, units='bohr')``, coordinates converted to and kept
in bohr (``units`` reads 'bohr' afterwards), with ``coords_array`` (bohr),
``coords_angstrom`` and ``element``. A config file's ``cfg.system.molecule =
[system.Atom(...)]`` is therefore an ordinary ferminet molecule.
"""

from __future__ import annotations

import ml_collections

from ferminet import system as _system

Atom = _system.Atom


def pyscf_mol_to_internal_representation(mol) -> ml_collections.ConfigDict:
  """The ``system`` and ``pretrain`` fields that describe a PySCF ``gto.Mole``.

  Builds ``mol`` first (as the reference does). Returns a ConfigDict with
  ``system.molecule`` (atoms, bohr), ``system.electrons`` ((n_alpha, n_beta)) and
  ``pretrain.basis`` (the molecule's basis when it is one name, else None), to be
  merged into a config with ``cfg.update(...)``.

  Raises:
    errors.ConfigError: the molecule has an effective core potential (see
      :func:`ferminet.system.from_pyscf`).
  """
  mol.build()
  built = _system.from_pyscf(mol)
  return ml_collections.ConfigDict(
    {
      'system': {'molecule': list(built.atoms), 'electrons': tuple(built.electrons)},
      'pretrain': {'basis': mol.basis if isinstance(mol.basis, str) else None},
    }
  )
