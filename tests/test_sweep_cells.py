"""sca_jax.sweep_cells: axes expand to named cells with the right command;
finished means results.json of exactly the cell's config."""

import json
import os
import subprocess
from pathlib import Path

import pytest

from sca_jax import config_lib, sweep_cells

REPO = Path(__file__).resolve().parents[1]


def _write(tmp_path, text):
  path = tmp_path / "s.py"
  path.write_text(text)
  return path


def test_axes_expand_to_stable_names_template_and_overrides(tmp_path):
  sweep = sweep_cells.load_sweep(_write(tmp_path, """
CONFIG = "configs/{dataset}_{defense}.py"
OVERRIDES = {"train.epochs": 1}
AXES = {"dataset": ["mnist"],
        "target": [{"name": "nd", "defense": "no_defense"},
                   {"defense": "sca", "defense.lam": 0.1}],
        "seed": [0, 1]}
"""))
  cells = sweep_cells.expand(sweep)
  assert [c.name for c in cells] == [
      "mnist/nd/seed0", "mnist/nd/seed1",
      "mnist/sca_lam0.1/seed0", "mnist/sca_lam0.1/seed1"]
  c = cells[3]
  assert c.config == "configs/mnist_sca.py"
  assert dict(c.overrides) == {"train.epochs": 1, "defense.lam": 0.1,
                               "seed": 1}
  assert c.argv("/r") == [
      "-m", "sca_jax.main", "--config=configs/mnist_sca.py",
      "--workdir=/r/mnist/sca_lam0.1/seed1", "--config.train.epochs=1",
      "--config.defense.lam=0.1", "--config.seed=1"]


def test_select_keeps_the_cells_named_in_the_order_of_the_patterns(
    tmp_path):
  cells = sweep_cells.expand(sweep_cells.load_sweep(_write(tmp_path, """
CONFIG = "configs/experiment.py:defense={defense}"
AXES = {"defense": ["no_defense", "sca"], "seed": [0, 1, 2]}
""")))
  assert sweep_cells.select(cells, None) == cells
  assert sweep_cells.select(cells, "") == cells
  picked = sweep_cells.select(cells, "sca/seed1, no_defense/*,sca/seed1")
  assert [c.name for c in picked] == [
      "sca/seed1", "no_defense/seed0", "no_defense/seed1",
      "no_defense/seed2"]  # pattern order, each cell once
  with pytest.raises(ValueError, match=r"--cells: 'sca/seed3' matches no "
                     r"cell of this sweep \(6 cells: no_defense/seed0"):
    sweep_cells.select(cells, "no_defense/*,sca/seed3")


@pytest.mark.parametrize("text, match", [
    ("AXES = {'seed': [0]}", "CONFIG must be"),
    ("CONFIG = 'c.py'\nAXES = {'seed': []}", "AXES must map"),
    ("CONFIG = 'configs/{dataset}.py'\nAXES = {'seed': [0]}",
     r"needs \['dataset'\]"),
    ("CONFIG = 'c.py'\nAXES = {'t': [{'name': 'a'}, {'name': 'a'}]}",
     "two cells are named 'a'"),
])
def test_malformed_sweeps_are_named(tmp_path, text, match):
  with pytest.raises(ValueError, match=match):
    sweep_cells.expand(sweep_cells.load_sweep(_write(tmp_path, text)))


