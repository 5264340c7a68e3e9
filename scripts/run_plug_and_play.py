"""Plug-&-Play attack on already trained targets; table and grids to results/.

  python scripts/run_plug_and_play.py --workdir_root=/tmp/baselines \
      --runs=no_defense,sca_0.5 \
      --generator=~/.cache/sca_jax/generators/mnist_aux

For each run of `scripts/run_baselines.py` (its `<workdir_root>/<run>/seed0`
holds the trained target), the checkpoints are copied to
`<workdir_root>/pnp/<run>` (the original workdir and its results.json stay
untouched) and `experiment.run` evaluates the restored target
(`train.skip`) with `config.attacks = ("plug_and_play",)`. Writes
`<out>.md/.csv` (attack accuracy, FID, nearest-image PSNR/SSIM, each beside
the random-sample floor) and `<out>_grids/<run>.png`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import run_baselines  # pylint: disable=g-import-not-at-top,wrong-import-position
from sca_jax import experiment  # pylint: disable=wrong-import-position

COLUMNS = ["run", "test_accuracy", "attack_accuracy", "attack_accuracy_floor",
           "fid", "fid_floor", "psnr", "psnr_floor", "ssim", "ssim_floor",
           "confidence_initial", "confidence_optimized", "num_images",
           "time_s"]
FOOTER = ("Per attack image: attack_accuracy by the independent evaluation "
          "classifier, FID between the class's training images and the "
          "attack's (evaluation-classifier features), PSNR/SSIM against the "
          "nearest training image of the class. `*_floor`: as many random "
          "generator samples, unoptimised. confidence: the target's mean "
          "softmax for the attacked class before and after optimisation.")


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--workdir_root", required=True)
  ap.add_argument("--runs", default="no_defense,sca_0.5")
  ap.add_argument("--dataset", default="mnist")
  ap.add_argument("--generator", required=True, help="generator folder")
  ap.add_argument("--data_dir")
  ap.add_argument("--override", action="append", default=[],
                  help="attack.plug_and_play field=value (repeatable)")
  ap.add_argument("--out", default=None, help="default "
                  "results/plug_and_play_<dataset>")
  args = ap.parse_args()
  out = Path(args.out or ROOT / "results" / f"plug_and_play_{args.dataset}")
  generator = str(Path(args.generator).expanduser().absolute())
  rows = []
  for run in [r.strip() for r in args.runs.split(",") if r.strip()]:
    stem, extra = run_baselines.RUNS[run]
    c = run_baselines.load_config(args.dataset, stem, None)
    for k, v in {**extra, **({"data.data_dir": args.data_dir}
                             if args.data_dir else {})}.items():
      run_baselines.set_field(c, k, v)
    c.train.skip = True
    c.attacks = ("plug_and_play",)
    c.attack.plug_and_play.generator_path = generator
    for item in args.override:
      k, _, v = item.partition("=")
      run_baselines.set_field(c.attack.plug_and_play, k, v)
    trained = Path(args.workdir_root) / run / "seed0"
    if not (trained / "checkpoints").is_dir():
      raise FileNotFoundError(f"{trained}/checkpoints: train the target "
                              "first (scripts/run_baselines.py)")
    workdir = Path(args.workdir_root) / "pnp" / run
    if not workdir.exists():
      workdir.mkdir(parents=True)
      shutil.copytree(trained / "checkpoints", workdir / "checkpoints")
      shutil.copy2(trained / "config.json", workdir / "config.json")
    print(f"=== {run}", flush=True)
    res = experiment.run(c, workdir)
    r = res["attacks"]["plug_and_play"]
    fl = r["floor"]
    rows.append({
        "run": run, "test_accuracy": res["test_accuracy"],
        "attack_accuracy": r["attack_accuracy"]["mean"],
        "attack_accuracy_floor": fl["attack_accuracy"]["mean"],
        "fid": r["fid"], "fid_floor": fl["fid"],
        "psnr": r["psnr"]["mean"], "psnr_floor": fl["psnr"]["mean"],
        "ssim": r["ssim"]["mean"], "ssim_floor": fl["ssim"]["mean"],
        "confidence_initial": r["target_confidence"]["initial"],
        "confidence_optimized": r["target_confidence"]["optimized"],
        "num_images": r["num_images"], "time_s": r["total_time_s"]})
    grids = Path(f"{out}_grids")
    grids.mkdir(parents=True, exist_ok=True)
    shutil.copy2(workdir / "attacks" / "plug_and_play.png",
                 grids / f"{run}.png")
  source = json.loads((Path(generator) / "config.json").read_text())["source"]
  header = run_baselines.table_header(f"Plug-&-Play on {args.dataset}", [
      f"generator: `{generator}`: {json.dumps(source)}"])
  run_baselines.write_table(rows, COLUMNS, out, header, FOOTER)
  print(f"wrote {out}.md/.csv and {out}_grids/")


if __name__ == "__main__":
  main()
