"""Fashion-MNIST, defense `gong_gan` (see sca_jax/defenses/).

  python -m sca_jax.main --config=configs/fashion_mnist_gong_gan.py --workdir=DIR
  python -m sca_jax.main --config=configs/fashion_mnist_gong_gan.py:paper --workdir=DIR

The default is the CPU-sized setting of `sca_jax.config_lib.base_config`;
`:paper` is the paper's protocol (full data, 25 epochs).
"""

from sca_jax import config_lib


def get_config(arg=None):
  c = config_lib.get_config(arg, name="gong_gan", dataset="fashion_mnist")
  c.defense.model = "no_defense"
  c.defense.gan_epochs = 25 if arg == "paper" else 2
  c.defense.gan_fraction = 1.0
  c.defense.gong_alpha = 0.5       # weight of the spurious class pattern
  c.defense.gong_pattern_seed = 0
  return c
