"""MNIST, defense `dp_sgd` (see sca_jax/defenses/).

  python -m sca_jax.main --config=configs/mnist_dp_sgd.py --workdir=DIR
  python -m sca_jax.main --config=configs/mnist_dp_sgd.py:paper --workdir=DIR

The default is the CPU-sized setting of `sca_jax.config_lib.base_config`;
`:paper` is the paper's protocol (full data, 25 epochs).
"""

from sca_jax import config_lib
from sca_jax.defenses import dp_sgd



def get_config(arg=None):
  c = config_lib.get_config(arg, name="dp_sgd", dataset="mnist")
  c.defense.model = "no_defense_gn"
  # Per-example gradients need a per-example normaliser: GroupNorm, not BN.
  c.defense.gn_groups = 4
  # The authors' Opacus settings: noise multiplier 1.1, clip 1.0; delta 1e-5.
  c.defense.dp_sgd = dp_sgd.default_dp_config(noise_multiplier=1.1,
                                              clip_norm=1.0)
  return c
