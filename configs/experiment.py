"""Any (defense, data set, protocol) from the command line, big_vision style:

  python -m sca_jax.main --workdir=DIR \\
      --config=configs/experiment.py:defense=sca,dataset=fashion_mnist,protocol=paper

Keys (all optional): defense (default sca; any name in
`sca_jax.defenses.DEFENSES`), dataset (default mnist; any name in
`sca_jax.data.SOURCES`), protocol (default "default", the CPU-sized setting;
"paper"; any name in `sca_jax.config_lib.PROTOCOLS`), imports (modules
outside sca_jax that register defenses, layer kinds or attacks, joined by
"+", imported first). Further fields: `--config.<field>=value`.
"""

from sca_jax import config_lib


def get_config(arg=None):
  return config_lib.make_config(**config_lib.parse_args(arg))
