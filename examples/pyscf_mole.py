"""A system given as a PySCF Mole: here LiH in angstrom, charge and spin from PySCF.

    python examples/pyscf_mole.py            # dry summary only
    python examples/pyscf_mole.py --train    # a short training run

ferminet reads the geometry (converted to bohr), the charge and the spin from
the Mole; the Hartree-Fock pretraining uses the Mole's basis (here cc-pVDZ).
A Mole with an effective core potential (``ecp=``) is refused: pseudopotentials
are not supported yet.
"""

import sys

from pyscf import gto

from ferminet import cli, config, train


def main():
  mol = gto.M(
    atom='Li 0 0 0; H 0 0 1.5949', unit='angstrom', charge=0, spin=0, basis='ccpvdz', verbose=0
  )
  cfg = config.default()
  cfg.system.pyscf_mol = mol
  cfg.batch_size = 256
  cfg.network.determinants = 4
  cfg.network.ferminet.hidden_dims = ((64, 16), (64, 16))
  cfg.pretrain.iterations = 100
  cfg.optim.iterations = 500
  cfg.log.save_path = 'ferminet_lih_pyscf'
  if '--train' in sys.argv:
    train.train(cfg)
  else:
    print('\n'.join(cli.summary(config.resolve(cfg))))


if __name__ == '__main__':
  main()
