r"""Trains a small StyleGAN2 on the attacker's AUXILIARY split, for Plug-&-Play.

Recipe and outputs: `sca_jax.gan.trainer` and `sca_jax.gan.run`; docs in
docs/plug_and_play.md. Every `GanConfig` field is a flag. Rerunning the same
command resumes from the newest checkpoint in the output folder
(`--restart` starts over).

  python scripts/train_generator.py --dataset mnist --out /work/gen_runs/mnist
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
from pathlib import Path

from sca_jax import generator as gen_lib
from sca_jax.data.sources import SOURCES
from sca_jax.gan import run
from sca_jax.gan import trainer


def _bool(text: str) -> bool:
  # argparse's type=bool would read "False" as True.
  if text.lower() not in ("true", "false", "1", "0"):
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
  return text.lower() in ("true", "1")


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--dataset", default="mnist", choices=SOURCES.names())
  p.add_argument("--data_dir", default=None)
  p.add_argument("--split_seed", type=int, default=0, help="config.seed")
  p.add_argument("--holdout", type=int, default=2000,
                 help="auxiliary images kept out of training, for FID")
  p.add_argument("--name", default=None, help="default: <dataset>_aux")
  p.add_argument("--out", type=Path, default=None,
                 help="default: $SCA_JAX_CACHE_DIR/generators/<name>")
  p.add_argument("--restart", action="store_true",
                 help="delete the output folder's checkpoints and quality "
                      "history first, instead of resuming")
  p.add_argument("--export_to", type=Path, default=None,
                 help="only copy the run's quality history, latest sample "
                      "grid and exported generator here (e.g. "
                      "results/generator), then exit")
  for f in dataclasses.fields(trainer.GanConfig):
    kind = type(f.default)
    p.add_argument(f"--{f.name}", type=_bool if kind is bool else kind,
                   default=f.default)
  args = vars(p.parse_args(argv))
  cfg = trainer.GanConfig(**{f.name: args[f.name] for f in
                             dataclasses.fields(trainer.GanConfig)})
  cfg.validate()
  out = args["out"] or gen_lib.cache_dir(
      args["name"] or f"{args['dataset']}_aux")
  if args["export_to"]:
    path = run.export_summary(out, args["export_to"], args["dataset"])
    print(f"wrote {path}")
    return
  if args["restart"]:
    shutil.rmtree(out / "checkpoints", ignore_errors=True)
    (out / "quality.json").unlink(missing_ok=True)
  run.run(cfg, args["dataset"], out, args["data_dir"],
          args["split_seed"], args["holdout"])


if __name__ == "__main__":
  main()
