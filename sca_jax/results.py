"""The results.json of a run: built in one place (`build`), read by one
reader (`load_results`) that every table and figure uses.

`experiment.run` writes `<workdir>/results.json` through `build`:

  dataset, defense, seed, test_accuracy, train_accuracy   the target
  num_train, num_test, data_checks (test/aux overlap)     the data
  train: {num_steps, steps_this_run, train_time_s, ...}   the training run
  sparse_layers: {<layer>: {active_fraction, relative_gap_to_optimum, ...}}
  machine: {platform, processor, devices, jax}, wall_time_s
  dp: {epsilon, noise_multiplier, ...}                    DP-SGD only
  config: the full ConfigDict (config.defense.lam, ...)
  attacks: {<attack>: {<metric>: {"mean": x, ...} | x, ...,
                       reidentification: {pixel, feature, chance},
                       floor: {<metric>: ...},   (the mean-image floor)
                       floors: {mean_image, class_mean_image,
                                retrieval_oracle: {<metric>: ...}}}}

Metrics are found, not listed: every entry of an attack recorded as a
statistic (a dict with "mean": psnr, ssim, attack_accuracy, any new one), the
scalar FID and the re-identification rates (`reid_pixel`, `reid_feature`),
each also as `<metric>_floor` (the mean-image attacker's score) and
`<metric>_floor_<name>` (the class-mean image and the retrieval oracle; an
attack with only its own named floor, as Plug-&-Play's random generator
samples, gives `<metric>_floor_<that name>`).
A sweep also writes `cell.json` beside it (the cell's axis labels), which
names the target (e.g. `sca_lam0.1`); without it the target is the run's
directory below the root, less data set and seed parts, or the defense.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from sca_jax import machine
from sca_jax import sweep_cells

SCALAR_METRICS = ("fid",)  # metrics recorded as a bare number
TARGET = "target"          # threat model of the target's own metrics
GAP_PREFIX = "solver_gap_"  # + sparse layer: its relative gap to the optimum
MAX_SOLVER_GAP = 0.02  # issue 12: each sparse layer within 2% of its optimum
_SEED_LABEL = re.compile(r"seed-?\d+$")

def build(*, config: Any, splits: Any, test_accuracy: float,
          train_accuracy: float, data_checks: dict[str, Any],
          train: dict[str, Any], sparse_layers: dict[str, Any],
          defense_report: dict[str, Any], attacks: dict[str, Any] | None,
          wall_time_s: float) -> dict[str, Any]:
  """The results.json of one run: the schema above, built in one place.

  `defense_report` (e.g. DP-SGD's `dp` entry) is merged at the top level;
  `attacks` maps attack name -> that attack's entry (absent: no attacks).
  """
  import jax  # pylint: disable=g-import-not-at-top  (readers need no JAX)
  results: dict[str, Any] = {
      "dataset": splits.name,
      "defense": config.defense.name,
      "seed": config.seed,
      "test_accuracy": test_accuracy,
      "train_accuracy": train_accuracy,
      "num_train": len(splits.train_x),
      "num_test": len(splits.test_x),
      "data_checks": data_checks,
      "train": train,
      "sparse_layers": sparse_layers,
      "machine": {**machine.describe(),
                  "devices": [str(d) for d in jax.devices()],
                  "jax": jax.__version__},
      **defense_report,
  }
  if attacks is not None:
    results["attacks"] = attacks
  results["wall_time_s"] = wall_time_s
  results["config"] = config.to_dict()
  return results



def _entry_metrics(entry: dict[str, Any]) -> dict[str, float]:
  """Statistics ({"mean": x}), scalar metrics and re-identification rates."""
  out = {}
  for key, value in entry.items():
    if isinstance(value, dict) and isinstance(value.get("mean"), (int, float)):
      out[key] = float(value["mean"])
    elif key in SCALAR_METRICS and isinstance(value, (int, float)):
      out[key] = float(value)
  reid = entry.get("reidentification") or {}
  for space, rate in ({} if "mean" in reid else reid).items():
    if space != "chance" and isinstance(rate, (int, float)):
      out[f"reid_{space}"] = float(rate)
  return out


def attack_metrics(attack: dict[str, Any]) -> dict[str, float]:
  """{metric: value} of one attack entry; the mean-image floor as
  `<metric>_floor`, the other floors as `<metric>_floor_<name>`."""
  out = _entry_metrics(attack)
  floor = attack.get("floor", {})
  # An attack without the image floors (Plug-&-Play) names its one floor
  # (random generator samples): a table must not call it the mean image.
  suffix = ("_floor" if attack.get("floors") or not floor.get("name")
            else f"_floor_{floor['name']}")
  out.update({f"{k}{suffix}": v for k, v in _entry_metrics(floor).items()})
  for name, floor in (attack.get("floors") or {}).items():
    if name != "mean_image":  # that one is `floor`
      out.update({f"{k}_floor_{name}": v
                  for k, v in _entry_metrics(floor).items()})
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
  # How far each sparse layer's codes are from the optimum of its objective:
  # a cell beyond the protocol's criterion judges a looser target.
  rows += [dict(common, threat_model=TARGET, metric=f"{GAP_PREFIX}{layer}",
                value=float(s["relative_gap_to_optimum"]))
           for layer, s in (results.get("sparse_layers") or {}).items()
           if "relative_gap_to_optimum" in s]
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
