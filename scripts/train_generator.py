r"""Trains a small StyleGAN2 on the attacker's AUXILIARY split, for Plug-&-Play.

Recipe and outputs: `sca_jax.gan.trainer` and `sca_jax.gan.run`; docs in
docs/plug_and_play.md. Every `GanConfig` field is a flag. Rerunning the same
command resumes from the newest checkpoint in the output folder.

  python scripts/train_generator.py --dataset mnist --out /work/gen_runs/mnist
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from sca_jax.gan import run
from sca_jax.gan import trainer


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--dataset", default="mnist")
  p.add_argument("--data_dir", default=None)
  p.add_argument("--split_seed", type=int, default=0, help="config.seed")
  p.add_argument("--holdout", type=int, default=2000,
                 help="auxiliary images kept out of training, for FID")
  p.add_argument("--name", default=None, help="default: <dataset>_aux")
  p.add_argument("--out", type=Path, default=None,
                 help="default: $SCA_JAX_CACHE_DIR/generators/<name>")
  for f in dataclasses.fields(trainer.GanConfig):
    p.add_argument(f"--{f.name}", type=type(f.default), default=f.default)
  args = vars(p.parse_args(argv))
  cfg = trainer.GanConfig(**{f.name: args[f.name] for f in
                             dataclasses.fields(trainer.GanConfig)})
  cfg.validate()
  run.run(cfg, args["dataset"], args["out"], args["data_dir"],
          args["split_seed"], args["holdout"], args["name"])


if __name__ == "__main__":
  main()
