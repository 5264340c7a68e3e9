"""sca_jax.report: mean, std, bootstrap intervals and paired differences on
made-up numbers checked by hand; tables, figures and the README section."""

import math
import warnings
from pathlib import Path

import pytest

from sca_jax import report
from sca_jax import report_figures
from sca_jax import results as results_lib
from sca_jax import verdict

REPO = Path(__file__).resolve().parents[1]


def _rows(target, defense, values, metric="psnr", threat="split", lam=None,
          eps=None):
  return [dict(cell=f"{target}/seed{s}", dataset="mnist", target=target,
               defense=defense, seed=s, lam=lam, dp_epsilon=eps,
               noise_multiplier=None, test_accuracy=None, threat_model=threat,
               metric=metric, value=v) for s, v in values.items()]


def test_aggregate_std_intervals_and_paired_differences_by_hand():
  rows = (_rows("no_defense", "no_defense", {0: 1.0, 1: 2.0, 2: 3.0})
          + _rows("sca", "sca", {0: 2.0, 1: 2.5, 2: 5.0, 3: 10.0}))
  by_target = {r["target"]: r for r in report.aggregate(rows)}
  nd, sca = by_target["no_defense"], by_target["sca"]
  assert (nd["n"], nd["mean"], nd["std"]) == (3, 2.0, 1.0)
  # Resampling 3 values: all-lowest has probability 1/27 = 3.7% > 2.5%, so
  # the 2.5th and 97.5th percentiles of the resampled means are min and max.
  assert (nd["ci_low"], nd["ci_high"]) == (1.0, 3.0)
  assert "diff_n" not in nd
  # sca: mean 4.875; squared deviations 8.265625 + 5.640625 + 0.015625 +
  # 26.265625 = 40.1875, / 3 -> std sqrt(13.395833) = 3.66003.
  assert sca["n"] == 4 and sca["mean"] == 4.875
  assert sca["std"] == pytest.approx(3.66003, abs=1e-5)
  # Resampling 4 values (256 equally likely draws): means <= 2.125 have
  # probability 5/256 = 1.95% and 2.25 brings it to 4.3%, so the 2.5th
  # percentile is 2.25; from the top, >= 8.75 has 1.95% and 8.125 brings it
  # to 3.5%, so the 97.5th is 8.125.
  assert (sca["ci_low"], sca["ci_high"]) == (2.25, 8.125)
  # Paired over seeds 0-2 only (seed 3 has no No-Defense run): 1, 0.5, 2.
  assert sca["diff_n"] == 3 and sca["diff_mean"] == pytest.approx(7 / 6)
  assert (sca["diff_ci_low"], sca["diff_ci_high"]) == (0.5, 2.0)


def test_bootstrap_ci_matches_the_normal_interval_for_many_seeds():
  values = [float(v) for v in range(40)]  # mean 19.5, sd of mean 1.8028
  lo, hi = report.bootstrap_ci(values)
  half = 1.96 * math.sqrt(sum((v - 19.5) ** 2 for v in values) / 40) / 40**.5
  assert lo == pytest.approx(19.5 - half, abs=0.25)
  assert hi == pytest.approx(19.5 + half, abs=0.25)
  assert report.bootstrap_ci(values) == (lo, hi)  # seeded
  assert all(math.isnan(x) for x in report.bootstrap_ci([1.0]))


def test_rewrite_section_replaces_only_between_markers(tmp_path):
  readme = tmp_path / "README.md"
  readme.write_text("intro\n<!-- sweep:v:begin -->\nold\n<!-- sweep:v:end -->"
                    "\noutro\n")
  report.rewrite_section(readme, "v", "new table")
  assert readme.read_text() == ("intro\n<!-- sweep:v:begin -->\nnew table\n"
                                "<!-- sweep:v:end -->\noutro\n")
  with pytest.raises(ValueError, match="sweep:other:begin"):
    report.rewrite_section(readme, "other", "x")


def test_write_report_tables_figures_and_readme(tmp_path, monkeypatch):
  rows = []
  for target, defense, lam, eps, shift in (
      ("no_defense", "no_defense", None, None, 0.0),
      ("sca_lam0.1", "sca", 0.1, None, -1.0),
      ("sca_lam0.5", "sca", 0.5, None, -2.0),
      ("dp_a", "dp_sgd", None, 1.0, -3.0),
      ("dp_b", "dp_sgd", None, 8.0, -0.5)):
    for metric, threat, base in (("psnr", "split", 20.0),
                                 ("test_accuracy", "target", 0.9)):
      rows += _rows(target, defense, {0: base + shift, 1: base + shift + .2},
                    metric, threat, lam, eps)
  # A threat model only a baseline has (as a noise defense's averaged
  # attack): the lambda figure leaves it out instead of an empty panel.
  rows += _rows("dp_a", "dp_sgd", {0: 19.0, 1: 19.5}, "psnr",
                "split_averaged", None, 1.0)
  monkeypatch.setattr(report.results_lib, "load_results", lambda root: rows)
  readme = tmp_path / "README.md"
  readme.write_text("<!-- sweep:demo:begin -->\n<!-- sweep:demo:end -->\n")
  out = tmp_path / "results" / "demo"
  with warnings.catch_warnings():
    warnings.simplefilter("error")  # e.g. matplotlib's empty-legend warning
    report.write_report(tmp_path, out, readme=readme)
  names = sorted(p.name for p in out.iterdir())
  assert names == ["dp_epsilon_mnist_psnr.png", "frontier_mnist_psnr.png",
                   "headline.md", "lambda_mnist_psnr.png", "per_seed.md",
                   "summary.csv", "summary.md", "verdict.md",
                   "verdict_mnist.png"]
  md = (out / "summary.md").read_text()
  assert "### mnist: split" in md and "| sca_lam0.1 | 19.1 ± 0.1414" in md
  text = readme.read_text()
  assert "### mnist: target" in text
  assert "[frontier_mnist_psnr](results/demo/frontier_mnist_psnr.png)" in text


