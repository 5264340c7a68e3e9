"""The verdict rule of docs/verdict.md, applied to a sweep's summary rows.

The rule, fixed before any number was seen: a target (SCA) **defends** a
threat model on a data set only if, for the trained attacker of that threat
model,

  1. its PSNR and its SSIM each fall more than `K` = 3 No-Defense seed-std
     below No-Defense's mean;
  2. its attack accuracy and both re-identification rates (pixel, feature)
     fall toward their floors: each drops by more than 3 No-Defense seed-std
     (a lower value means closer to the mean-image floor: chance accuracy,
     re-identification 1/N);
  3. with at least 3 seeds of each target; with fewer it is an anecdote.

The replayed attack (`*_replay`) never counts: its attacker never learned,
so it can only show what the paper's tables show, not whether the target
leaks. `judge` returns the per-metric numbers and the decision;
`verdict_markdown` the table docs/verdict.md shows.
"""

from __future__ import annotations

import math
from typing import Any

K = 3.0
MIN_SEEDS = 3
BASELINE = "no_defense"
TRAINED = ("end_to_end", "split", "first_layer")
# Each is read against its mean-image floor (`<metric>_floor`).
RULE_METRICS = ("psnr", "ssim", "attack_accuracy", "reid_pixel",
                "reid_feature")


def index(summary: list[dict[str, Any]]) -> dict[tuple, dict[str, Any]]:
  """Summary rows by (data set, target, threat model, metric)."""
  return {(r["dataset"], r["target"], r["threat_model"], r["metric"]): r
          for r in summary}


def judge(summary: list[dict[str, Any]], dataset: str, target: str,
          threat: str, baseline: str = BASELINE) -> dict[str, Any]:
  """The rule for one (data set, target, threat model).

  Returns {"decision": "defends" | "does not defend" | "anecdote" |
  "no data", "seeds": (target n, baseline n), "metrics": {metric: {target,
  baseline, baseline_std, drop, threshold, passes, floor}}}.
  """
  if threat not in TRAINED:
    raise ValueError(f"threat model {threat!r}: the rule is judged on the "
                     f"trained attackers {TRAINED} only")
  idx = index(summary)
  metrics, seeds = {}, None
  for m in RULE_METRICS:
    t, b = (idx.get((dataset, target, threat, m)),
            idx.get((dataset, baseline, threat, m)))
    if t is None or b is None:
      continue
    seeds = (t["n"], b["n"])
    std = b["std"] if b["n"] > 1 else math.nan
    drop = b["mean"] - t["mean"]
    floor = idx.get((dataset, target, threat, m + "_floor"))
    metrics[m] = dict(target=t["mean"], baseline=b["mean"], baseline_std=std,
                      drop=drop, threshold=K * std,
                      passes=bool(drop > K * std) if not math.isnan(std)
                      else None,
                      floor=floor["mean"] if floor else None)
  if not metrics:
    return dict(decision="no data", seeds=(0, 0), metrics={})
  if min(seeds) < MIN_SEEDS or any(v["passes"] is None
                                   for v in metrics.values()):
    decision = "anecdote"
  elif len(metrics) == len(RULE_METRICS) and all(
      v["passes"] for v in metrics.values()):
    decision = "defends"
  else:
    decision = "does not defend"
  return dict(decision=decision, seeds=seeds, metrics=metrics)


def _f(v: float | None, digits: int = 3) -> str:
  return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else (
      f"{v:.{digits}f}")


def verdict_markdown(summary: list[dict[str, Any]],
                     baseline: str = BASELINE) -> str:
  """One line per (data set, target, trained threat model) with data."""
  lines = ["| data set | target | threat model | seeds (target / No-Defense) "
           "| " + " | ".join(f"{m}: drop (> 3 std?)" for m in RULE_METRICS)
           + " | verdict |",
           "|---|---|---|---|" + "---|" * len(RULE_METRICS) + "---|"]
  combos = sorted({(r["dataset"], r["target"]) for r in summary
                   if r["target"] != baseline})
  for dataset, target in combos:
    for threat in TRAINED:
      j = judge(summary, dataset, target, threat, baseline)
      if j["decision"] == "no data":
        continue
      cells = []
      for m in RULE_METRICS:
        v = j["metrics"].get(m)
        if v is None:
          cells.append("-")
          continue
        mark = {True: "yes", False: "no", None: "n/a"}[v["passes"]]
        cells.append(f"{_f(v['drop'])} (3 std {_f(v['threshold'])}: {mark})")
      decision = j["decision"]
      if decision == "anecdote":
        decision = (f"anecdote ({min(j['seeds'])} seed"
                    f"{'s' if min(j['seeds']) != 1 else ''}), not a verdict")
      lines.append(f"| {dataset} | {target} | {threat} | {j['seeds'][0]} / "
                   f"{j['seeds'][1]} | " + " | ".join(cells)
                   + f" | {decision} |")
  return "\n".join(lines)
