"""How far a trained target's sparse layers are from the optimum, by solver
iterations: to choose `defense.layer_num_iters` (the brief: <= 2%).

  python scripts/solver_gap.py --workdir=runs/verdict/mnist/sca_lam0.5/seed0 \\
      --iters=15,20,30,40,50 --images=128

Restores the run's newest checkpoint, codes `--images` test images and
prints, per sparse layer, the relative gap of the mean objective after each
iteration count (the layer's own solver and lambda) to a FISTA x`--reference`
solve; `--out` also writes them as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# pylint: disable=g-import-not-at-top,wrong-import-position
import jax.numpy as jnp

from sca_jax import experiment, machine
# pylint: enable=g-import-not-at-top,wrong-import-position


def main(argv=None) -> dict:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--workdir", required=True, help="a run's --workdir")
  p.add_argument("--iters", default="15,20,30,40,50",
                 help="comma-separated iteration counts")
  p.add_argument("--images", type=int, default=128)
  p.add_argument("--reference", type=int, default=500,
                 help="FISTA iterations of the optimum")
  p.add_argument("--out", help="JSON file to write")
  args = p.parse_args(argv)
  try:
    iters = [int(n) for n in args.iters.split(",") if n]
  except ValueError:
    p.error(f"--iters: comma-separated ints, got {args.iters!r}")
  if not iters or min(iters) < 1 or args.images < 1 or args.reference < 1:
    p.error("--iters, --images and --reference must be positive")
  try:
    config, model, splits = experiment.restore_target(args.workdir)
  except experiment.validation.ConfigError as e:
    p.error(str(e))
  if not list(model.sparse_layers()):
    p.error(f"{args.workdir}: defense {config.defense.name!r} has no sparse "
            "layers")
  stats = experiment.sparse_layer_stats(
      model, jnp.asarray(splits.test_x[:args.images]), args.reference, iters)
  for name, s in stats.items():
    print(f"{name}: configured {s['relative_gap_to_optimum']:.2%} "
          f"(active {s['active_fraction']:.3f})")
    for n, gap in s["gap_by_iterations"].items():
      print(f"  {n:4d} iterations: {gap:.2%}")
  out = {"workdir": str(args.workdir), "images": args.images,
         "reference": f"fista x{args.reference}", "layers": stats,
         "machine": machine.describe()}
  if args.out:
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
  return out


if __name__ == "__main__":
  main()
