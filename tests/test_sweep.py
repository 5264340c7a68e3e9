"""sca_jax.sweep: a tiny grid runs through submitit's local executor, resumes
without rerunning finished cells, reports failing cells; the SLURM sbatch
script holds partition, time, GPUs and every cell's command."""

import csv
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TINY_OVERRIDES

from sca_jax import report
from sca_jax import sweep
from sca_jax import sweep_cells

REPO = Path(__file__).resolve().parents[1]



def _sweep_file(tmp_path: Path, data_dir: str, broken: bool = True) -> Path:
  """Two No-Defense targets (the second with a narrower head) x seeds 0, 1
  at the tiny size (a sweep runs any defense alike; SCA cells would only
  make this slower); with `broken`, one more cell that fails when it runs
  (its data folder is missing there: the sweep leaves paths to the run)."""
  path = tmp_path / f"tiny_sweep{'_broken' if broken else ''}.py"
  overrides = dict(TINY_OVERRIDES, **{"data.data_dir": data_dir})
  extra = ('{"target": [{"name": "broken", "defense": "no_defense", '
           '"data.data_dir": "/nonexistent"}], "seed": [0]}') if broken else ""
  path.write_text(f"""
CONFIG = "configs/experiment.py:defense={{defense}},dataset=mnist"
OVERRIDES = {overrides!r}
AXES = [{{
    "target": [
        {{"name": "no_defense", "defense": "no_defense"}},
        {{"name": "small", "defense": "no_defense", "defense.hidden": (16,)}},
    ],
    "seed": [0, 1],
}}, {extra}]
""".replace(", ]", "]"))
  return path


def _run_sweep(argv: list[str]) -> tuple[int, str]:
  """The command line in a subprocess, as a researcher runs it."""
  proc = subprocess.run([sys.executable, "-m", "sca_jax.sweep", *argv],
                        cwd=REPO, capture_output=True, text=True,
                        env=dict(os.environ, PYTHONPATH=str(REPO)))
  return proc.returncode, proc.stdout + proc.stderr


def test_cells_flag_lists_and_rejects_before_running(tmp_path, data_dir,
                                                     capsys):
  sweep_file = _sweep_file(tmp_path, data_dir, False)
  root = tmp_path / "root"
  assert sweep.main([f"--sweep={sweep_file}", f"--root={root}", "--dry_run",
                     "--cells=small/seed1,no_defense/*"]) == 0
  listed = [line.split()[1] for line in capsys.readouterr().out.splitlines()
            if line.startswith("todo")]
  assert listed == ["small/seed1", "no_defense/seed0", "no_defense/seed1"]
  assert sweep.main([f"--sweep={sweep_file}", f"--root={root}",
                     "--cells=big/*"]) == 2
  assert "'big/*' matches no cell" in capsys.readouterr().err
  assert not root.exists()  # nothing ran, nothing was written


@pytest.mark.parametrize("user_setting", [None, "glibc.malloc.tcache_count=0"])
def test_cells_get_mallocs_huge_pages_unless_the_user_set_tunables(
    tmp_path, monkeypatch, user_setting):
  if user_setting is None:
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
  else:
    monkeypatch.setenv("GLIBC_TUNABLES", user_setting)
  expected = user_setting or sweep.machine.malloc_env({}).get(
      "GLIBC_TUNABLES", "")
  out = sweep.run_cell(
      ["-c", "import os; print('seen', repr(os.environ.get("
       "'GLIBC_TUNABLES', '')))"], str(tmp_path), str(REPO))
  assert out["returncode"] == 0
  log = (tmp_path / sweep_cells.LOG_FILE).read_text()
  assert f"seen {expected!r}" in log


