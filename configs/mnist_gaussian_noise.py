"""MNIST, defense `gaussian_noise` (see sca_jax/defenses/).

  python -m sca_jax.main --config=configs/mnist_gaussian_noise.py --workdir=DIR
  python -m sca_jax.main --config=configs/mnist_gaussian_noise.py:paper --workdir=DIR

The default is the CPU-sized setting of `sca_jax.config_lib.base_config`;
`:paper` is the paper's protocol (full data, 25 epochs).
"""

from sca_jax import config_lib


def get_config(arg=None):
  c = config_lib.get_config(arg, name="gaussian_noise", dataset="mnist")
  c.defense.model = "gaussian_noise"
  c.defense.noise_std = 0.5  # sigma, at inference on hidden linear layers
  return c
