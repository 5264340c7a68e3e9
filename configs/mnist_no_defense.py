"""MNIST, defense `no_defense`.

  python -m sca_jax.main --config=configs/mnist_no_defense.py --workdir=DIR
  python -m sca_jax.main --config=configs/mnist_no_defense.py:paper --workdir=DIR

The default is the CPU-sized setting of `sca_jax.config_lib.base_config`;
`:paper` is the paper's protocol (full data, 25 epochs, 500 LCA iterations).
"""

from sca_jax import config_lib


def get_config(arg=None):
  c = config_lib.get_config(arg, name="no_defense", dataset="mnist")
  return c
