"""Runs every defense on one data set and tabulates accuracy and attack scores.

  python scripts/run_baselines.py --workdir_root=/tmp/baselines \
      --max_train=512 --epochs=1 --attack_epochs=2 --defenses=no_defense,mid

Each defense runs `experiment.run` with its config
(`configs/experiment.py:defense=<defense>,dataset=<dataset>`, SCA at lambda
0.1/0.25/0.5) plus common
overrides, in `<workdir_root>/<run>/seed<k>` (finished runs are reused, as
experiment.run resumes), with every attack its config lists: the standard
end-to-end and split attacks and the defense's adaptive attacks. Writes
  `<out>.md/.csv`          test accuracy, end-to-end and split PSNR / SSIM /
                           FID next to the mean-image floor, DP epsilon;
  `<out>_attacks.md/.csv`  every attack (standard and adaptive) per run:
                           attack accuracy by the independent evaluation
                           classifier, PSNR, SSIM, each beside its floor;
  `<out>_grids/<run>/`     the attacks' picture grids;
with the command, seeds and machine in each table's header.
"""

from __future__ import annotations

import argparse
import ast
import csv
import datetime
import json
import platform
import shlex
import shutil
import sys
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position

from sca_jax import config_lib  # pylint: disable=wrong-import-position
from sca_jax import experiment  # pylint: disable=wrong-import-position

# Run name -> (config file stem, extra field overrides).
RUNS = {
    "sca_0.1": ("sca", {"defense.lam": 0.1}),
    "sca_0.25": ("sca", {"defense.lam": 0.25}),
    "sca_0.5": ("sca", {"defense.lam": 0.5}),
    "sparse_standard": ("sparse_standard", {}),
    "no_defense": ("no_defense", {}),
    "dp_sgd": ("dp_sgd", {}),
    "bido": ("bido", {}),
    "mid": ("mid", {}),
    "laplace_noise": ("laplace_noise", {}),
    "gaussian_noise": ("gaussian_noise", {}),
    "gan_augment": ("gan_augment", {}),
    "gong_gan": ("gong_gan", {}),
    "gong_gan_pp": ("gong_gan_pp", {}),
}
ATTACKS = ("end_to_end", "split")
COLUMNS = ["run", "seed", "test_accuracy", "dp_epsilon"] + [
    f"{a}_{m}" for a in ATTACKS
    for m in ("psnr", "psnr_floor", "ssim", "ssim_floor", "fid", "fid_floor")
] + ["error"]
ATTACK_COLUMNS = ["run", "seed", "attack", "leak", "queries",
                  "attack_accuracy", "attack_accuracy_floor", "psnr",
                  "psnr_floor", "ssim", "ssim_floor", "fid", "fid_floor"]


def load_config(dataset: str, stem: str, arg: str | None):
  """`configs/experiment.py:defense=<stem>,dataset=<dataset>[,protocol=paper]`."""
  return config_lib.make_config(stem, dataset, arg or "default")


def set_field(config, dotted: str, value) -> None:
  """config['a.b.c'] = value, parsing strings as Python literals."""
  if isinstance(value, str):
    try:
      value = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      pass  # a plain string
  *parents, leaf = dotted.split(".")
  node = config
  for p in parents:
    node = node[p]
  node[leaf] = value


def common_overrides(args) -> dict:
  o = {}
  if args.max_train is not None:
    o["data.max_train"] = args.max_train
  if args.max_test is not None:
    o["data.max_test"] = args.max_test
  if args.max_aux is not None:
    o["data.max_aux"] = args.max_aux
  if args.epochs is not None:
    o["train.epochs"] = args.epochs
    o["defense.gan_epochs"] = args.epochs  # only read by GAN defenses
  if args.data_dir:
    o["data.data_dir"] = args.data_dir
  for a in ATTACKS:
    if args.attack_epochs is not None:
      o[f"attack.{a}.epochs"] = args.attack_epochs
    if args.attack_images is not None:
      o[f"attack.{a}.num_images"] = args.attack_images
  if args.eval_classifier_epochs is not None:
    o["eval_classifier.epochs"] = args.eval_classifier_epochs
  for item in args.override:
    k, _, v = item.partition("=")
    o[k] = v
  return o


def finished(config, workdir: Path) -> dict | None:
  """results.json of a finished run of exactly this config, else None."""
  path = workdir / "results.json"
  if not path.exists():
    return None
  res = json.loads(path.read_text())
  same = res.get("config") == json.loads(json.dumps(config.to_dict(),
                                                    default=str))
  return res if same else None


def row_of(run: str, seed: int, results: dict) -> dict:
  row = {"run": run, "seed": seed, "test_accuracy": results["test_accuracy"],
         "dp_epsilon": results.get("dp", {}).get("epsilon", "")}
  for a in ATTACKS:
    r = results.get("attacks", {}).get(a)
    if r is None:
      continue
    fl = r["floor"]
    row.update({
        f"{a}_psnr": r["psnr"]["mean"], f"{a}_psnr_floor": fl["psnr"]["mean"],
        f"{a}_ssim": r["ssim"]["mean"], f"{a}_ssim_floor": fl["ssim"]["mean"],
        f"{a}_fid": r["fid"], f"{a}_fid_floor": fl["fid"]})
  return row


