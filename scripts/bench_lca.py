#!/usr/bin/env python
"""Benchmarks of `sca_jax.lca` on CPU (`sca_jax.bench`); writes one JSON file.

Sections (`--parts`; all but train_step_ab by default):
  forward      iterations/second of `lca.solve` (batch 64 MNIST, kernel 5,
               stride 1, lambda 0.25, tau 100) for 1->16, 1->64 and 16->28
               features (16->28 codes the first layer's 28x28x16 codes, as
               the SCA second layer does), fast stride-1 paths against the
               generic convolution paths, timed alternately.
  gradient     time and peak memory of ONE gradient (of the summed codes,
               w.r.t. input and dictionary) through 500 iterations, batch 64,
               64 features, for each `LCAConfig.grad` mode and each solver
               (`--grad-solvers`: FISTA and plain LCA, tau 100); each in its
               own process, peak RSS from getrusage(RUSAGE_CHILDREN) in a
               fresh parent, plus XLA's compiled memory_analysis(); agreement
               of every mode's gradient with the naive unrolled one, with how
               converged the differentiated solve was (codes' movement, KKT
               residual, distance from the minimiser); and implicit against
               unrolled on a converged solve (FISTA with restart, 5000
               iterations, 4 images, float64 and float32).
  convergence  iterations FISTA and LCA (tau 100) need to get the batch
               objective within 1% of a 2000-iteration FISTA-with-restart
               reference, and that the reference is LCA's fixed point.
  lcapt        against lanl/lca-pytorch (`LCAConv2D`): codes after 500
               iterations (whole image and interior) and iterations/second,
               timed back to back. Needs `--lcapt PATH` (a checkout) and
               `--torch-python` (an interpreter with torch and the lcapt
               requirements); without `--lcapt` it is recorded as "skipped".
               With a convergence section (run now or kept by --update):
               time to solution, each library's default solver (lcapt: LCA
               dynamics; ours: FISTA) times its iterations to 1%.
  train_step   the whole training step of the stride-1 SCA target against
               its ideal `3 x sparse forward FLOPs / matmul peak`
               (`sca_jax.bench.train_step`), with a per-HLO-op profile
               of one step by category (forward/backward, encode/decode/
               dictionary gradient, inside/outside the solver's loop).
  train_step_malloc  the same step (`--conv`) in fresh
               processes, glibc's default malloc against huge pages
               (`GLIBC_TUNABLES=glibc.malloc.hugetlb=1`), `--rounds` rounds
               in turn, with page faults and system time per step.
  train_step_ab  the same step under sparse-layer `LCAConfig` variants
               (default unrolled gradients against implicit ones with a
               capped CG), timed alternately in one process, with each
               variant's gradient error against the default's.

Timings are minima over repeats (the machine may be shared); the JSON keeps
the load average around each section. `--update` keeps the sections of an
existing `--out` that are not run now (`meta_by_section` says when each ran);
an existing `--out` is never overwritten without `--update` or `--replace`.

  python scripts/bench_lca.py [--out results/bench/bench_lca.json]
      [--lcapt ~/src/lca-pytorch --torch-python ~/venvs/torch/bin/python]
"""

from __future__ import annotations

import argparse
import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)

# pylint: disable=g-import-not-at-top,wrong-import-position
from sca_jax.bench import gradient, lcapt, solver
from sca_jax.bench.common import KERNEL, LAM, SHAPES, TAU, loadavg, meta

# train_step_ab: the default (first) against implicit gradients of the
# unconverged 15-step solve, CG capped at 10 and 30 iterations.
TRAIN_STEP_VARIANTS = {
    "unrolled": {},
    "fft_auto": {"conv": "auto"},
    "implicit_cg10": {"grad": "implicit", "cg_iters": 10},
    "implicit_cg30": {"grad": "implicit", "cg_iters": 30, "cg_tol": 1e-4},
}


