"""Tables and figures of a sweep, from `results.load_results` rows.

`aggregate` groups rows by (data set, target, threat model, metric): mean,
std (ddof 1), the seeds, a 95% percentile bootstrap interval of the mean
(10,000 resamples, seeded), and the paired difference to No-Defense over the
seeds both have, with its own interval. `write_report` writes summary.csv /
summary.md, headline.md (the compact table the README quotes), per_seed.md
(every cell's own numbers), the figures and verdict.md (`sca_jax.verdict`'s
rule), and can rewrite a README section between
`<!-- sweep:NAME:begin -->` and `<!-- sweep:NAME:end -->`.
"""

from __future__ import annotations

import csv
import datetime
import itertools
import math
import os
import platform
import re
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np
from scipy import stats

from sca_jax import machine
from sca_jax import results as results_lib
from sca_jax import verdict

KEY = ("dataset", "target", "threat_model", "metric")
RESAMPLES = 10_000
BOOTSTRAP_SEED = 0
BASELINE_DEFENSE = "no_defense"
COLUMNS = [*KEY, "n", "mean", "std", "ci_low", "ci_high", "seeds",
           "diff_n", "diff_mean", "diff_ci_low", "diff_ci_high"]
LEAK_METRICS = ("psnr", "ssim", "attack_accuracy", "reid_pixel",
                "reid_feature")


def bootstrap_ci(values: list[float], seed: int = BOOTSTRAP_SEED
                 ) -> tuple[float, float]:
  """95% percentile bootstrap interval of the mean; nan for < 2 values."""
  values = np.asarray(values, np.float64)
  if len(values) < 2:
    return math.nan, math.nan
  if np.all(values == values[0]):
    return float(values[0]), float(values[0])
  ci = stats.bootstrap((values,), np.mean, n_resamples=RESAMPLES,
                       method="percentile", rng=np.random.default_rng(seed)
                       ).confidence_interval
  return float(ci.low), float(ci.high)


def _baseline_targets(rows: list[dict[str, Any]]) -> dict[str, str]:
  """data set -> the No-Defense target (the one named so, else the first)."""
  out: dict[str, str] = {}
  for r in rows:
    if r["defense"] == BASELINE_DEFENSE and (
        r["dataset"] not in out or r["target"] == BASELINE_DEFENSE):
      out[r["dataset"]] = r["target"]
  return out