def attack_rows(run: str, seed: int, results: dict) -> list[dict]:
  """One row per attack in results.json, standard and adaptive alike."""
  rows = []
  for name, r in results.get("attacks", {}).items():
    fl = r["floor"]
    rows.append({
        "run": run, "seed": seed, "attack": name, "leak": r["leak"]["name"],
        "queries": r.get("config", {}).get("queries", 1),
        "attack_accuracy": r["attack_accuracy"]["mean"],
        "attack_accuracy_floor": fl["attack_accuracy"]["mean"],
        "psnr": r["psnr"]["mean"], "psnr_floor": fl["psnr"]["mean"],
        "ssim": r["ssim"]["mean"], "ssim_floor": fl["ssim"]["mean"],
        "fid": r["fid"], "fid_floor": fl["fid"]})
  return rows


def copy_grids(workdir: Path, dest: Path) -> None:
  for png in sorted((workdir / "attacks").glob("*.png")):
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy2(png, dest / png.name)


def _fmt(v) -> str:
  return f"{v:.4g}" if isinstance(v, float) else str(v)


def table_header(title: str, lines: list[str]) -> list[str]:
  """Title, the command that made the table, `lines`, machine and date."""
  return [
      f"# {title}", "",
      f"- command: `python {' '.join(shlex.quote(a) for a in sys.argv)}`",
      *(f"- {line}" for line in lines),
      f"- machine: {platform.platform()}, {platform.processor() or '?'}, "
      f"devices {[str(d) for d in jax.devices()]}, jax {jax.__version__}",
      f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M}"
      " UTC"]


FOOTER = ("attack_accuracy (the independent evaluation classifier recognises "
          "the reconstruction's label), PSNR, SSIM: lower is a better "
          "defense; FID: higher is. `*_floor`: a trivial attacker answering "
          "the mean auxiliary image (feature inversion's starting image); an "
          "attack at its floor learned nothing.")


def write_table(rows: list[dict], columns: list[str], out: Path,
                header: list[str], footer: str = FOOTER) -> None:
  out.parent.mkdir(parents=True, exist_ok=True)
  with out.with_suffix(".csv").open("w", newline="") as f:
    w = csv.DictWriter(f, columns)
    w.writeheader()
    for r in rows:
      w.writerow({c: r.get(c, "") for c in columns})
  lines = [*header, "",
           "| " + " | ".join(columns) + " |",
           "|" + "---|" * len(columns)]
  for r in rows:
    lines.append("| " + " | ".join(_fmt(r.get(c, "")) for c in columns) + " |")
  lines += ["", footer]
  out.with_suffix(".md").write_text("\n".join(lines) + "\n")


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--workdir_root", required=True)
  ap.add_argument("--dataset", default="mnist")
  ap.add_argument("--defenses", default=",".join(RUNS),
                  help=f"comma list of {list(RUNS)}")
  ap.add_argument("--seeds", default="0")
  ap.add_argument("--paper", action="store_true", help="the :paper configs")
  ap.add_argument("--max_train", type=int)
  ap.add_argument("--max_test", type=int)
  ap.add_argument("--max_aux", type=int)
  ap.add_argument("--epochs", type=int)
  ap.add_argument("--attack_epochs", type=int)
  ap.add_argument("--attack_images", type=int)
  ap.add_argument("--eval_classifier_epochs", type=int)
  ap.add_argument("--data_dir")
  ap.add_argument("--override", action="append", default=[],
                  help="field=value, e.g. train.batch_size=32 (repeatable)")
  ap.add_argument("--out", default=None,
                  help="output path without suffix (default "
                       "results/baselines_<dataset>)")
  args = ap.parse_args()
  runs = [r.strip() for r in args.defenses.split(",") if r.strip()]
  unknown = [r for r in runs if r not in RUNS]
  if unknown:
    ap.error(f"unknown runs {unknown}; allowed: {list(RUNS)}")
  seeds = [int(s) for s in args.seeds.split(",")]
  out = Path(args.out or ROOT / "results" / f"baselines_{args.dataset}")
  overrides = common_overrides(args)
  rows, arows = [], []
  grids = Path(f"{out}_grids")
  for run in runs:
    stem, extra = RUNS[run]
    for seed in seeds:
      print(f"=== {run} seed {seed}", flush=True)
      try:
        c = load_config(args.dataset, stem, "paper" if args.paper else None)
        c.seed = seed
        for k, v in {**overrides, **extra}.items():
          if k.startswith("defense.gan_") and "gan_epochs" not in c.defense:
            continue
          set_field(c, k, v)
        workdir = Path(args.workdir_root) / run / f"seed{seed}"
        res = finished(c, workdir)
        if res is None:
          res = experiment.run(c, workdir)
        else:
          print(f"reusing {workdir / 'results.json'} (same config)")
        rows.append(row_of(run, seed, res))
        arows += attack_rows(run, seed, res)
        copy_grids(workdir, grids / (run if len(seeds) == 1
                                     else f"{run}_seed{seed}"))
      except Exception as e:  # pylint: disable=broad-except
        traceback.print_exc()
        rows.append({"run": run, "seed": seed,
                     "error": f"{type(e).__name__}: {e}"[:200]})
  header = table_header(f"Defenses on {args.dataset}", [
      f"seeds: {seeds}; common overrides: "
      f"`{json.dumps(overrides, default=str)}`"])
  write_table(rows, COLUMNS, out, header)
  attacks_out = Path(f"{out}_attacks")
  write_table(arows, ATTACK_COLUMNS, attacks_out, header)
  print(f"wrote {out}.md/.csv, {attacks_out}.md/.csv and {grids}/")


if __name__ == "__main__":
  main()
