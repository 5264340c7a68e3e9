"""Figures of a sweep (matplotlib PNG), from the rows and their summary.

- `frontier_<dataset>_<metric>.png`: test accuracy against a leak metric, one
  point per target with its bootstrap intervals, a panel per threat model;
- `lambda_<dataset>_<metric>.png`: leakage against SCA / Sparse-Standard
  lambda (when the sweep has two lambdas or more);
- `dp_epsilon_<dataset>_<metric>.png`: leakage against the DP-SGD epsilon
  (when two DP-SGD targets or more), No-Defense as a dashed line;
- `verdict_<dataset>.png`: the verdict rule drawn (`sca_jax.verdict`): per
  trained threat model and rule metric, each target's paired difference to
  No-Defense with its interval, against the 3-std line a defense must pass.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position

from sca_jax import report  # pylint: disable=wrong-import-position
from sca_jax import results as results_lib  # pylint: disable=wrong-import-position
from sca_jax import verdict  # pylint: disable=wrong-import-position

LAMBDA_DEFENSES = ("sca", "sparse_standard")


def _err(r: dict[str, Any]) -> list[list[float]] | None:
  lo, hi = r["ci_low"], r["ci_high"]
  if np.isnan(lo):
    return None
  return [[r["mean"] - lo], [hi - r["mean"]]]


def _panels(n: int, title: str, columns: int = 4):
  rows, cols = -(-n // columns), min(n, columns)
  fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.6 * rows),
                           squeeze=False)
  fig.suptitle(title)
  for ax in axes.flat[n:]:
    ax.set_visible(False)
  return fig, axes.flat[:n]


def _save(fig, path: Path, written: list[Path]) -> None:
  fig.tight_layout()
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path, dpi=110)
  plt.close(fig)
  written.append(path)


def write_figures(rows: list[dict[str, Any]], summary: list[dict[str, Any]],
                  out: Path) -> list[Path]:
  """Writes every figure the rows support; returns their paths."""
  stat = {tuple(r[k] for k in report.KEY): r for r in summary}
  targets: dict[tuple[str, str], dict[str, Any]] = {}
  for r in rows:
    t = targets.setdefault((r["dataset"], r["target"]), {
        "defense": r["defense"], "lam": r["lam"], "eps": {}})
    if r["dp_epsilon"] is not None:  # per seed: the same in all its rows
      t["eps"][r["seed"]] = r["dp_epsilon"]
  written: list[Path] = []
  for dataset in sorted({d for d, _ in targets}):
    names = [t for d, t in targets if d == dataset]
    threats = sorted({r["threat_model"] for r in summary
                      if r["dataset"] == dataset
                      and r["threat_model"] != results_lib.TARGET})
    for metric in report.LEAK_METRICS:
      panels = [th for th in threats
                if any((dataset, t, th, metric) in stat for t in names)]
      if not panels:
        continue
      _frontier(dataset, metric, panels, names, stat, out, written)
      _against(dataset, metric, panels, names, stat, targets, out, written,
               "lambda")
      _against(dataset, metric, panels, names, stat, targets, out, written,
               "dp_epsilon")
    points = verdict_points(summary, dataset)
    if points:
      _verdict_figure(dataset, points, out, written)
  return written


def verdict_points(summary: list[dict[str, Any]],
                   dataset: str) -> list[dict[str, Any]]:
  """What `verdict_<dataset>.png` draws: per (trained threat model, rule
  metric, target), the paired difference target - No-Defense with its
  bootstrap interval (NaN with one pair), the rule's line -3 No-Defense
  std, and the target's decision at that threat model."""
  stat = verdict.index(summary)
  targets = sorted({r["target"] for r in summary if r["dataset"] == dataset
                    and r["target"] != verdict.BASELINE})
  points = []
  for threat in verdict.TRAINED:
    for target in targets:
      judged = verdict.judge(summary, dataset, target, threat)
      for metric, v in judged["metrics"].items():
        r = stat[dataset, target, threat, metric]
        points.append(dict(
            threat=threat, metric=metric, target=target,
            diff=r.get("diff_mean", -v["drop"]),
            low=r.get("diff_ci_low", math.nan),
            high=r.get("diff_ci_high", math.nan),
            line=-v["threshold"], decision=judged["decision"]))
  return points


_DECISION_COLOR = {"defends": "tab:green", "does not defend": "tab:red",
                   "anecdote": "tab:gray"}


