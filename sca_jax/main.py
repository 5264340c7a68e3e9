"""Entry point: `python -m sca_jax.main --config=configs/mnist_sca.py --workdir=DIR`.

Config fields can be overridden on the command line, e.g.
`--config.defense.lam=0.25 --config.train.epochs=1`.
"""

from absl import app, flags, logging
from ml_collections import config_flags

from sca_jax import experiment

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (configs/*.py[:arg]).",
    lock_config=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Directory for checkpoints, metrics and results.json.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  # Orbax logs every checkpoint file operation at INFO; keep progress readable.
  logging.set_verbosity(logging.WARNING)
  experiment.run(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main)
