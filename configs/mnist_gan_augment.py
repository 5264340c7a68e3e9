"""MNIST, defense `gan_augment` (see sca_jax/defenses/).

  python -m sca_jax.main --config=configs/mnist_gan_augment.py --workdir=DIR
  python -m sca_jax.main --config=configs/mnist_gan_augment.py:paper --workdir=DIR

The default is the CPU-sized setting of `sca_jax.config_lib.base_config`;
`:paper` is the paper's protocol (full data, 25 epochs).
"""

from sca_jax import config_lib


def get_config(arg=None):
  c = config_lib.get_config(arg, name="gan_augment", dataset="mnist")
  c.defense.model = "no_defense"
  c.defense.gan_epochs = 25 if arg == "paper" else 2  # paper: 25
  c.defense.gan_fraction = 1.0  # generated images per real image
  return c