def test_headline_rows_targets_and_paired_differences_by_hand():
  rows = (_rows("no_defense", "no_defense", {0: 20.0, 1: 21.0, 2: 22.0})
          + _rows("sca", "sca", {0: 18.0, 1: 18.5, 2: 20.0})
          + _rows("no_defense", "no_defense", {0: 0.9, 1: 0.9, 2: 0.9},
                  "reid_pixel")
          + _rows("no_defense", "no_defense", {0: 0.97, 1: 0.99},
                  "test_accuracy", "target")
          + _rows("sca", "sca", {1: 0.95}, "test_accuracy", "target"))
  md = report.headline_markdown(report.aggregate(rows))
  lines = md.splitlines()
  assert lines[:3] == [
      "### mnist", "", "| threat model | metric | no_defense | sca | "
      "sca - no_defense |"]
  # Target accuracy first; SCA has seed 1 only, paired with No-Defense's.
  assert lines[4] == ("| target | test_accuracy | 0.980 ± 0.014 (2) | "
                      "0.950 (1) | -0.040 (1) |")
  # PSNR: No-Defense 21 ± 1, SCA 18.833 ± 1.041; paired differences -2,
  # -2.5, -2: mean -2.167, interval [min, max] for 3 values (see above).
  assert lines[5] == ("| split | psnr | 21.000 ± 1.000 (3) | 18.833 ± 1.041 "
                      "(3) | -2.167 [-2.500, -2.000] (3) |")
  # A metric only No-Defense has still gets its row, SCA's cells empty.
  assert lines[6] == "| split | reid_pixel | 0.900 ± 0.000 (3) |  |  |"


def test_per_seed_columns_no_defense_first_and_missing_entries():
  rows = (_rows("sca", "sca", {0: 18.123, 1: 18.5})
          + _rows("sca", "sca", {0: 0.5}, "ssim")
          + _rows("no_defense", "no_defense", {2: 21.0})
          + _rows("no_defense", "no_defense", {2: 0.97}, "test_accuracy",
                  "target"))
  lines = report.per_seed_markdown(rows, ("psnr", "ssim")).splitlines()
  assert lines[2] == ("| threat model | no_defense seed 2 | sca seed 0 | "
                      "sca seed 1 |")
  assert lines[4] == "| test_accuracy | 0.970 | - | - |"
  assert lines[5] == "| split | 21.00 / - | 18.12 / 0.500 | 18.50 / - |"


def test_per_seed_names_the_worst_solver_gap_and_flags_the_criterion():
  rows = (_rows("sca", "sca", {0: 18.0, 1: 18.5})
          + _rows("sca", "sca", {0: 0.0545, 1: 0.004}, "solver_gap_layer0_lca",
                  "target")
          + _rows("sca", "sca", {0: 0.0071, 1: 0.012}, "solver_gap_layer2_lca",
                  "target")
          + _rows("no_defense", "no_defense", {0: 21.0}))
  lines = report.per_seed_markdown(rows, ("psnr",)).splitlines()
  assert lines[5] == ("| solver gap (worst sparse layer) | - | 5.45% **> 2%** "
                      "| 1.20% |")
  assert lines[6] == "| split | 21.00 | 18.00 | 18.50 |"


def test_committed_verdict_tables_are_what_the_code_makes_of_the_cells():
  # The README quotes results/verdict/headline.md; a cell collected without
  # running the report again, or a change in how the report reads cells,
  # would leave the quoted numbers behind the committed cells.
  out = REPO / "results" / "verdict"
  rows = results_lib.load_results(out / "cells")
  summary = report.aggregate(rows)
  assert report.headline_markdown(summary) in (out / "headline.md").read_text()
  assert report.per_seed_markdown(rows) in (out / "per_seed.md").read_text()
  assert verdict.verdict_markdown(summary) in (out / "verdict.md").read_text()


def test_verdict_points_paired_differences_rule_line_and_decisions():
  rows = (_rows("no_defense", "no_defense", {0: 20.0, 1: 21.0, 2: 22.0})
          + _rows("sca", "sca", {0: 16.0, 1: 17.0, 2: 18.0})
          + _rows("one_seed", "mid", {1: 20.5})
          + _rows("sca", "sca", {0: 5.0, 1: 5.0, 2: 5.0},
                  threat="split_replay"))
  points = report_figures.verdict_points(report.aggregate(rows), "mnist")
  # Only the trained threat models the rule judges; replays never count.
  assert {p["threat"] for p in points} == {"split"}
  by_target = {p["target"]: p for p in points}
  sca, one = by_target["sca"], by_target["one_seed"]
  # Paired differences -4, -4, -4: interval [-4, -4]; No-Defense std 1, so
  # the rule's line is at -3. PSNR alone passes, but a defense must pass
  # every rule metric: "does not defend".
  assert (sca["diff"], sca["low"], sca["high"]) == (-4.0, -4.0, -4.0)
  assert sca["line"] == pytest.approx(-3.0)
  assert sca["decision"] == "does not defend"
  # One seed: paired with No-Defense seed 1 only, no interval, an anecdote.
  assert one["diff"] == pytest.approx(-0.5) and math.isnan(one["low"])
  assert one["decision"] == "anecdote"
