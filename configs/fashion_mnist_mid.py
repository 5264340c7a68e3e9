"""Fashion-MNIST, defense `mid` (see sca_jax/defenses/).

  python -m sca_jax.main --config=configs/fashion_mnist_mid.py --workdir=DIR
  python -m sca_jax.main --config=configs/fashion_mnist_mid.py:paper --workdir=DIR

The default is the CPU-sized setting of `sca_jax.config_lib.base_config`;
`:paper` is the paper's protocol (full data, 25 epochs).
"""

from sca_jax import config_lib


def get_config(arg=None):
  c = config_lib.get_config(arg, name="mid", dataset="fashion_mnist")
  c.defense.model = "mid"
  c.defense.bottleneck = 256
  c.defense.beta = 0.01
  c.defense.sample_at_inference = False  # z = mu at inference
  return c