def test_finished_only_for_results_of_the_same_config(tmp_path, monkeypatch):
  monkeypatch.chdir(REPO)
  cell = sweep_cells.Cell("sca/seed1", "configs/mnist_sca.py",
                          (("seed", 1), ("defense.lam", "0.25")),
                          (("target", "sca"), ("seed", "seed1")))
  assert not sweep_cells.is_finished(cell, tmp_path)  # nothing there
  config = sweep_cells.load_config(cell.config, cell.overrides)
  assert config.seed == 1 and config.defense.lam == 0.25
  cell.workdir(tmp_path).mkdir(parents=True)
  results = cell.workdir(tmp_path) / "results.json"
  results.write_text(json.dumps({"config": config.to_dict()}))
  assert sweep_cells.is_finished(cell, tmp_path)
  # A field the code gained after the run: at its base default the results
  # still count, at any other value they are another experiment's.
  saved = config.to_dict()
  del saved["data"]["image_size"]
  results.write_text(json.dumps({"config": saved}))
  assert sweep_cells.is_finished(cell, tmp_path)
  del saved["defense"]["lam"]
  results.write_text(json.dumps({"config": saved}))
  assert not sweep_cells.is_finished(cell, tmp_path)
  # Settings of an attack the cell does not run cannot change its results;
  # those of an attack it runs can.
  saved = config.to_dict()
  assert "split_averaged" not in saved["attacks"]
  saved["attack"]["split_averaged"]["epochs"] += 1
  results.write_text(json.dumps({"config": saved}))
  assert sweep_cells.is_finished(cell, tmp_path)
  saved["attack"][saved["attacks"][0]]["epochs"] += 1
  results.write_text(json.dumps({"config": saved}))
  assert not sweep_cells.is_finished(cell, tmp_path)
  config.defense.lam = 0.5  # results of another experiment: rerun
  results.write_text(json.dumps({"config": config.to_dict()}))
  assert not sweep_cells.is_finished(cell, tmp_path)
  with pytest.raises(ValueError, match="'train.no_such_field' does not exist"):
    sweep_cells.load_config(cell.config, (("train.no_such_field", 1),))


@pytest.mark.parametrize("defense,counts", [("no_defense", True),
                                              ("sca", False)])
def test_fields_the_defense_never_reads_do_not_count(tmp_path, monkeypatch,
                                                     defense, counts):
  # A protocol that changes the sparse layers' iterations leaves finished
  # No-Defense cells finished, and sends SCA cells back to run.
  monkeypatch.chdir(REPO)
  cell = sweep_cells.Cell(
      f"{defense}/seed0",
      f"configs/experiment.py:defense={defense},dataset=mnist", (),
      (("target", defense),))
  config = sweep_cells.load_config(cell.config, cell.overrides)
  config.defense.layer_num_iters = (50, 15)  # what the run had
  config.defense.num_iters = 7
  cell.workdir(tmp_path).mkdir(parents=True)
  (cell.workdir(tmp_path) / "results.json").write_text(
      json.dumps({"config": config.to_dict()}))
  assert sweep_cells.is_finished(cell, tmp_path) is counts


def test_state_tells_running_from_interrupted(tmp_path):
  cell = sweep_cells.Cell("a", "configs/mnist_sca.py", (), (("t", "a"),))
  assert sweep_cells.state(cell, tmp_path) == "todo"
  cell.workdir(tmp_path).mkdir()
  status = cell.workdir(tmp_path) / "status.json"
  host = os.uname().nodename
  status.write_text(json.dumps({"state": "running", "host": host,
                                "pid": os.getpid()}))
  assert sweep_cells.state(cell, tmp_path) == "running"
  dead = subprocess.Popen(["true"])
  dead.wait()
  status.write_text(json.dumps({"state": "running", "host": host,
                                "pid": dead.pid}))
  assert sweep_cells.state(cell, tmp_path) == "interrupted"
  status.write_text(json.dumps({"state": "failed", "returncode": 1}))
  assert sweep_cells.state(cell, tmp_path) == "failed"


def test_collect_copies_small_files_of_finished_runs_only(tmp_path):
  root, out = tmp_path / "runs", tmp_path / "out"
  done = root / "mnist" / "sca" / "seed0"
  (done / "attacks").mkdir(parents=True)
  (done / "checkpoints").mkdir()
  (done / "results.json").write_text("{}")
  (done / "config.json").write_text("{}")
  (done / "umap_first.png").write_bytes(b"png")
  (done / "attacks" / "split.png").write_bytes(b"png")
  (done / "checkpoints" / "big").write_bytes(b"x" * 100)
  (root / "mnist" / "sca" / "seed1").mkdir()
  (root / "mnist" / "sca" / "seed1" / "config.json").write_text("{}")
  copied = sweep_cells.collect(root, out)
  assert sorted(p.relative_to(out).as_posix() for p in copied) == [
      "mnist/sca/seed0/attacks/split.png", "mnist/sca/seed0/config.json",
      "mnist/sca/seed0/results.json", "mnist/sca/seed0/umap_first.png"]
  assert sweep_cells.collect(root, out) == []  # nothing changed
  (done / "results.json").write_text('{"a": 1}')
  assert sweep_cells.collect(root, out) == [
      out / "mnist/sca/seed0/results.json"]
  with pytest.raises(ValueError, match="no such directory"):
    sweep_cells.collect(tmp_path / "absent", out)


