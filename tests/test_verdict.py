"""sca_jax.verdict: the rule decides from seeds and spreads, not from means."""

import pytest

from sca_jax import report
from sca_jax import verdict


def _rows(target_values, baseline_values, threat="split"):
  rows = []
  for target, values in (("no_defense", baseline_values),
                         ("sca_lam0.5", target_values)):
    for seed, v in enumerate(values):
      for m in verdict.RULE_METRICS:
        rows.append(dict(dataset="mnist", target=target, threat_model=threat,
                         metric=m, seed=seed, value=v,
                         defense=target.split("_lam")[0]))
  return rows


def test_rule_needs_three_seeds_and_a_drop_beyond_three_std():
  base = [10.0, 10.2, 9.8]  # std 0.2: the threshold is 0.6
  far = report.aggregate(_rows([8.0, 8.1, 7.9], base))
  near = report.aggregate(_rows([9.6, 9.5, 9.7], base))  # drop 0.4 < 0.6
  two = report.aggregate(_rows([8.0, 8.1], base))
  assert verdict.judge(far, "mnist", "sca_lam0.5", "split")["decision"] == (
      "defends")
  j = verdict.judge(near, "mnist", "sca_lam0.5", "split")
  assert j["decision"] == "does not defend" and j["seeds"] == (3, 3)
  assert j["metrics"]["psnr"]["threshold"] == pytest.approx(0.6)
  assert verdict.judge(two, "mnist", "sca_lam0.5", "split")["decision"] == (
      "anecdote")
  assert verdict.judge(far, "mnist", "sca_lam0.5", "end_to_end")[
      "decision"] == "no data"
  with pytest.raises(ValueError, match="trained attackers"):
    verdict.judge(far, "mnist", "sca_lam0.5", "split_replay")
  table = verdict.verdict_markdown(two)
  assert "anecdote (2 seeds), not a verdict" in table


def test_one_metric_failing_is_enough_to_not_defend():
  rows = _rows([8.0, 8.1, 7.9], [10.0, 10.2, 9.8])
  for r in rows:  # SSIM of SCA as high as No-Defense's
    if r["metric"] == "ssim" and r["target"] == "sca_lam0.5":
      r["value"] += 2.0
  j = verdict.judge(report.aggregate(rows), "mnist", "sca_lam0.5", "split")
  assert j["decision"] == "does not defend"
  assert not j["metrics"]["ssim"]["passes"] and j["metrics"]["psnr"]["passes"]


def test_a_missing_metric_or_two_baseline_seeds_is_no_verdict():
  rows = _rows([8.0, 8.1, 7.9], [10.0, 10.2, 9.8])
  no_reid = [r for r in rows if r["metric"] != "reid_feature"]
  j = verdict.judge(report.aggregate(no_reid), "mnist", "sca_lam0.5", "split")
  # Every clause present passes, but the rule needs all of them.
  assert all(v["passes"] for v in j["metrics"].values())
  assert "reid_feature" not in j["metrics"]
  assert j["decision"] == "does not defend"
  two_base = [r for r in rows
              if not (r["target"] == "no_defense" and r["seed"] == 2)]
  j = verdict.judge(report.aggregate(two_base), "mnist", "sca_lam0.5",
                    "split")
  assert j["seeds"] == (3, 2) and j["decision"] == "anecdote"