def aggregate(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
  """One summary row per (data set, target, threat model, metric)."""
  by_key: dict[tuple, dict[Any, float]] = {}
  for r in rows:
    by_key.setdefault(tuple(r[k] for k in KEY), {})[r["seed"]] = r["value"]
  baselines = _baseline_targets(rows)
  out = []
  for key, per_seed in by_key.items():
    dataset, target, threat, metric = key
    seeds = sorted(per_seed, key=str)
    values = [per_seed[s] for s in seeds]
    lo, hi = bootstrap_ci(values)
    row = dict(zip(KEY, key), n=len(values), mean=float(np.mean(values)),
               std=(float(np.std(values, ddof=1)) if len(values) > 1
                    else math.nan),
               ci_low=lo, ci_high=hi, seeds=" ".join(map(str, seeds)))
    base = by_key.get((dataset, baselines.get(dataset), threat, metric))
    if base is not None and target != baselines[dataset]:
      common = [s for s in seeds if s in base]
      diffs = [per_seed[s] - base[s] for s in common]
      if diffs:
        row.update(diff_n=len(diffs), diff_mean=float(np.mean(diffs)))
        row["diff_ci_low"], row["diff_ci_high"] = bootstrap_ci(diffs)
    out.append(row)
  return out


def _fmt(v: Any) -> str:
  if isinstance(v, float):
    return "-" if math.isnan(v) else f"{v:.4g}"
  return "-" if v is None or v == "" else str(v)


def _command() -> str:
  """This process's command line, as a user would type it."""
  argv = list(sys.argv)
  if argv and argv[0].endswith(os.path.join("sca_jax", "sweep.py")):
    argv[0] = "-m sca_jax.sweep"  # run as `python -m sca_jax.sweep`
  return "python " + " ".join(argv[:1] + [shlex.quote(a) for a in argv[1:]])


def header_lines(title: str) -> list[str]:
  """Title, the command that wrote it, machine and date."""
  return [f"# {title}", "",
          f"- command: `{_command()}`",
          f"- machine: {platform.platform()}, {machine.cpu_model()}",
          "- date: " + datetime.datetime.now(datetime.timezone.utc).strftime(
              "%Y-%m-%d %H:%M UTC")]


def write_csv(rows: list[dict[str, Any]], columns: list[str], path: Path
              ) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  with path.open("w", newline="") as f:
    w = csv.DictWriter(f, columns, extrasaction="ignore")
    w.writeheader()
    w.writerows({c: r.get(c, "") for c in columns} for r in rows)


def write_table(rows: list[dict[str, Any]], columns: list[str], out: Path,
                header: list[str], footer: str = "") -> None:
  """`out`.csv (every column, raw) and `out`.md (header, table, footer)."""
  write_csv(rows, columns, out.with_suffix(".csv"))
  lines = [*header, "", "| " + " | ".join(columns) + " |",
           "|" + "---|" * len(columns)]
  lines += ["| " + " | ".join(_fmt(r.get(c)) for c in columns) + " |"
            for r in rows]
  out.with_suffix(".md").write_text("\n".join(lines + ["", footer]).rstrip()
                                    + "\n")


_FLOOR = re.compile(r"^(?P<metric>.+?)_floor(?:_(?P<name>.+))?$")


def _cell_text(r: dict[str, Any] | None, diff: bool = True) -> str:
  """`mean ± std [ci] (n)` and, below, the paired difference to No-Defense."""
  if r is None:
    return ""
  s = _fmt(r["mean"])
  if r["n"] > 1:
    s += (f" ± {_fmt(r['std'])} [{_fmt(r['ci_low'])}, "
          f"{_fmt(r['ci_high'])}] (n={r['n']})")
  if diff and r.get("diff_n"):
    s += f"<br>Δ {_fmt(r['diff_mean'])}"
    if r["diff_n"] > 1:
      s += f" [{_fmt(r['diff_ci_low'])}, {_fmt(r['diff_ci_high'])}]"
  return s


def _table(first: str, rows: list[str], metrics: list[str],
           text: Callable[[str, str], str]) -> list[str]:
  return (["| " + first + " | " + " | ".join(metrics) + " |",
           "|---|" + "---|" * len(metrics)]
          + [f"| {row} | " + " | ".join(text(row, m) for m in metrics) + " |"
             for row in rows] + [""])


def summary_markdown(summary: list[dict[str, Any]]) -> str:
  """Per data set and threat model: targets x leak metrics, each cell
  `mean ± std [ci] (n)` with the paired difference to No-Defense below; then
  the trivial attackers (floors) x the same metrics. Floors depend on the
  data, split and judge, not on the target: they are shown once, from the
  No-Defense target (or the first one)."""
  lines = []
  key = lambda r: (r["dataset"], r["threat_model"] != results_lib.TARGET,
                   r["threat_model"])
  for (dataset, _, threat), group in itertools.groupby(
      sorted(summary, key=key), key=key):
    group = list(group)
    cell = {(r["target"], r["metric"]): r for r in group}
    targets = list(dict.fromkeys(r["target"] for r in group))
    metrics = [m for m in dict.fromkeys(r["metric"] for r in group)
               if not _FLOOR.match(m)]
    lines += [f"### {dataset}: {threat}", ""]
    lines += _table("target", targets, metrics,
                    lambda t, m: _cell_text(cell.get((t, m))))
    floors = {}
    for m in dict.fromkeys(r["metric"] for r in group):
      match = _FLOOR.match(m)
      if match:
        floors.setdefault(match["name"] or "mean_image", {})[
            match["metric"]] = m
    if floors:
      ref = verdict.BASELINE if verdict.BASELINE in targets else targets[0]
      lines += [f"Floors (trivial attackers; from {ref}):", ""]
      lines += _table("floor", list(floors), metrics, lambda f, m: _cell_text(
          cell.get((ref, floors[f].get(m, ""))), diff=False))
  lines.append(
      "mean ± std over seeds [95% bootstrap interval of the mean, "
      f"{RESAMPLES:,} resamples] (n seeds); Δ: paired difference to "
      "No-Defense over the seeds both have, with its interval. PSNR, SSIM, "
      "attack accuracy, re-identification (reid_*, share of reconstructions "
      "whose nearest original is their own): lower is a better defense; "
      "FID: higher is. Floors: the mean auxiliary image, the class-mean "
      "auxiliary image, and the retrieval oracle (the nearest same-class "
      "auxiliary image to the true one); for Plug-&-Play, as many random "
      "generator samples, unoptimised.")
  return "\n".join(lines)


def _short(r: dict[str, Any] | None, digits: int = 3) -> str:
  if r is None:
    return ""
  s = f"{r['mean']:.{digits}f}"
  if r["n"] > 1:
    s += f" ± {r['std']:.{digits}f}"
  return s + f" ({r['n']})"


def headline_markdown(summary: list[dict[str, Any]],
                      metrics: tuple[str, ...] = LEAK_METRICS) -> str:
  """The README's compact table, per data set: rows (threat model, metric),
  columns the targets as `mean ± std (n seeds)`, and for each other target
  its paired difference to No-Defense with the bootstrap interval; the
  trained attackers and the replayed loop, no floors (summary.md has them)."""
  lines = []
  cell = verdict.index(summary)
  for dataset in dict.fromkeys(r["dataset"] for r in summary):
    rows = [r for r in summary if r["dataset"] == dataset]
    targets = list(dict.fromkeys(r["target"] for r in rows))
    base = verdict.BASELINE if verdict.BASELINE in targets else None
    others = [t for t in targets if t != base]
    threats = [results_lib.TARGET] + [
        t for t in dict.fromkeys(r["threat_model"] for r in rows)
        if t != results_lib.TARGET]
    header = targets + [f"{t} - {base}" for t in others if base]
    lines += [f"### {dataset}", "",
              "| threat model | metric | " + " | ".join(header) + " |",
              "|---|---|" + "---|" * len(header)]
    for threat in threats:
      wanted = ("test_accuracy",) if threat == results_lib.TARGET else metrics
      for m in wanted:
        got = [cell.get((dataset, t, threat, m)) for t in targets]
        if not any(got):
          continue
        diffs = []
        for t in (others if base else []):
          r = cell.get((dataset, t, threat, m))
          d = ""
          if r is not None and r.get("diff_n"):
            d = f"{r['diff_mean']:+.3f}"
            if r["diff_n"] > 1:
              d += f" [{r['diff_ci_low']:+.3f}, {r['diff_ci_high']:+.3f}]"
            d += f" ({r['diff_n']})"
          diffs.append(d)
        lines.append(f"| {threat} | {m} | "
                     + " | ".join([_short(r) for r in got] + diffs) + " |")
    lines.append("")
  lines.append("mean ± std over seeds (n seeds); differences paired by seed "
               "with their 95% bootstrap interval (n pairs). PSNR in dB; "
               "reid_*: re-identification rates. Floors and intervals of "
               "each mean: summary.md.")
  return "\n".join(lines)


def per_seed_markdown(rows: list[dict[str, Any]],
                      metrics: tuple[str, ...] = LEAK_METRICS) -> str:
  """Every cell's own numbers, per data set: a row per threat model (the
  target's test accuracy first), a column per (target, seed), each entry the
  `metrics` joined by " / " (PSNR 2 decimals, the rest 3; "-" if absent)."""
  value = {(r["dataset"], r["target"], r["seed"], r["threat_model"],
            r["metric"]): r["value"] for r in rows}
  lines = []
  for dataset in dict.fromkeys(r["dataset"] for r in rows):
    mine = [r for r in rows if r["dataset"] == dataset]
    targets = list(dict.fromkeys(r["target"] for r in mine))
    targets.sort(key=lambda t: t != verdict.BASELINE)  # No-Defense first
    columns = [(t, s) for t in targets for s in sorted(
        {r["seed"] for r in mine if r["target"] == t}, key=str)]
    threats = [t for t in dict.fromkeys(r["threat_model"] for r in mine)
               if t != results_lib.TARGET]

    def entry(t, s, threat, names):
      got = [value.get((dataset, t, s, threat, m)) for m in names]
      if all(v is None for v in got):
        return "-"
      return " / ".join("-" if v is None else f"{v:.{2 if m == 'psnr' else 3}f}"
                        for v, m in zip(got, names))

    lines += [f"### {dataset}", "",
              "| threat model | " + " | ".join(
                  f"{t} seed {s}" for t, s in columns) + " |",
              "|---|" + "---|" * len(columns),
              "| test_accuracy | " + " | ".join(
                  entry(t, s, results_lib.TARGET, ("test_accuracy",))
                  for t, s in columns) + " |"]
    gaps = {}  # (target, seed): its worst sparse layer's gap
    for (d, t, s, threat, m), v in value.items():
      if (d == dataset and threat == results_lib.TARGET
          and m.startswith(results_lib.GAP_PREFIX)):
        gaps[t, s] = max(v, gaps.get((t, s), v))
    if gaps:  # a sparse target beyond the criterion judges a looser solve
      lines.append("| solver gap (worst sparse layer) | " + " | ".join(
          f"{gaps[c]:.2%}" + (f" **> {results_lib.MAX_SOLVER_GAP:.0%}**"
                              if gaps[c] > results_lib.MAX_SOLVER_GAP else "")
          if c in gaps else "-" for c in columns) + " |")
    lines += [f"| {threat} | " + " | ".join(
        entry(t, s, threat, metrics) for t, s in columns) + " |"
              for threat in threats]
    lines.append("")
  lines.append("Each entry: " + " / ".join(metrics) + " of one cell.")
  return "\n".join(lines)


def rewrite_section(path: Path, name: str, text: str) -> None:
  """Replaces what lies between the sweep:NAME markers of `path`."""
  begin, end = f"<!-- sweep:{name}:begin -->", f"<!-- sweep:{name}:end -->"
  old = path.read_text()
  pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
  if not pattern.search(old):
    raise ValueError(f"--readme={path}: no '{begin}' ... '{end}' markers")
  path.write_text(pattern.sub(lambda _: f"{begin}\n{text}\n{end}", old,
                              count=1))


def write_report(root: Path, out: Path, readme: Path | str | None = None,
                 section: str | None = None, grids: bool = False) -> None:
  """summary.csv/.md and figures of every results.json under `root`."""
  from sca_jax import report_figures  # pylint: disable=g-import-not-at-top
  rows = results_lib.load_results(root)
  if not rows:
    raise ValueError(f"--root={root}: no results.json under it")
  summary = aggregate(rows)
  md = summary_markdown(summary)
  write_csv(summary, COLUMNS, out / "summary.csv")
  (out / "summary.md").write_text("\n".join(
      header_lines(f"Sweep {out.name}") + ["", md]) + "\n")
  (out / "headline.md").write_text("\n".join(
      header_lines(f"Sweep {out.name}: headline") + [
          "", headline_markdown(summary)]) + "\n")
  (out / "per_seed.md").write_text("\n".join(
      header_lines(f"Sweep {out.name}: per seed") + [
          "", per_seed_markdown(rows)]) + "\n")
  figures = report_figures.write_figures(rows, summary, out)
  if any(r["target"] == verdict.BASELINE for r in summary):
    (out / "verdict.md").write_text("\n".join(header_lines(
        f"Verdict rule applied to {out.name} (sca_jax.verdict)") + [
            "", verdict.verdict_markdown(summary)]) + "\n")
  if grids:
    for png in sorted(root.rglob("attacks/*.png")):
      dest = out / "grids" / png.parent.parent.relative_to(root) / png.name
      dest.parent.mkdir(parents=True, exist_ok=True)
      shutil.copy2(png, dest)
  if readme:
    base = Path(readme).parent  # image links relative to the README
    images = "Figures: " + ", ".join(
        f"[{p.stem}]({Path(os.path.relpath(p, base)).as_posix()})"
        for p in figures)
    rewrite_section(Path(readme), section or out.name, md + "\n\n" + images)
  print(f"wrote {out}/summary.csv, summary.md and {len(figures)} figures")