def test_tiny_grid_runs_resumes_and_reports_failures(tmp_path, data_dir):
  root = tmp_path / "root"
  argv = [f"--root={root}", "--executor=local", "--workers=2"]
  rc, out = _run_sweep([f"--sweep={_sweep_file(tmp_path, data_dir, False)}",
                        *argv])
  assert rc == 0, out
  assert "failed 0 / left 0 of 4" in out
  good = [f"{t}/seed{s}" for t in ("no_defense", "small") for s in (0, 1)]
  for name in good:
    assert (root / name / "results.json").is_file(), out

  # Interrupt one cell after its last checkpoint: its results.json is gone.
  # The same grid plus a cell that fails: the failure stops nothing.
  (root / "small/seed1/results.json").unlink()
  before = {n: (root / n / "log.txt").read_text() for n in good}
  mtimes = {n: (root / n / "results.json").stat().st_mtime_ns
            for n in good if n != "small/seed1"}
  rc, out = _run_sweep([f"--sweep={_sweep_file(tmp_path, data_dir)}", *argv])
  assert rc == 1, out
  assert "5 cells, 3 finished earlier, 2 to run" in out
  assert "--- FAILED broken/seed0" in out
  assert "config.data.data_dir='/nonexistent': must be an existing" in out  # the log's tail
  assert "done 1 (+3 earlier) / running 0 / failed 1 / left 0 of 5" in out
  for n, t in mtimes.items():  # finished cells were not rerun
    assert (root / n / "results.json").stat().st_mtime_ns == t
    assert (root / n / "log.txt").read_text() == before[n]
  resumed = json.loads((root / "small/seed1/results.json").read_text())
  assert resumed["train"]["steps_this_run"] == 0  # from its checkpoint
  assert resumed["train"]["resumed_from_step"] == resumed["train"]["num_steps"]
  assert resumed["config"]["defense"]["hidden"] == [16]  # the axis override

  # The report aggregates the two seeds of each target.
  report.write_report(root, tmp_path / "report")
  with open(tmp_path / "report" / "summary.csv", newline="") as f:
    acc = [r for r in csv.DictReader(f) if (r["target"], r["threat_model"],
                                            r["metric"]) == (
                                                "small", "target",
                                                "test_accuracy")]
  assert len(acc) == 1 and acc[0]["n"] == "2"


def test_dry_run_lists_cells_and_their_commands(tmp_path, capsys):
  sweep_file = _sweep_file(tmp_path, "/data")
  assert sweep.main([f"--sweep={sweep_file}", f"--root={tmp_path}",
                     "--dry_run"]) == 0
  out = capsys.readouterr().out
  assert "todo        small/seed1" in out and "5 cells" in out
  assert "--config.defense.hidden=(16,)" in out
  assert "--config.seed=1" in out
  assert "--config.data.data_dir=/nonexistent" in out


def test_cells_holding_another_configs_results_are_refused_untouched(
    tmp_path, capsys):
  # E.g. the sweep file changed after a cell ran: its results.json is kept
  # as it is, and nothing runs until the user moves it aside.
  sweep_file = _sweep_file(tmp_path, "/data")
  stale = tmp_path / "small" / "seed1"
  stale.mkdir(parents=True)
  (stale / "results.json").write_text(json.dumps({"config": {"seed": 7}}))
  (stale / "status.json").write_text(json.dumps({"state": "done"}))
  before = sorted((p.name, p.read_bytes()) for p in stale.iterdir())
  argv = [f"--sweep={sweep_file}", f"--root={tmp_path}"]
  assert sweep.main(argv + ["--dry_run"]) == 0
  assert "stale       small/seed1" in capsys.readouterr().out
  assert sweep.main(argv) == 2
  err = capsys.readouterr().err
  assert "small/seed1" in err and "nothing was run or changed" in err
  assert sorted((p.name, p.read_bytes()) for p in stale.iterdir()) == before
  assert not (tmp_path / "no_defense").exists()  # no other cell started


