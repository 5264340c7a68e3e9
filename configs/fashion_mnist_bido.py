"""Fashion-MNIST, defense `bido` (see sca_jax/defenses/).

  python -m sca_jax.main --config=configs/fashion_mnist_bido.py --workdir=DIR
  python -m sca_jax.main --config=configs/fashion_mnist_bido.py:paper --workdir=DIR

The default is the CPU-sized setting of `sca_jax.config_lib.base_config`;
`:paper` is the paper's protocol (full data, 25 epochs).
"""

from sca_jax import config_lib


def get_config(arg=None):
  c = config_lib.get_config(arg, name="bido", dataset="fashion_mnist")
  c.defense.model = "no_defense"
  c.defense.dependency = "hsic"  # or "coco"
  c.defense.a_x = 0.05   # weight of dep(hidden, input): minimised
  c.defense.a_y = 0.5    # weight of dep(hidden, label): maximised
  c.defense.sigma = 5.0  # Gaussian kernel width
  return c
