"""Markdown tables from `results.json` files of many runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def load(paths: list[str | Path]) -> list[dict[str, Any]]:
  return [json.loads(Path(p).read_text()) for p in paths]


def _mean_std(d: dict[str, float], digits: int) -> str:
  return f"{d['mean']:.{digits}f} ± {d['std']:.{digits}f}"


def training_table(runs: list[dict[str, Any]]) -> str:
  """Accuracy, time and per-sparse-layer gap to the optimum of each run."""
  rows = ["| defense | solver | test acc | train time (s) | sparse layers: active fraction, gap to optimum |",
          "|---|---|---|---|---|"]
  for r in runs:
    d = r["config"]["defense"]
    layers = "; ".join(
        f"{n}: {s['active_fraction']:.3f}, {100 * s['relative_gap_to_optimum']:.2f}%"
        for n, s in r.get("sparse_layers", {}).items()) or "-"
    solver = (f"{d['solver']} x{d['num_iters']}" if r.get("sparse_layers")
              else "-")
    rows.append(f"| {r['defense']} | {solver} | {r['test_accuracy']:.4f} | "
                f"{r['train'].get('train_time_s', float('nan')):.0f} | {layers} |")
  return "\n".join(rows)


def attack_table(runs: list[dict[str, Any]]) -> str:
  """Per run and attack: PSNR, SSIM, FID, attack accuracy, each with floor."""
  rows = ["| defense | attack (leak) | PSNR dB | SSIM | FID | attack acc | floor PSNR / SSIM / FID / acc |",
          "|---|---|---|---|---|---|---|"]
  for r in runs:
    for name, a in r.get("attacks", {}).items():
      f = a["floor"]
      rows.append(
          f"| {r['defense']} | {name} ({a['leak']['name']}) | "
          f"{_mean_std(a['psnr'], 2)} | {_mean_std(a['ssim'], 3)} | "
          f"{a['fid']:.2f} | {a['attack_accuracy']['mean']:.3f} | "
          f"{f['psnr']['mean']:.2f} / {f['ssim']['mean']:.3f} / {f['fid']:.1f}"
          f" / {f['attack_accuracy']['mean']:.3f} |")
  return "\n".join(rows)
