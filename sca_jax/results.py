"""The results.json of a run, and the one reader every table and figure uses.

`experiment.run` writes `<workdir>/results.json`; the fields read here are

  dataset, defense, seed, test_accuracy, train_accuracy   the target
  dp: {epsilon, noise_multiplier, ...}                    DP-SGD only
  config: the full ConfigDict (config.defense.lam, ...)
  attacks: {<attack>: {<metric>: {"mean": x, ...} | x, ...,
                       floor: {<metric>: ...}}}

Metrics are found, not listed: every entry of an attack recorded as a
statistic (a dict with "mean": psnr, ssim, attack_accuracy, any new one) plus
the scalar FID and the re-identification rates (`reid_pixel`,
`reid_feature`), each also for the three floors: `<metric>_floor` (mean
image), `<metric>_floor_class_mean`, `<metric>_floor_oracle`.
A sweep also writes `cell.json` beside it (the cell's axis labels), which
names the target (e.g. `sca_lam0.1`); without it the target is the run's
directory below the root, less data set and seed parts, or the defense.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from sca_jax import sweep_cells

SCALAR_METRICS = ("fid",)  # metrics recorded as a bare number
TARGET = "target"          # threat model of the target's own metrics
_SEED_LABEL = re.compile(r"seed-?\d+$")


# Floors (sca_jax.leakage) and the suffix their metrics get in the tables.
FLOOR_SUFFIXES = (("mean_image", "_floor"),
                  ("class_mean_image", "_floor_class_mean"),
                  ("retrieval_oracle", "_floor_oracle"))


def _entry_metrics(entry: dict[str, Any]) -> dict[str, float]:
  """Statistics ("mean" dicts), scalar FID and the re-identification rates
  (`reid_pixel`, `reid_feature`) of one attack or floor entry."""
  out = {}
  for key, value in entry.items():
    if isinstance(value, dict) and isinstance(value.get("mean"),
                                              (int, float)):
      out[key] = float(value["mean"])
    elif key in SCALAR_METRICS and isinstance(value, (int, float)):
      out[key] = float(value)
  reid = entry.get("reidentification")
  if isinstance(reid, dict):
    out.update({f"reid_{space}": float(reid[space])
                for space in ("pixel", "feature") if space in reid})
  return out


def attack_metrics(attack: dict[str, Any]) -> dict[str, float]:
  """{metric: value} of one attack entry, each floor's as `<metric>_floor`
  (mean image), `_floor_class_mean` and `_floor_oracle` (retrieval oracle);
  results without `floors` have the mean-image `floor` only."""
  out = _entry_metrics(attack)
  floors = attack.get("floors") or {"mean_image": attack.get("floor", {})}
  for floor, suffix in FLOOR_SUFFIXES:
    out.update({m + suffix: v
                for m, v in _entry_metrics(floors.get(floor, {})).items()})
  return out


def _target(results: dict[str, Any], path: Path, root: Path) -> str:
  cell_file = path.parent / sweep_cells.CELL_FILE
  if cell_file.exists():
    labels = json.loads(cell_file.read_text())["labels"]
    if "target" in labels:
      return labels["target"]
    parts = [v for k, v in labels.items() if k not in ("dataset", "seed")]
  else:
    parts = [p for p in path.parent.relative_to(root).parts
             if p != results.get("dataset") and not _SEED_LABEL.match(p)]
  return "/".join(parts) or str(results.get("defense"))


def rows_of(results: dict[str, Any], cell: str, target: str
            ) -> list[dict[str, Any]]:
  """Long-format rows: one per (threat model, metric) of one run."""
  defense = results.get("config", {}).get("defense", {})
  dp = results.get("dp", {})
  common = {
      "cell": cell, "dataset": results.get("dataset"), "target": target,
      "defense": results.get("defense"), "seed": results.get("seed"),
      "lam": defense.get("lam") if results.get("defense") in (
          "sca", "sparse_standard") else None,
      "dp_epsilon": dp.get("epsilon"),
      "noise_multiplier": dp.get("noise_multiplier"),
      "test_accuracy": results.get("test_accuracy")}
  rows = [dict(common, threat_model=TARGET, metric=m, value=float(results[m]))
          for m in ("test_accuracy", "train_accuracy") if m in results]
  if dp.get("epsilon") is not None:
    rows.append(dict(common, threat_model=TARGET, metric="dp_epsilon",
                     value=float(dp["epsilon"])))
  for attack, entry in results.get("attacks", {}).items():
    rows += [dict(common, threat_model=attack, metric=m, value=v)
             for m, v in attack_metrics(entry).items()]
  return rows


def load_results(root: str | Path) -> list[dict[str, Any]]:
  """Rows of every results.json under `root` (see `rows_of`), cell order."""
  root = Path(root)
  rows = []
  for path in sorted(root.rglob(sweep_cells.RESULTS_FILE)):
    if ".submitit" in path.parts:
      continue
    results = json.loads(path.read_text())
    cell = str(path.parent.relative_to(root))
    rows += rows_of(results, cell, _target(results, path, root))
  return rows
