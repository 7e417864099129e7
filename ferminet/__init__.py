"""ferminet: the FermiNet wavefunction and neural-network variational Monte Carlo in JAX."""

__version__ = '0.2.0'
