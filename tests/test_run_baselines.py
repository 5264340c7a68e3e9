"""scripts/run_baselines.py: runs by name, reuse of finished runs, tables."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import run_baselines  # noqa: E402  pylint: disable=wrong-import-position


def _scores(mean):
  return {"mean": mean}


def _attack(leak, acc, psnr, queries=1):
  floor = dict(psnr=_scores(11.0), ssim=_scores(0.1), fid=900.0,
               attack_accuracy=_scores(0.1))
  return dict(leak={"name": leak}, attack_accuracy=_scores(acc),
              psnr=_scores(psnr), ssim=_scores(0.5), fid=10.0, floor=floor,
              config={"queries": queries})


@pytest.mark.parametrize("run", sorted(run_baselines.RUNS))
def test_every_run_names_a_config_file_that_loads(run):
  stem, extra = run_baselines.RUNS[run]
  c = run_baselines.load_config("mnist", stem, None)
  for field, value in extra.items():
    run_baselines.set_field(c, field, value)
  assert c.defense.name == stem


def test_rows_finished_runs_and_tables(tmp_path):
  c = run_baselines.load_config("mnist", "laplace_noise", None)
  results = dict(test_accuracy=0.97, config=json.loads(json.dumps(
      c.to_dict())), attacks={
          "split": _attack("first", 0.98, 23.0),
          "split_averaged": _attack("first", 0.99, 24.0, queries=16)})
  rows = run_baselines.attack_rows("laplace_noise", 0, results)
  assert [(r["attack"], r["queries"], r["attack_accuracy"], r["psnr"])
          for r in rows] == [("split", 1, 0.98, 23.0),
                             ("split_averaged", 16, 0.99, 24.0)]
  row = run_baselines.row_of("laplace_noise", 0, results)
  assert row["split_psnr"] == 23.0 and "end_to_end_psnr" not in row

  assert run_baselines.finished(c, tmp_path) is None  # nothing there
  (tmp_path / "results.json").write_text(json.dumps(results))
  assert run_baselines.finished(c, tmp_path) == results
  c.defense.laplace_scale = 1.0  # another experiment: run it, do not reuse
  assert run_baselines.finished(c, tmp_path) is None

  out = tmp_path / "table"
  run_baselines.write_table(rows, run_baselines.ATTACK_COLUMNS, out,
                            ["# title"])
  md = out.with_suffix(".md").read_text().splitlines()
  assert md[0] == "# title"
  assert any(line.startswith("| laplace_noise | 0 | split_averaged | first "
                             "| 16 | 0.99 |") for line in md)
  assert len(out.with_suffix(".csv").read_text().splitlines()) == 3