def test_a_config_its_run_would_refuse_stops_the_sweep_before_any_cell(
    tmp_path, capsys):
  # One bad override in a grid of hours: refused at once, every bad cell
  # named with its field, nothing started or written.
  sweep_file = tmp_path / "bad.py"
  sweep_file.write_text("""
CONFIG = "configs/experiment.py:defense={defense},dataset=mnist"
OVERRIDES = {"train.epochs": 1}
AXES = {"target": [{"name": "ok", "defense": "no_defense"},
                   {"name": "zero", "defense": "no_defense", "train.epochs": 0},
                   {"name": "neg", "defense": "sca", "defense.lam": -0.5},
                   {"name": "typo", "defense": "no_defence"}],
        "seed": [0]}
""")
  cells = sweep_cells.expand(sweep_cells.load_sweep(sweep_file))
  assert sweep_cells.config_error(cells[0]) is None
  assert sweep.main([f"--sweep={sweep_file}", f"--root={tmp_path / 'r'}"]) == 2
  err = capsys.readouterr().err
  assert "3 cell(s) have a config their run would refuse" in err
  assert "zero/seed0: config.train.epochs=0: must be an int >= 1" in err
  assert "neg/seed0: config.defense.lam=-0.5: must be" in err
  assert "typo/seed0: unknown defense 'no_defence'" in err
  assert "ok/seed0" not in err and not (tmp_path / "r").exists()


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch) -> Path:
  """`sbatch` on PATH recording the script it is given (and `srun`, which
  submitit looks for); returns the recorded script's path."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  record = tmp_path / "sbatch_script.sh"
  for name, body in (("sbatch", f'cp "$1" {record}\n'
                      "echo 'Submitted batch job 4242'\n"),
                     ("srun", "exit 1\n")):
    (bin_dir / name).write_text("#!/bin/sh\n" + body)
    (bin_dir / name).chmod((bin_dir / name).stat().st_mode | stat.S_IEXEC)
  monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
  return record


def test_slurm_script_has_partition_time_gpus_and_every_command(
    tmp_path, fake_slurm):
  sweep_file = _sweep_file(tmp_path, "/data")
  root = tmp_path / "root"
  assert sweep.main([
      f"--sweep={sweep_file}", f"--root={root}", "--executor=slurm",
      "--slurm.partition=gpu_h100", "--slurm.gpus_per_node=2",
      "--slurm.cpus_per_task=8", "--timeout_min=240", "--no_wait",
      "--slurm.setup=module load cuda"]) == 0
  script = fake_slurm.read_text()
  for line in ("#SBATCH --partition=gpu_h100", "#SBATCH --time=240",
               "#SBATCH --gpus-per-node=2", "#SBATCH --cpus-per-task=8",
               "#SBATCH --array=0-4%5", "\nmodule load cuda\n"):
    assert line in script, script
  cells = sweep_cells.expand(sweep_cells.load_sweep(sweep_file))
  for c in cells:
    assert c.command(root) in script
    assert json.loads((root / c.name / "cell.json").read_text())[
        "command"] == c.command(root)


def test_bad_slurm_parameter_and_arguments_are_clear(tmp_path, fake_slurm):
  del fake_slurm
  with pytest.raises(ValueError, match="--slurm.*partitoin"):
    sweep.make_executor("slurm", tmp_path, {"partitoin": "gpu"}, 10)
  with pytest.raises(SystemExit):
    sweep.parse_args(["--root=x", "--bogus=1"])
  with pytest.raises(SystemExit):
    sweep.parse_args(["report", "--root=x"])  # needs --out


def test_progress_line_counts_and_eta():
  p = sweep.Progress(total=10, skipped=2, workers=2)
  p.done, p.failed, p.running = 3, 1, 2
  p.durations = [60.0, 120.0]  # mean 90 s; 2 left + 2 running / 2 on 2
  line = p.line()
  assert "done 3 (+2 earlier) / running 2 / failed 1 / left 2 of 10" in line
  assert "ETA 2m15s (at " in line
  p.durations = [3600.0 * 30]  # longer than a day: no wrap-around
  assert "ETA 45h00m (at " in p.line()  # 30 h x 3 cells / 2 workers


def test_report_and_collect_name_a_root_without_results(tmp_path, capsys):
  for command in ("report", "collect"):
    argv = [command, f"--out={tmp_path / 'out'}"]
    assert sweep.main(argv + [f"--root={tmp_path / 'none'}"]) == 2
    assert "none: no such directory" in capsys.readouterr().err
    assert sweep.main(argv + [f"--root={tmp_path}"]) == 2
    assert "no finished cell (results.json)" in capsys.readouterr().err
  assert not (tmp_path / "out").exists()
