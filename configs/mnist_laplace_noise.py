"""MNIST, defense `laplace_noise` (see sca_jax/defenses/).

  python -m sca_jax.main --config=configs/mnist_laplace_noise.py --workdir=DIR
  python -m sca_jax.main --config=configs/mnist_laplace_noise.py:paper --workdir=DIR

The default is the CPU-sized setting of `sca_jax.config_lib.base_config`;
`:paper` is the paper's protocol (full data, 25 epochs).
"""

from sca_jax import config_lib


def get_config(arg=None):
  c = config_lib.get_config(arg, name="laplace_noise", dataset="mnist")
  c.defense.model = "laplace_noise"
  c.defense.laplace_scale = 0.5  # b of Laplace(0, b); paper: 0.5
  return c
