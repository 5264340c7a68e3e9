"""Plug-&-Play attack on already trained targets; table and grids to results/.

  python scripts/run_plug_and_play.py --sweep_root=runs/verdict \
      --cells=mnist/no_defense/seed0,mnist/sca_lam0.5/seed0 \
      --generator=results/generator/mnist_generator

Each cell of a sweep (`python -m sca_jax.sweep`; its workdir
`<sweep_root>/<cell>` holds the trained target and the sweep's cell.json) has
its checkpoints copied to `<work_root>/<cell>` (default `<sweep_root>_pnp`,
beside the sweep, so `sweep collect` never takes these runs for cells of
the grid; the original workdir and its results.json stay untouched), and
`experiment.run` evaluates the restored target (`train.skip`) under the
cell's config with
`config.attacks = ("plug_and_play",)`. Writes `<out>.md/.csv` (attack
accuracy, FID, nearest-image PSNR/SSIM, each beside the random-sample floor)
and `<out>_grids/<cell>.png`; below the table, the same numbers over seeds
(mean +- std, 95% bootstrap interval, paired difference to No-Defense) as
`sweep report` writes them for the grid.

Each attacked copy's small files (results.json, config.json) are collected
into `<out>_cells/<cell>/`, to be committed beside the table: a copy
attacked earlier with the same attack settings, under `<work_root>` or
there, is tabulated as it is (the target is not restored and evaluated
again); one attacked with other settings is attacked again. `--table_only`
runs nothing and rebuilds the table from them, refusing a copy whose attack
ran with other settings.

Targets are not committed (~240 MB each), so a cell collected by
`sweep collect` (`--sweep_root=results/verdict/cells`) has no checkpoint.
`--train_missing` trains such a target again from its cell's config and
seed in the work copy, then attacks it; the table's `target_reproduced`
says whether its test accuracy equals the grid cell's (same config and seed
give the same target), and a target that differs is reported, not hidden.

Every cell named is checked before the first attack runs (its cell.json,
config, the overrides, the generator, a trained target or --train_missing):
a mistake in the last cell fails at once, in one line.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# pylint: disable=g-import-not-at-top,wrong-import-position
from sca_jax import experiment
from sca_jax import report
from sca_jax import results as results_lib
from sca_jax import sweep_cells
from sca_jax import validation
# pylint: enable=g-import-not-at-top,wrong-import-position

COLUMNS = ["run", "test_accuracy", "attack_accuracy", "attack_accuracy_floor",
           "fid", "fid_floor", "psnr", "psnr_floor", "ssim", "ssim_floor",
           "confidence_initial", "confidence_optimized", "num_images",
           "time_s", "target_reproduced"]
FOOTER = ("Per attack image: attack_accuracy by the independent evaluation "
          "classifier, FID between the class's training images and the "
          "attack's (evaluation-classifier features), PSNR/SSIM against the "
          "nearest training image of the class. `*_floor`: as many random "
          "generator samples, unoptimised. confidence: the target's mean "
          "softmax for the attacked class before and after optimisation.")


def _finished(workdir: Path, want: dict) -> dict:
  """The results.json of an attacked copy, if its Plug-&-Play attack ran
  with the config `want`; else an error naming what differs."""
  path = workdir / sweep_cells.RESULTS_FILE
  if not path.is_file():
    raise FileNotFoundError(f"{path}: not attacked yet (drop --table_only)")
  res = json.loads(path.read_text())
  done = res.get("attacks", {}).get("plug_and_play")
  if done is None:
    raise ValueError(f"{path}: no plug_and_play entry (drop --table_only)")
  differ = sorted(k for k, v in want.items() if not (
      _same_generator(done["config"].get(k), v) if k == "generator_path"
      else json.dumps(done["config"].get(k)) == json.dumps(v)))
  if differ:
    raise ValueError(f"{path}: attacked with other settings "
                     f"({', '.join(differ)}); drop --table_only to rerun")
  return res


def _same_generator(recorded: str | None, wanted: str) -> bool:
  """The same generator folder, or the committed generator of this
  repository (e.g. results/generator/mnist_generator) as recorded by a run
  in another checkout of it: the paths differ only above the checkout."""
  if recorded == wanted:
    return True
  try:
    rel = Path(wanted).relative_to(ROOT).parts
  except ValueError:
    return False
  return recorded is not None and Path(recorded).parts[-len(rel):] == rel


def _earlier(workdirs: list[Path], want: dict) -> dict | None:
  """The first of `workdirs` holding an attack with the settings `want`."""
  for workdir in workdirs:
    try:
      return _finished(workdir, want)
    except (FileNotFoundError, ValueError):
      continue
  return None


def _reproduced(trained: Path, res: dict) -> str:
  """Whether a retrained target's test accuracy equals its grid cell's.

  XLA:CPU rounds differently per instruction set and thread count, so a
  target trained on another processor kind (or core count) may differ;
  the answer names both then."""
  path = trained / sweep_cells.RESULTS_FILE
  if not path.is_file():
    return "no grid result to compare"
  grid = json.loads(path.read_text())
  if grid["test_accuracy"] == res["test_accuracy"]:
    return "yes"
  where = ""
  machines = [{k: r.get("machine", {}).get(k) for k in ("processor",
                                                        "usable_cpus")}
              for r in (grid, res)]
  if machines[0] != machines[1]:
    where = (f" (grid trained on {machines[0]['processor']}, "
             f"{machines[0]['usable_cpus']} cores; here "
             f"{machines[1]['processor']}, {machines[1]['usable_cpus']})")
  return f"NO: grid {grid['test_accuracy']}{where}"


def _plan(args: argparse.Namespace, generator: str, sweep_root: Path,
          work_root: Path, cells_dir: Path
          ) -> list[tuple[str, Any, dict | None]]:
  """(cell, attack config, earlier results or None) for every cell, checked
  before anything runs: a wrong cell name, override or missing target
  fails now, not after hours of attacking the cells before it."""
  plan = []
  for run in [r.strip() for r in args.cells.split(",") if r.strip()]:
    trained = sweep_root / run
    if not (trained / sweep_cells.CELL_FILE).is_file():
      raise FileNotFoundError(f"{trained}/{sweep_cells.CELL_FILE}: not a cell "
                              "of a sweep (python -m sca_jax.sweep)")
    cell = json.loads((trained / sweep_cells.CELL_FILE).read_text())
    c = sweep_cells.load_config(cell["config"],
                                tuple(cell["overrides"].items()))
    if args.data_dir:
      c.data.data_dir = args.data_dir
    c.attacks = ("plug_and_play",)
    if "umap" in c:
      c.umap = False  # the grid's cell drew them already
    c.attack.plug_and_play.generator_path = generator
    for item in args.override:
      k, _, v = item.partition("=")
      sweep_cells.set_field(c.attack.plug_and_play, k, v)
    validation.validate(c, warn=lambda _: None)  # the run prints warnings
    workdir, want = work_root / run, c.attack.plug_and_play.to_dict()
    if args.table_only:
      res = _earlier([workdir], want) or _finished(cells_dir / run, want)
    else:
      # Attacked earlier with these settings: no need to restore and
      # evaluate the target again.
      res = _earlier([workdir, cells_dir / run], want)
      if (res is None and not (trained / "checkpoints").is_dir()
          and not args.train_missing):
        raise FileNotFoundError(
            f"{trained}/checkpoints: no trained target; train it with "
            "python -m sca_jax.sweep, or pass --train_missing")
    plan.append((run, c, res))
  return plan


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--sweep_root", required=True)
  ap.add_argument("--cells", required=True,
                  help="comma list of cell names (directories below the root)")
  ap.add_argument("--dataset", default="mnist")
  ap.add_argument("--generator", required=True, help="generator folder")
  ap.add_argument("--work_root", default=None,
                  help="where the attacked copies go; default <sweep_root>_pnp")
  ap.add_argument("--data_dir")
  ap.add_argument("--override", action="append", default=[],
                  help="attack.plug_and_play field=value (repeatable)")
  ap.add_argument("--out", default=None, help="default "
                  "results/plug_and_play/<dataset>")
  ap.add_argument("--table_only", action="store_true",
                  help="run nothing: tabulate the attacked copies already "
                  "under --work_root or <out>_cells (their attack config "
                  "must match)")
  ap.add_argument("--train_missing", action="store_true",
                  help="train a cell's target again (its config and seed) "
                  "where the sweep root holds no checkpoint")
  args = ap.parse_args()
  out = Path(args.out or ROOT / "results" / "plug_and_play" / args.dataset)
  cells_dir = Path(f"{out}_cells")
  generator = str(Path(args.generator).expanduser().absolute())
  sweep_root = Path(args.sweep_root).absolute()
  work_root = Path(args.work_root or sweep_root.with_name(
      sweep_root.name + "_pnp"))
  try:
    plan = _plan(args, generator, sweep_root, work_root, cells_dir)
  except (FileNotFoundError, ValueError) as e:  # before any attack runs
    ap.error(str(e))
  rows = []
  for run, c, res in plan:
    trained, workdir = sweep_root / run, work_root / run
    if res is not None:
      print(f"=== {run}: attacked earlier with these settings", flush=True)
    else:
      retrain = not (trained / "checkpoints").is_dir()
      if not workdir.exists():
        workdir.mkdir(parents=True)
        if not retrain:
          shutil.copytree(trained / "checkpoints", workdir / "checkpoints")
          shutil.copy2(trained / "config.json", workdir / "config.json")
      c.train.skip = not retrain  # an interrupted retraining resumes
      print(f"=== {run}" + (" (training its target again)"
                             if not c.train.skip else ""), flush=True)
      res = experiment.run(c, workdir)
      if retrain:
        res["target_reproduced"] = _reproduced(trained, res)
        experiment.write_json(workdir / sweep_cells.RESULTS_FILE, res)
        print(f"=== {run}: target reproduced: {res['target_reproduced']}",
              flush=True)
    # The pictures go to <out>_grids; the records are what the table needs.
    # Only this run's: the work root may hold other tables' runs (another
    # data set's, sharing --work_root). No work copy at all when the cell
    # came from <out>_cells.
    if (workdir / sweep_cells.RESULTS_FILE).is_file():
      sweep_cells.collect(workdir, cells_dir / run,
                          (sweep_cells.RESULTS_FILE, "config.json"))
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
        "num_images": r["num_images"], "time_s": r["total_time_s"],
        "target_reproduced": res.get("target_reproduced", "not retrained")})
    # Only a work copy has it (<out>_cells keeps records, not pictures);
    # without one, the grid copied earlier stays.
    picture = workdir / "attacks" / "plug_and_play.png"
    if picture.is_file():
      grids = Path(f"{out}_grids")
      grids.mkdir(parents=True, exist_ok=True)
      shutil.copy2(picture, grids / f"{run.replace('/', '_')}.png")
  source = json.loads((Path(generator) / "config.json").read_text())["source"]
  header = report.header_lines(f"Plug-&-Play on {args.dataset}")
  header.insert(3, f"- generator: `{generator}`: {json.dumps(source)}")
  report.write_table(rows, COLUMNS, out, header, FOOTER)
  # Over seeds: mean +- std, bootstrap intervals and the paired difference
  # to No-Defense, as `sweep report` gives the grid (same reader, same code),
  # from the collected copies (the work copies may be gone).
  attacked = [r for r in results_lib.load_results(cells_dir)
              if r["cell"] in {row["run"] for row in rows}]
  summary = report.aggregate(attacked)
  with out.with_suffix(".md").open("a") as f:
    f.write("\n## Over seeds\n\n" + report.summary_markdown(summary) + "\n")
  print(f"wrote {out}.md/.csv, {out}_grids/ and {cells_dir}/")


if __name__ == "__main__":
  main()
