"""Entry point: `python -m sca_jax.main --config=configs/mnist_sca.py --workdir=DIR`.

Config fields can be overridden on the command line, e.g.
`--config.defense.lam=0.25 --config.train.epochs=1`. Any defense, data set
and protocol:
`--config=configs/experiment.py:defense=..,dataset=..,protocol=..`.

`python -m sca_jax.main --list` prints every defense, attack, data set and
protocol, and every config field with its default.

Exit status: 0 done; 2 a user error (config, data files, workdir), printed as
one line naming the field, the value and what is allowed; 3 training diverged
or no checkpoint could be used (one line saying what happened and where the
files are). Any other exception is a bug and shows its traceback; `--debug`
shows tracebacks for every error.
"""

import sys
from typing import NoReturn

from absl import app, flags, logging
from ml_collections import config_flags

from sca_jax import catalog, checkpoint, experiment, validation

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (configs/*.py[:arg]).",
    lock_config=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Directory for checkpoints, metrics and results.json.")
_DEBUG = flags.DEFINE_bool(
    "debug", False, "Show the full traceback of user errors too.")
_LIST = flags.DEFINE_bool(
    "list", False, "Print the defenses, attacks, data sets, protocols and "
    "config fields with their defaults, then exit (no --config or --workdir "
    "needed).")

# Errors with a message that says everything: exit status for each.
EXIT_CODES = ((validation.ConfigError, 2), (checkpoint.TrainingDiverged, 3),
              (checkpoint.CheckpointError, 3))


def fail(message: str, code: int = 2) -> NoReturn:
  """Exits with `code` after one line `error: <message>` on stderr."""
  print(f"error: {' '.join(message.split())}", file=sys.stderr)
  sys.exit(code)


def load_config():
  """The parsed --config, or None without one. ml_collections defers a
  config file it could not load (a wrong path) to the config's first use,
  where it would surface as a traceback deep in the run: failed here."""
  config = _CONFIG.value
  try:
    if config is not None:
      config.keys()  # any attribute raises the deferred error
  except OSError as e:
    why = str(e.__cause__ or e).strip().splitlines()[-1].strip()
    fail(f"--config={flags.FLAGS['config'].config_filename}: cannot load "
         f"the config file ({why}); the project's are configs/experiment.py "
         "and configs/mnist_sca.py (--list shows what they take)")
  return config


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config = load_config()
  if _LIST.value:  # with --config, its plug-ins (config.imports) too
    print(catalog.catalog(tuple(config.get("imports", ()))
                          if config else ()), end="")
    return
  if config is None or not _WORKDIR.value:
    fail("--config and --workdir are required (--list shows the defenses, "
         "attacks, data sets and config fields; --help the flags)")
  # Orbax logs every checkpoint file operation at INFO, and the errors of its
  # threads at ERROR even when they are handled (an unreadable checkpoint is
  # reported by one line of our own instead).
  logging.set_verbosity(logging.INFO if _DEBUG.value else logging.FATAL)
  try:
    experiment.run(config, _WORKDIR.value)
  except tuple(e for e, _ in EXIT_CODES) as e:
    if _DEBUG.value:
      raise
    fail(str(e), next(c for kind, c in EXIT_CODES if isinstance(e, kind)))


def flag_error(message: str) -> str:
  """A flag error without the traceback that ml_collections folds into it
  when a config file's `get_config` raises (an unknown defense in
  `--config=configs/experiment.py:defense=...`): the flag and the error."""
  head, tb, trace = message.partition("Traceback (most recent call last):")
  if not tb:
    return message
  last = [line for line in trace.splitlines() if line.strip()][-1].strip()
  head = " ".join(head.replace("Error whilst parsing config file:", "").split())
  return f"{head} {last} (--debug shows the traceback)"


def parse_flags(argv: list[str]) -> list[str]:
  """absl's parsing, but a bad flag or override is a one-line user error."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    # --debug is not parsed yet when parsing fails.
    fail(str(e) if "--debug" in argv else flag_error(str(e)))


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
