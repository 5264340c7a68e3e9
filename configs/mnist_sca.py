"""MNIST, defense `sca`: CPU-sized default, or `:paper` (the paper's
protocol). The same config as `configs/experiment.py:defense=sca,dataset=mnist`
(every other defense, data set and protocol: see that file). The defense's own
settings and adaptive attacks come from its registration in
`sca_jax.defenses` (see `config_lib.make_config`).

  python -m sca_jax.main --config=configs/mnist_sca.py --workdir=DIR
"""

from sca_jax import config_lib


def get_config(arg=None):
  return config_lib.get_config(arg, name="sca", dataset="mnist")