def test_committed_sweeps_load_and_baselines_share_the_verdicts_no_defense(
    tmp_path, monkeypatch):
  # sweeps/baselines.py is run in the verdict's root so that its No-Defense
  # cells are found finished there: same name, same built config.
  monkeypatch.chdir(REPO)
  sweeps = {p.stem: sweep_cells.expand(sweep_cells.load_sweep(p))
            for p in sorted((REPO / "sweeps").glob("*.py"))}
  assert set(sweeps) >= {"verdict", "baselines", "dp_epsilon", "datasets"}
  assert all(sweeps.values())
  verdict = {c.name: c for c in sweeps["verdict"]}
  shared = [c for c in sweeps["baselines"] if "/no_defense/" in c.name]
  assert [c.name for c in shared] == [
      f"mnist/no_defense/seed{s}" for s in range(3)] + [
          "fashion_mnist/no_defense/seed0"]
  for c in shared:
    v = verdict[c.name]
    config = sweep_cells.load_config(v.config, v.overrides)
    v.workdir(tmp_path).mkdir(parents=True)
    (v.workdir(tmp_path) / "results.json").write_text(
        json.dumps({"config": config.to_dict()}))
    assert sweep_cells.is_finished(c, tmp_path), c.name


@pytest.mark.parametrize("sweep", ["verdict", "baselines"])
def test_replays_on_the_headline_pair_and_nothing_else_dropped(monkeypatch,
                                                               sweep):
  # Issue 12 item 3: the authors' replayed loop on No-Defense and SCA 0.5,
  # both data sets, every seed. The other cells (lambda, Sparse-Standard,
  # the eight baselines) leave out only the two replays: every threat model
  # and adaptive attack the faithful config gives that defense still runs.
  monkeypatch.chdir(REPO)
  replays = {"end_to_end_replay", "split_replay"}
  cells = sweep_cells.expand(
      sweep_cells.load_sweep(REPO / "sweeps" / f"{sweep}.py"))
  for c in cells:
    attacks = set(sweep_cells.load_config(c.config, c.overrides).attacks)
    full = set(sweep_cells.load_config(c.config, tuple(
        (k, v) for k, v in c.overrides if k != "attacks")).attacks)
    headline = "/no_defense/" in c.name or "/sca_lam0.5/" in c.name
    assert attacks == (full if headline else full - replays), c.name
    assert replays <= full


def test_verdict_lambda_01_solves_its_image_layer_longer(monkeypatch):
  # At 50 iterations lambda 0.1's image layer was 5.45% from its optimum
  # (docs/verdict.md, departure 1); only those cells get 100.
  monkeypatch.chdir(REPO)
  cells = sweep_cells.expand(
      sweep_cells.load_sweep(REPO / "sweeps" / "verdict.py"))
  iters = {c.name: tuple(sweep_cells.load_config(
      c.config, c.overrides).defense.layer_num_iters) for c in cells}
  for name, n in iters.items():
    want = ((100, 40) if "/sca_lam0.1/" in name
            else config_lib.FAITHFUL_LAYER_ITERS)
    assert n == want, name
  assert sum("/sca_lam0.1/" in name for name in iters) == 6


def test_committed_verdict_cells_still_count_as_finished(monkeypatch):
  # A protocol change that touches no setting these cells ran with must not
  # send the grid back to retrain them (session 19: a change to an attack
  # none of them runs made every committed cell look unfinished).
  monkeypatch.chdir(REPO)
  root = REPO / "results" / "verdict" / "cells"
  cells = sweep_cells.expand(sweep_cells.load_sweep("sweeps/verdict.py"))
  committed = [c for c in cells if (c.workdir(root) / "results.json").exists()]
  assert len(committed) >= 27
  assert [c.name for c in committed
          if not sweep_cells.is_finished(c, root)] == []
