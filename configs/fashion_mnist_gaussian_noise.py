"""Fashion-MNIST, defense `gaussian_noise`: CPU-sized default, or `:paper` (the paper's
protocol). The defense's own settings and adaptive attacks come from its
registration in `sca_jax.defenses` (see `config_lib.get_config`).

  python -m sca_jax.main --config=configs/fashion_mnist_gaussian_noise.py --workdir=DIR
"""

from sca_jax import config_lib


def get_config(arg=None):
  return config_lib.get_config(arg, name="gaussian_noise", dataset="fashion_mnist")