PARTS = ("forward", "gradient", "convergence", "lcapt", "train_step",
         "train_step_malloc", "train_step_ab")


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--out", default=os.path.join(REPO, "results", "bench",
                                                "bench_lca.json"))
  p.add_argument("--data-dir", default=os.environ.get(
      "SCA_JAX_DATA_DIR", "/work/shared/data"))
  p.add_argument("--conv", default="direct", choices=("direct", "fft", "auto"),
                 help="the sparse layers' LCAConfig.conv in the train_step "
                      "section")
  p.add_argument("--variants", default=",".join(TRAIN_STEP_VARIANTS),
                 help="comma-separated train_step_ab variants (the first is "
                      f"the reference) of {sorted(TRAIN_STEP_VARIANTS)}")
  p.add_argument("--parts",
                 default="forward,gradient,convergence,lcapt,train_step",
                 help="comma-separated sections to run")
  p.add_argument("--update", action="store_true",
                 help="keep the sections of an existing --out not run now")
  p.add_argument("--replace", action="store_true",
                 help="start a new report at an existing --out, discarding "
                      "every section it holds")
  p.add_argument("--batch", type=int, default=64)
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--fwd-iters", type=int, default=100,
                 help="iterations per timed forward solve")
  p.add_argument("--grad-iters", type=int, default=500)
  p.add_argument("--grad-solvers", default="fista,lca",
                 help="comma-separated solvers to differentiate (lca, fista)")
  p.add_argument("--grad-modes", default=",".join(gradient.GRAD_MODES))
  p.add_argument("--grad-timeout", type=float, default=3600)
  p.add_argument("--agree-iters", type=int, default=5000,
                 help="converged implicit-vs-unrolled check (0: skip)")
  p.add_argument("--agree-batch", type=int, default=4)
  p.add_argument("--ref-iters", type=int, default=2000,
                 help="FISTA-with-restart steps of the reference minimiser")
  p.add_argument("--fista-iters", type=int, default=500,
                 help="plain FISTA steps traced in the convergence section")
  p.add_argument("--lca-max-iters", type=int, default=4000)
  p.add_argument("--lcapt", default=None,
                 help="path of a lanl/lca-pytorch checkout (holds lcapt/)")
  p.add_argument("--torch-python", default=sys.executable,
                 help="python with torch (and lcapt's requirements)")
  p.add_argument("--code-iters", type=int, default=500)
  p.add_argument("--lcapt-short", type=int, default=5)
  p.add_argument("--lcapt-long", type=int, default=25)
  p.add_argument("--rounds", type=int, default=3,
                 help="train_step_malloc: processes per setting, in turn")
  # Internal: worker processes.
  p.add_argument("--worker", choices=("grad", "lcapt", "step"),
                 help=argparse.SUPPRESS)
  p.add_argument("--worker-mode", help=argparse.SUPPRESS)
  p.add_argument("--worker-solver", help=argparse.SUPPRESS)
  p.add_argument("--worker-in", help=argparse.SUPPRESS)
  p.add_argument("--worker-out", help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  args.parts = [s for s in args.parts.split(",") if s]
  unknown = sorted(set(args.parts) - set(PARTS))
  if unknown or not args.parts:  # before any compute
    p.error(f"--parts: unknown {unknown or 'empty'}; allowed: {list(PARTS)}")
  if (args.worker is None and os.path.exists(args.out)
      and not (args.update or args.replace)):
    p.error(f"--out {args.out} exists: --update replaces the sections run "
            "now and keeps the others, --replace discards them all")
  if args.update and args.replace:
    p.error("--update and --replace exclude each other")
  args.variants = [s for s in args.variants.split(",") if s]
  unknown = sorted(set(args.variants) - set(TRAIN_STEP_VARIANTS))
  if unknown:  # before any compute
    raise SystemExit(f"--variants: unknown {unknown}; allowed: "
                     f"{sorted(TRAIN_STEP_VARIANTS)}")
  args.grad_modes = [s for s in args.grad_modes.split(",") if s]
  args.grad_solvers = [s for s in args.grad_solvers.split(",") if s]
  for name in args.grad_solvers:
    if name not in ("lca", "fista"):
      p.error(f"unknown solver in --grad-solvers: {name!r}")
  return args


def main(argv=None):
  args = parse_args(argv)
  if args.worker == "grad":
    return gradient.grad_worker(args)
  if args.worker == "lcapt":
    return lcapt.lcapt_worker(args)
  if args.worker == "step":
    from sca_jax.bench import train_step
    return train_step.step_worker(args.worker_out, args.batch, args.repeats,
                                  args.conv)
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  report = {}
  if args.update and os.path.exists(args.out):
    with open(args.out) as f:
      report = json.load(f)  # sections not run now are kept
  report.setdefault("meta_by_section", {
      s: report["meta"] for s in PARTS if s in report and "meta" in report})
  report["meta"] = meta()
  report["settings"] = {
      "batch": args.batch, "kernel": KERNEL, "stride": 1, "lam": LAM,
      "tau": TAU, "data": "mnist, first images", "shapes": SHAPES}
  for part in args.parts:
    report["meta_by_section"][part] = report["meta"]

  def save():
    with open(args.out, "w") as f:
      json.dump(report, f, indent=1)

  if "forward" in args.parts:
    report["forward"] = solver.bench_forward(args)
    save()
  if "gradient" in args.parts:
    report["gradient"] = gradient.bench_gradient(args)
    save()
  if "convergence" in args.parts:
    report["convergence"] = solver.bench_convergence(args)
    save()
  if "lcapt" in args.parts:
    report["lcapt"] = lcapt.bench_lcapt(args, report.get("forward"),
                                       report.get("convergence"))
  if "train_step" in args.parts:
    # Imports jax: not at the top, where the lcapt worker (torch) runs.
    from sca_jax.bench import train_step
    report["train_step"] = train_step.bench_train_step(
        args.batch, args.repeats, conv=args.conv)
  if "train_step_malloc" in args.parts:
    from sca_jax.bench import train_step
    report["train_step_malloc"] = train_step.compare_malloc_settings(
        train_step.MALLOC_SETTINGS, args.batch, args.repeats, args.rounds,
        args.conv)
    save()
  if "train_step_ab" in args.parts:
    from sca_jax.bench import train_step
    report["train_step_ab"] = train_step.compare_solver_settings(
        {n: TRAIN_STEP_VARIANTS[n] for n in args.variants}, args.batch,
        args.repeats)
  report["meta"]["loadavg_end"] = loadavg()
  save()
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
