"""Train H2 at its equilibrium bond length (1.4 bohr) from Python.

    python examples/h2.py

Runs in a few minutes on a laptop CPU and prints the reblocked energy and its
distance from the exact -1.1744757 Ha.
"""

from ferminet import config, train


def main():
  cfg = config.default()
  cfg.system.molecule_name = 'H2'
  cfg.system.bond_length = 1.4  # bohr (without it: the G3 bond, 0.737164 Å)
  cfg.batch_size = 256
  cfg.network.determinants = 4
  cfg.network.ferminet.hidden_dims = ((64, 16), (64, 16))
  cfg.pretrain.iterations = 200
  cfg.optim.iterations = 1500
  cfg.log.save_path = 'ferminet_h2'
  result = train.train(cfg)
  print(f'H2: {result.energy:.5f} +/- {result.stderr:.5f} Ha')


if __name__ == '__main__':
  main()
