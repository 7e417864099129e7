"""Modules under the reference FermiNet's ``ferminet.utils`` import paths.

``ferminet.utils.system`` and ``ferminet.utils.elements`` let config files written
for DeepMind's FermiNet (``from ferminet.utils import system``) run unchanged; they
re-export :mod:`ferminet.system` and :mod:`ferminet.elements`.
"""