def _verdict_figure(dataset: str, points: list[dict[str, Any]], out: Path,
                    written: list[Path]) -> None:
  threats = [t for t in verdict.TRAINED if any(p["threat"] == t
                                               for p in points)]
  metrics = [m for m in verdict.RULE_METRICS if any(p["metric"] == m
                                                    for p in points)]
  targets = sorted({p["target"] for p in points})
  fig, axes = plt.subplots(
      len(metrics), len(threats), squeeze=False,
      figsize=(4.4 * len(threats), 0.9 + (0.28 * len(targets) + 0.9)
               * len(metrics)))
  fig.suptitle(f"{dataset}: target - No-Defense (paired, 95% interval); "
               "a defense must fall left of the dashed line (-3 No-Defense "
               "std) in every row\nred: does not defend, gray: anecdote "
               "(< 3 seeds, hollow), green: defends", fontsize=9)
  for i, metric in enumerate(metrics):
    for j, threat in enumerate(threats):
      ax = axes[i, j]
      mine = {p["target"]: p for p in points
              if p["metric"] == metric and p["threat"] == threat}
      for y, target in enumerate(targets):
        p = mine.get(target)
        if p is None:
          continue
        color = _DECISION_COLOR[p["decision"]]
        if not math.isnan(p["low"]):
          ax.plot([p["low"], p["high"]], [y, y], color=color, lw=1.5)
        ax.plot(p["diff"], y, "o", color=color,
                mfc="none" if p["decision"] == "anecdote" else color)
        if not math.isnan(p["line"]):
          ax.plot([p["line"]] * 2, [y - .4, y + .4], "--", color="k", lw=1)
      ax.axvline(0.0, color="gray", lw=0.8)
      ax.set_yticks(range(len(targets)))
      ax.set_yticklabels(targets if j == 0 else [], fontsize=7)
      ax.set_ylim(len(targets) - 0.5, -0.5)
      ax.tick_params(axis="x", labelsize=7)
      ax.set_title(f"{threat}: {metric}", fontsize=8)
  _save(fig, out / f"verdict_{dataset}.png", written)


def _frontier(dataset, metric, panels, names, stat, out, written) -> None:
  fig, axes = _panels(len(panels), f"{dataset}: test accuracy vs {metric}")
  for ax, threat in zip(axes, panels):
    for t in names:
      leak = stat.get((dataset, t, threat, metric))
      acc = stat.get((dataset, t, results_lib.TARGET, "test_accuracy"))
      if leak is None or acc is None:
        continue
      ax.errorbar(leak["mean"], acc["mean"], xerr=_err(leak), yerr=_err(acc),
                  fmt="o", capsize=3, color=f"C{names.index(t) % 10}")
      ax.annotate(t, (leak["mean"], acc["mean"]), fontsize=7,
                  textcoords="offset points", xytext=(3, 3))
    ax.set(title=threat, xlabel=f"{metric} (lower: less leakage)",
           ylabel="test accuracy")
  _save(fig, out / f"frontier_{dataset}_{metric}.png", written)


def _against(dataset, metric, panels, names, stat, targets, out, written,
             axis: str) -> None:
  """Leakage against lambda (per sparse defense) or DP epsilon."""
  if axis == "lambda":
    series = {d: sorted((targets[dataset, t]["lam"], t) for t in names
                        if targets[dataset, t]["defense"] == d
                        and targets[dataset, t]["lam"] is not None)
              for d in LAMBDA_DEFENSES}
  else:
    series = {"dp_sgd": sorted((float(np.mean(list(
        targets[dataset, t]["eps"].values()))), t)
                               for t in names if targets[dataset, t]["eps"])}
  if len({x for s in series.values() for x, _ in s}) < 2:
    return
  # A threat model only other targets have (a noise baseline's averaged
  # attack) would leave an empty panel with nothing to label: drop it.
  panels = [th for th in panels
            if any((dataset, t, th, metric) in stat
                   for points in series.values() for _, t in points)]
  if not panels:
    return
  fig, axes = _panels(len(panels), f"{dataset}: {metric} vs {axis}")
  for ax, threat in zip(axes, panels):
    for label, points in series.items():
      pts = [(x, stat[dataset, t, threat, metric]) for x, t in points
             if (dataset, t, threat, metric) in stat]
      if not pts:
        continue
      errs = [_err(r) or [[0.0], [0.0]] for _, r in pts]
      ax.errorbar([x for x, _ in pts], [r["mean"] for _, r in pts],
                  yerr=np.array(errs)[:, :, 0].T, fmt="o-", capsize=3,
                  label=label)
    base = [stat[dataset, t, threat, metric] for t in names
            if targets[dataset, t]["defense"] == report.BASELINE_DEFENSE
            and (dataset, t, threat, metric) in stat]
    if base:
      ax.axhline(base[0]["mean"], ls="--", color="gray", label="no_defense")
    if axis == "dp_epsilon":
      ax.set_xscale("log")
    ax.set(title=threat, xlabel=axis, ylabel=metric)
    ax.legend(fontsize=7)
  _save(fig, out / f"{axis}_{dataset}_{metric}.png", written)
