"""scripts/run_plug_and_play.py on a tiny trained sweep cell: the attacked
copy goes beside the sweep (its cell stays as it was), and the table, the
over-seeds summary with the generator-sample floor and the picture land
under --out, the copy's records under <out>_cells; a second run reuses the
attacked copy, and `--table_only` rebuilds them without running anything,
also once the work copies are gone. A collected cell (no checkpoint) is
trained again with --train_missing, to the same target."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import TINY_OVERRIDES, random_generator

from sca_jax import experiment
from sca_jax import sweep_cells
from sca_jax.convert import stylegan

REPO = Path(__file__).resolve().parents[1]
CELL = "mnist/no_defense/seed0"
PPA = {"search_space": 16, "candidates_per_class": 2, "keep_per_class": 2,
       "steps": 2, "final_views": 2, "batch_size": 10, "grid_per_group": 2,
       "flip": False}


def test_attacks_a_trained_cell_and_tabulates_over_seeds(tmp_path, data_dir):
  sweep_root = tmp_path / "verdict"
  trained = sweep_root / CELL
  spec = f"{REPO / 'configs' / 'experiment.py'}:defense=no_defense,dataset=mnist"
  overrides = dict(TINY_OVERRIDES, **{"eval_classifier.epochs": 1, "seed": 0,
                                       "data.data_dir": data_dir})
  experiment.run(sweep_cells.load_config(spec, tuple(overrides.items())),
                 trained)
  (trained / sweep_cells.CELL_FILE).write_text(json.dumps({
      "name": CELL, "config": spec, "overrides": overrides, "labels": {
          "dataset": "mnist", "target": "no_defense", "seed": "seed0"}}))
  before = sorted(p.name for p in trained.iterdir())
  generator = stylegan.save_generator(random_generator(), tmp_path / "gen")
  out = tmp_path / "results" / "mnist"

  def script(*extra, root=sweep_root, **ppa):
    return subprocess.run(
        [sys.executable, "scripts/run_plug_and_play.py",
         f"--sweep_root={root}", f"--cells={CELL}",
         f"--generator={generator}", f"--out={out}",
         *[f"--override={k}={v}" for k, v in dict(PPA, **ppa).items()],
         *extra],
        cwd=REPO, capture_output=True, text=True,
        env=dict(os.environ, PYTHONPATH=str(REPO)))

  # Another table's run in the same work root (another data set's cells
  # share --work_root): its records stay out of this table's <out>_cells.
  other = tmp_path / "verdict_pnp" / "fashion_mnist" / "no_defense" / "seed0"
  other.mkdir(parents=True)
  (other / "results.json").write_text("{}")
  proc = script()
  assert proc.returncode == 0, proc.stdout + proc.stderr
  assert [p.parent for p in Path(f"{out}_cells").rglob("results.json")] == [
      Path(f"{out}_cells") / CELL]

  attacked = tmp_path / "verdict_pnp" / CELL
  res = json.loads((attacked / "results.json").read_text())
  ppa = res["attacks"]["plug_and_play"]
  assert ppa["config"]["steps"] == 2 and ppa["num_images"] == 20
  assert sorted(p.name for p in trained.iterdir()) == before  # untouched
  md = out.with_suffix(".md").read_text()
  assert f"| {CELL} | " in md
  assert f"{ppa['attack_accuracy']['mean']:.4g}" in md
  summary = md.split("## Over seeds")[1]
  assert "### mnist: plug_and_play" in summary
  assert "| random_generator_samples |" in summary  # not "mean_image"
  assert (out.parent / "mnist_grids" / "mnist_no_defense_seed0.png").is_file()

  # Run again (e.g. with a cell added): the attacked copy is reused, nothing
  # is restored or evaluated; --table_only the same. A different setting is
  # refused by name there instead of tabulating the old attack.
  table = out.with_suffix(".csv").read_text()
  for extra in ((), ("--table_only",)):
    out.with_suffix(".csv").unlink()
    proc = script(*extra)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "test accuracy" not in proc.stdout  # the target was not evaluated
    assert out.with_suffix(".csv").read_text() == table
  proc = script("--table_only", steps=3)
  assert proc.returncode != 0 and "other settings (steps)" in proc.stderr

  # The records are collected beside the table, so it survives the work
  # copies (which hold the ~MB checkpoints and are not committed).
  cells = Path(f"{out}_cells") / CELL
  assert sorted(p.name for p in cells.iterdir()) == ["config.json",
                                                     "results.json"]
  shutil.rmtree(tmp_path / "verdict_pnp")
  out.with_suffix(".csv").unlink()
  proc = script("--table_only")
  assert proc.returncode == 0, proc.stdout + proc.stderr
  assert out.with_suffix(".csv").read_text() == table
  assert "| random_generator_samples |" in out.with_suffix(".md").read_text()
  # A run (e.g. with a new cell added) on a machine without the work copies
  # takes the committed records as they are.
  out.with_suffix(".csv").unlink()
  proc = script()
  assert proc.returncode == 0, proc.stdout + proc.stderr
  assert "attacked earlier with these settings" in proc.stdout
  assert not (tmp_path / "verdict_pnp").exists()
  assert out.with_suffix(".csv").read_text() == table

  # A collected grid cell has no checkpoint: refused by name, then trained
  # again from its config and seed, to the same test accuracy.
  collected = tmp_path / "collected"
  sweep_cells.collect(sweep_root, collected)
  shutil.rmtree(Path(f"{out}_cells"))
  proc = script(root=collected)
  assert proc.returncode != 0 and "--train_missing" in proc.stderr
  proc = script("--train_missing", root=collected)
  assert proc.returncode == 0, proc.stdout + proc.stderr
  assert "training its target again" in proc.stdout
  retrained = json.loads((cells / "results.json").read_text())
  assert retrained["target_reproduced"] == "yes"
  assert retrained["test_accuracy"] == res["test_accuracy"]
  assert retrained["attacks"]["plug_and_play"]["attack_accuracy"] == (
      ppa["attack_accuracy"])
  assert ",yes\n" in out.with_suffix(".csv").read_text()


def _script():
  spec = importlib.util.spec_from_file_location(
      "run_plug_and_play", REPO / "scripts" / "run_plug_and_play.py")
  script = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(script)
  return script


def test_the_committed_generator_is_the_same_in_another_checkout():
  # A run recorded in another clone of the repository attacked with the
  # same committed generator; any other folder is another generator.
  script = _script()
  here = str(REPO / "results" / "generator" / "mnist_generator")
  assert script._same_generator(here, here)
  assert script._same_generator(
      "/elsewhere/clone/results/generator/mnist_generator", here)
  assert not script._same_generator(
      "/elsewhere/clone/results/generator/fashion_mnist_generator", here)
  assert not script._same_generator("/work/gen_export/mnist_1500", here)
  assert not script._same_generator(None, here)
  outside = "/tmp/my_generator"  # not in the repository: the path must match
  assert script._same_generator(outside, outside)
  assert not script._same_generator("/other/tmp/my_generator", outside)


def test_reproduced_names_the_machines_when_targets_differ(tmp_path):
  script = _script()
  intel = {"processor": "Intel(R) Xeon(R) Processor", "usable_cpus": 2}
  amd = {"processor": "AMD EPYC", "usable_cpus": 2}
  assert script._reproduced(tmp_path, {"test_accuracy": 0.9}) == (
      "no grid result to compare")
  (tmp_path / "results.json").write_text(json.dumps(
      {"test_accuracy": 0.974, "machine": intel}))
  assert script._reproduced(tmp_path, {"test_accuracy": 0.974,
                                       "machine": amd}) == "yes"
  assert script._reproduced(tmp_path, {"test_accuracy": 0.9728,
                                       "machine": intel}) == "NO: grid 0.974"
  assert script._reproduced(tmp_path, {"test_accuracy": 0.9728,
                                       "machine": amd}) == (
      "NO: grid 0.974 (grid trained on Intel(R) Xeon(R) Processor, 2 cores; "
      "here AMD EPYC, 2)")


def test_every_cell_is_checked_before_any_attack_runs(tmp_path):
  # A wrong name, override or generator anywhere in --cells fails at once,
  # one line, not after the cells before it were attacked (hours each).
  spec = f"{REPO / 'configs' / 'experiment.py'}:defense=no_defense,dataset=mnist"
  good = tmp_path / "verdict" / CELL
  good.mkdir(parents=True)
  (good / sweep_cells.CELL_FILE).write_text(json.dumps(
      {"name": CELL, "config": spec, "overrides": dict(TINY_OVERRIDES)}))
  generator = stylegan.save_generator(random_generator(), tmp_path / "gen")

  def script(cells, *extra):
    return subprocess.run(
        [sys.executable, "scripts/run_plug_and_play.py",
         f"--sweep_root={tmp_path / 'verdict'}", f"--cells={cells}",
         f"--out={tmp_path / 'out'}", "--train_missing", *extra],
        cwd=REPO, capture_output=True, text=True,
        env=dict(os.environ, PYTHONPATH=str(REPO)))

  for cells, extra, says in [
      (f"{CELL},mnist/nope/seed0", [f"--generator={generator}"],
       "mnist/nope/seed0/cell.json: not a cell of a sweep"),
      (CELL, [f"--generator={generator}", "--override=stepz=3"],
       "config field 'stepz' does not exist"),
      (CELL, [f"--generator={generator}", "--override=steps=-1"],
       "config.attack.plug_and_play.steps=-1: must be >= 0"),
      (CELL, [f"--generator={tmp_path / 'none'}"],
       "generator_path = "),
  ]:
    proc = script(cells, *extra)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert says in proc.stderr.splitlines()[-1] and "Traceback" not in (
        proc.stderr)
    assert not proc.stdout and not (tmp_path / "verdict_pnp").exists()
