#!/usr/bin/env python
"""Benchmarks of `sca_jax.lca` on CPU; writes one JSON file.

Sections (`--parts`, all by default):
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

Timings are minima over repeats (the machine may be shared); the JSON keeps
the load average around each section. `--update` keeps the sections of an
existing `--out` that are not run now (`meta_by_section` says when each ran).

  python scripts/bench_lca.py [--out results/bench/bench_lca.json]
      [--lcapt ~/src/lca-pytorch --torch-python ~/venvs/torch/bin/python]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPES = {"1->16": (1, 16), "1->64": (1, 64), "16->28": (16, 28)}
KERNEL, LAM, TAU = 5, 0.25, 100.0


# ----------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------


def _jax():
  """Imports jax and the package lazily: the lcapt worker runs without them."""
  if REPO not in sys.path:
    sys.path.insert(0, REPO)
  import jax  # pylint: disable=g-import-not-at-top
  from sca_jax import lca  # pylint: disable=g-import-not-at-top
  return jax, lca


def mnist_batch(data_dir: str, batch: int) -> np.ndarray:
  """The first `batch` MNIST images as float32 in [0, 1], (B, 28, 28, 1)."""
  _jax()
  from sca_jax.data import load_source  # pylint: disable=g-import-not-at-top
  images = load_source("mnist", data_dir).images[:batch]
  return images.astype(np.float32) / 255.0


def problem(shape: str, data_dir: str, batch: int):
  """(input, dictionary) of one benchmark shape, the input normalised.

  The 16->28 input is the first layer's codes of the normalised images (a
  1->16 dictionary, 200 FISTA iterations): sparse and non-negative like the
  SCA second layer's input.
  """
  jax, lca = _jax()
  x = lca.normalize_input(jax.numpy.asarray(mnist_batch(data_dir, batch)))
  c, f = SHAPES[shape]
  if c > 1:
    D1 = lca.init_dictionary(jax.random.key(0), KERNEL, 1, c)
    x = lca.solve(x, D1, lca.LCAConfig(lam=LAM, num_iters=200, solver="fista",
                                       normalize_input=False)).codes_BHWF
  return x, lca.init_dictionary(jax.random.key(1), KERNEL, c, f)


def loadavg() -> list[float]:
  return list(os.getloadavg())


# ----------------------------------------------------------------------------
# (a) Forward speed, fast against generic paths
# ----------------------------------------------------------------------------


def compile_solve(x, D, cfg, fast: bool):
  """AOT-compiled solve with the stride-1 fast paths on or off."""
  jax, lca = _jax()
  lca._STRIDE1_FAST_PATHS = fast  # pylint: disable=protected-access
  jax.clear_caches()  # the switch is read at trace time
  try:
    fn = jax.jit(lambda x, D: lca.solve(x, D, cfg).codes_BHWF)
    return fn.lower(x, D).compile()
  finally:
    lca._STRIDE1_FAST_PATHS = True  # pylint: disable=protected-access
    jax.clear_caches()


def time_call(fn, *args) -> float:
  start = time.perf_counter()
  fn(*args).block_until_ready()
  return time.perf_counter() - start


def bench_forward(args) -> dict:
  _, lca = _jax()
  n = args.fwd_iters
  out = {"num_iters_timed": n, "repeats": args.repeats, "results": {}}
  for shape in SHAPES:
    x, D = problem(shape, args.data_dir, args.batch)
    cfg = lca.LCAConfig(lam=LAM, tau=TAU, num_iters=n)
    fns = {"fast": compile_solve(x, D, cfg, True),
           "generic_conv": compile_solve(x, D, cfg, False)}
    for fn in fns.values():
      fn(x, D).block_until_ready()
    times = {k: [] for k in fns}
    load0 = loadavg()
    for _ in range(args.repeats):  # alternate, so contention hits both
      for k, fn in fns.items():
        times[k].append(time_call(fn, x, D))
    res = {k: _rate(t, n) for k, t in times.items()}
    res["speedup_fast_vs_generic"] = (res["generic_conv"]["ms_per_iter_min"] /
                                      res["fast"]["ms_per_iter_min"])
    res["loadavg"] = [load0, loadavg()]
    out["results"][shape] = res
    print(f"forward {shape}: fast {res['fast']['ms_per_iter_min']:.2f} ms/it,"
          f" generic {res['generic_conv']['ms_per_iter_min']:.2f} ms/it",
          flush=True)
  return out


def _rate(seconds: list[float], n: int) -> dict:
  best, med = min(seconds), float(np.median(seconds))
  return {"ms_per_iter_min": 1e3 * best / n, "ms_per_iter_median": 1e3 * med / n,
          "iters_per_s": n / best, "seconds": seconds}


# ----------------------------------------------------------------------------
# (b) One gradient per mode, each in its own process
# ----------------------------------------------------------------------------

GRAD_MODES = ("forward_only", "unrolled", "remat_chunked", "remat_chunked:3",
              "remat_chunked:4", "implicit")


def grad_config(mode: str, solver: str, num_iters: int):
  """LCAConfig of a gradient mode: "forward_only", a `grad` value, or
  "remat_chunked:L" for L checkpoint levels."""
  _, lca = _jax()
  grad, _, levels = mode.partition(":")
  return lca.LCAConfig(lam=LAM, tau=TAU, num_iters=num_iters,
                       solver=solver, normalize_input=False,
                       grad="unrolled" if grad == "forward_only" else grad,
                       remat_levels=int(levels or 2))


def grad_worker(args) -> None:
  """Child process: compiles and runs one gradient, prints a JSON line."""
  import resource  # pylint: disable=g-import-not-at-top
  jax, lca = _jax()
  jnp = jax.numpy
  with np.load(args.worker_in) as z:  # not load_source: its peak is not ours
    x, D = jnp.asarray(z["x"]), jnp.asarray(z["D"])
  mode = args.worker_mode
  cfg = grad_config(mode, args.worker_solver, args.grad_iters)
  loss = lambda x, D: jnp.sum(lca.solve(x, D, cfg).codes_BHWF)
  fn = jax.jit(loss if mode == "forward_only" else
               jax.grad(loss, argnums=(0, 1)))
  start = time.perf_counter()
  compiled = fn.lower(x, D).compile()
  compile_s = time.perf_counter() - start
  rss_compiled = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
  mem = compiled.memory_analysis()
  start = time.perf_counter()
  result = jax.block_until_ready(compiled(x, D))
  run_s = time.perf_counter() - start
  if mode != "forward_only":
    np.savez(args.worker_out, gx=np.asarray(result[0]),
             gD=np.asarray(result[1]))
  mib = 2.0**-20
  print("RESULT " + json.dumps({
      "mode": mode, "run_s": run_s, "compile_s": compile_s,
      "xla_temp_mib": mem.temp_size_in_bytes * mib if mem else None,
      "xla_argument_mib": mem.argument_size_in_bytes * mib if mem else None,
      "xla_output_mib": mem.output_size_in_bytes * mib if mem else None,
      "self_maxrss_after_compile_mib": rss_compiled,
      "self_maxrss_mib": resource.getrusage(
          resource.RUSAGE_SELF).ru_maxrss / 1024.0}), flush=True)


# A fresh parent per measurement: RUSAGE_CHILDREN is the maximum over all
# waited-for children, so it only isolates one child in a new process.
_ISOLATE = r"""
import json, resource, subprocess, sys
p = subprocess.run(sys.argv[1:], capture_output=True, text=True)
print(json.dumps({"rc": p.returncode, "stdout": p.stdout,
                  "stderr": p.stderr[-3000:],
                  "maxrss_kib": resource.getrusage(
                      resource.RUSAGE_CHILDREN).ru_maxrss}))
"""


def run_isolated(cmd: list[str], timeout: float) -> dict:
  proc = subprocess.run([sys.executable, "-c", _ISOLATE, *cmd],
                        capture_output=True, text=True, timeout=timeout)
  if proc.returncode:
    return {"rc": proc.returncode, "stdout": "", "stderr": proc.stderr,
            "maxrss_kib": None}
  return json.loads(proc.stdout)


def reference_codes(x, D, num_iters: int):
  """The minimiser, for comparisons: FISTA with restart, `num_iters` steps."""
  _, lca = _jax()
  return lca.solve(x, D, lca.LCAConfig(
      lam=LAM, tau=TAU, num_iters=num_iters, solver="fista",
      fista_restart=True, normalize_input=False)).codes_BHWF


def solve_convergence(x, D, cfg, a_ref=None) -> dict:
  """How converged the forward solve `cfg` is: movement of its codes over the
  last 10% of its iterations, its optimality (KKT) residual, the size of its
  active set, and (given the minimiser `a_ref`) its distance from it."""
  import dataclasses  # pylint: disable=g-import-not-at-top
  jax, lca = _jax()
  jnp = jax.numpy
  n = cfg.num_iters
  solve = lambda c: lca.solve(x, D, c).codes_BHWF
  a = solve(cfg)
  a_early = solve(dataclasses.replace(cfg, num_iters=n - max(1, n // 10)))
  kkt = np.asarray(lca.kkt_residual(x, a, D, cfg.lam, cfg.threshold,
                                    cfg.stride))
  obj = lambda c: float(jnp.sum(lca.objective(x, c, D, cfg.lam, cfg.stride)))
  active = np.asarray(jnp.sum(a != 0, axis=(1, 2, 3)))
  out = {"solver": cfg.solver, "fista_restart": cfg.fista_restart,
         "num_iters": n, "dtype": str(x.dtype),
         "codes_rel_change_last_10pct": _rel(a_early, a),
         "active_set_changes_last_10pct": int(jnp.sum((a != 0) !=
                                                      (a_early != 0))),
         "kkt_residual_rel_mean": float(kkt.mean()),
         "kkt_residual_rel_max": float(kkt.max()),
         "active_codes_per_sample_max": int(active.max()),
         "input_values_per_sample": int(np.prod(x.shape[1:])),
         "objective": obj(a)}
  if a_ref is not None:
    out.update({
        "codes_rel_dist_to_minimiser": _rel(a, a_ref),
        "active_set_mismatch_vs_minimiser": int(jnp.sum((a != 0) !=
                                                        (a_ref != 0))),
        "active_codes_minimiser": int(jnp.sum(a_ref != 0)),
        "objective_rel_gap": obj(a) / obj(a_ref) - 1.0})
  return out


def minimiser_gradient(x, D, num_iters: int):
  """The gradient the solver's gradients approximate: that of the exact
  minimiser, implicit differentiation at the reference solve."""
  jax, lca = _jax()
  cfg = lca.LCAConfig(lam=LAM, tau=TAU, num_iters=num_iters, solver="fista",
                      fista_restart=True, normalize_input=False,
                      grad="implicit", cg_iters=1000)
  fn = jax.jit(jax.grad(
      lambda x, D: jax.numpy.sum(lca.solve(x, D, cfg).codes_BHWF),
      argnums=(0, 1)))
  return [np.asarray(g) for g in fn(x, D)]


def bench_gradient(args) -> dict:
  _, lca = _jax()
  out = {"setting": {
      "num_iters": args.grad_iters, "batch": args.batch, "features": 64,
      "kernel": KERNEL, "lam": LAM, "tau": TAU, "dtype": "float32",
      "loss": "sum of codes; d/d(input, dictionary)",
      "peak_rss": "getrusage(RUSAGE_CHILDREN).ru_maxrss of a fresh parent "
                  "of the worker: the whole process (jax runtime ~200 MiB, "
                  "compiler, buffers); the worker reads the batch from an "
                  ".npz written here, not through load_source",
      "rel_diff_vs_unrolled": "||g - g_unrolled|| / ||g_unrolled||, naive "
                              "unrolled autodiff of the same solve",
      "rel_diff_vs_minimiser_gradient": "against the implicit gradient at "
                                        "the minimiser (FISTA with restart, "
                                        f"{args.ref_iters} steps)",
      "forward_convergence": "of the differentiated solve; minimiser: "
                             f"FISTA with restart, {args.ref_iters} steps"},
         "runs": {}}
  x, D = problem("1->64", args.data_dir, args.batch)
  a_ref = reference_codes(x, D, args.ref_iters)
  g_star = minimiser_gradient(x, D, args.ref_iters)
  with tempfile.TemporaryDirectory() as tmp:
    inputs = os.path.join(tmp, "in.npz")
    np.savez(inputs, x=np.asarray(x), D=np.asarray(D))
    for solver in args.grad_solvers:
      run = {"forward_convergence": solve_convergence(
          x, D, lca.LCAConfig(lam=LAM, tau=TAU, num_iters=args.grad_iters,
                              solver=solver, normalize_input=False), a_ref),
             "modes": {}}
      print(f"gradient {solver} forward: "
            f"{json.dumps(run['forward_convergence'])}", flush=True)
      grads = {}
      for mode in args.grad_modes:
        npz = os.path.join(tmp, f"{solver}_{mode.replace(':', '_')}.npz")
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", "grad",
               "--worker-mode", mode, "--worker-solver", solver,
               "--worker-in", inputs, "--worker-out", npz,
               "--grad-iters", str(args.grad_iters)]
        load0 = loadavg()
        res = run_isolated(cmd, timeout=args.grad_timeout)
        entry = {"peak_rss_mib": (res["maxrss_kib"] / 1024.0
                                  if res["maxrss_kib"] else None),
                 "returncode": res["rc"], "loadavg": [load0, loadavg()]}
        lines = [l for l in res["stdout"].splitlines()
                 if l.startswith("RESULT ")]
        if lines:
          entry.update(json.loads(lines[-1][len("RESULT "):]))
        else:
          entry["error"] = res["stderr"][-2000:]
        if os.path.exists(npz):
          with np.load(npz) as z:
            grads[mode] = (z["gx"], z["gD"])
        run["modes"][mode] = entry
        print(f"gradient {solver} {mode}: {json.dumps(entry)[:300]}",
              flush=True)
      for mode, (gx, gD) in grads.items():
        if "unrolled" in grads:
          gx0, gD0 = grads["unrolled"]
          run["modes"][mode]["rel_diff_vs_unrolled"] = {
              "input": _rel(gx, gx0), "dictionary": _rel(gD, gD0)}
        run["modes"][mode]["rel_diff_vs_minimiser_gradient"] = {
            "input": _rel(gx, g_star[0]), "dictionary": _rel(gD, g_star[1])}
      out["runs"][solver] = run
  if args.agree_iters:
    out["converged_agreement"] = bench_agreement(args)
  return out


def _rel(a, b) -> float:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def bench_agreement(args) -> dict:
  """Implicit against unrolled gradients where the solve has converged.

  The benchmark's 500 iterations leave the codes and their active set short
  of the minimiser (see each run's "forward_convergence"), and the implicit
  gradient is the minimiser's. Here FISTA with restart runs `--agree-iters`
  steps on `--agree-batch` images, in float64 (codes converged to machine
  precision) and in float32. The unrolled gradient comes from
  "remat_chunked" with 3 levels: the same operations as naive unrolling
  (equal to it to ~1e-6 in the 500-step runs), within memory.
  """
  import dataclasses  # pylint: disable=g-import-not-at-top
  jax, lca = _jax()
  jnp = jax.numpy
  x32, D32 = problem("1->64", args.data_dir, args.agree_batch)
  cfg = lca.LCAConfig(lam=LAM, tau=TAU, num_iters=args.agree_iters,
                      solver="fista", fista_restart=True,
                      normalize_input=False, remat_levels=3)
  out = {"solver": "fista", "fista_restart": True,
         "num_iters": args.agree_iters, "batch": args.agree_batch,
         "features": 64, "unrolled_via": "remat_chunked, 3 levels",
         "loss": "sum of codes; d/d(input, dictionary)"}
  grads = {}
  for dtype in ("float64", "float32"):
    with jax.enable_x64(dtype == "float64"):
      x, D = jnp.asarray(x32, dtype), jnp.asarray(D32, dtype)
      res = {"forward_convergence": solve_convergence(x, D, cfg)}
      times = {}
      for mode in ("remat_chunked", "implicit"):
        c = dataclasses.replace(cfg, grad=mode)
        if dtype == "float64" and mode == "implicit":
          c = dataclasses.replace(c, cg_iters=2000, cg_tol=1e-12)
        fn = jax.jit(jax.grad(
            lambda x, D, c=c: jnp.sum(lca.solve(x, D, c).codes_BHWF),
            argnums=(0, 1)))
        start = time.perf_counter()
        grads[dtype, mode] = [np.asarray(g) for g in
                              jax.block_until_ready(fn(x, D))]
        times[mode] = time.perf_counter() - start
      res["cg"] = ({"cg_iters": 2000, "cg_tol": 1e-12} if dtype == "float64"
                   else {"cg_iters": cfg.cg_iters, "cg_tol": cfg.cg_tol})
      res["seconds_incl_compile"] = times
      out[dtype] = res
  diff = lambda a, b: {"input": _rel(grads[a][0], grads[b][0]),
                       "dictionary": _rel(grads[a][1], grads[b][1])}
  for dtype in ("float64", "float32"):
    out[dtype]["implicit_vs_unrolled_rel_diff"] = diff(
        (dtype, "implicit"), (dtype, "remat_chunked"))
  # Which float32 gradient is off: both against the float64 one.
  out["float32_vs_float64_implicit"] = {
      "implicit": diff(("float32", "implicit"), ("float64", "implicit")),
      "unrolled": diff(("float32", "remat_chunked"), ("float64", "implicit"))}
  print(f"agreement: {json.dumps(out)}", flush=True)
  return out


# ----------------------------------------------------------------------------
# (4) Iterations to get within 1% of the optimum
# ----------------------------------------------------------------------------


def iterations_to_1pct(x, D, ref_iters: int, lca_max_iters: int,
                       fista_max_iters: int | None = None,
                       distances_at_1pct: bool = True,
                       lca_try_iters: int | None = None) -> dict:
  """Iterations plain LCA (tau 100) and FISTA need to get the batch-summed
  objective within 1% of the optimum, and whether they head for the same
  point.

  The optimum is a `ref_iters`-step FISTA-with-restart solve. LCA counts the
  updates applied before its codes reach the criterion, FISTA the iterations
  run (its trace is of each iteration's new codes). Also: whether the
  reference is LCA's fixed point (one LCA step from its potentials
  `u* = D^T (x - D a*) + a*` returns `a*`), and how far each solver's codes
  are from the reference at the end of their runs and (`distances_at_1pct`,
  two more solves) when they reach 1%. `lca_try_iters`: run LCA that long
  first, and the whole `lca_max_iters` only if it falls short.
  """
  jax, lca = _jax()
  jnp = jax.numpy
  fista_max_iters = fista_max_iters or ref_iters

  def run(solver, n, restart=False):
    res = lca.solve(x, D, lca.LCAConfig(
        lam=LAM, tau=TAU, num_iters=n, solver=solver, fista_restart=restart,
        normalize_input=False), return_trace=True)
    return res.codes_BHWF, np.asarray(res.trace["objective"], np.float64)

  a_ref, ref_obj = run("fista", ref_iters, restart=True)
  a_fista, fista = run("fista", fista_max_iters)
  ref_B = ref_obj[-1]
  for budget in sorted({min(lca_try_iters or lca_max_iters, lca_max_iters),
                        lca_max_iters}):
    a_lca, lca_obj = run("lca", budget)
    if lca_obj[-1].sum() <= 1.01 * ref_B.sum():
      break
  first = lambda obj, target: (int(np.argmax(obj <= target))
                               if np.any(obj <= target) else None)
  n_fista = first(fista.sum(1), 1.01 * ref_B.sum())
  n_lca = first(lca_obj.sum(1), 1.01 * ref_B.sum())
  n_fista = None if n_fista is None else n_fista + 1
  per_sample = lambda obj, off: [
      None if (i := first(obj[:, b], 1.01 * ref_B[b])) is None else i + off
      for b in range(obj.shape[1])]
  codes_at = lambda solver, n: lca.solve(x, D, lca.LCAConfig(
      lam=LAM, tau=TAU, num_iters=max(n, 1), solver=solver,
      normalize_input=False)).codes_BHWF
  hw = x.shape[1:3]
  u_star = lca.encode(x - lca.decode(a_ref, D, 1, hw), D, 1) + a_ref
  lowest = min(fista.sum(1).min(), lca_obj.sum(1).min())
  dist = {"fista_at_max": _rel(a_fista, a_ref),
          "lca_at_max": _rel(a_lca, a_ref)}
  if distances_at_1pct:
    dist.update({
        "fista_at_1pct": (_rel(codes_at("fista", n_fista), a_ref)
                          if n_fista else None),
        "lca_at_1pct": (_rel(codes_at("lca", n_lca), a_ref)
                        if n_lca else None)})
  return {
      "reference_objective_sum": float(ref_B.sum()),
      "reference_rel_change_last_10pct": float(
          ref_obj[-1 - ref_iters // 10].sum() / ref_B.sum() - 1),
      "reference_kkt_residual_rel_max": float(jnp.max(lca.kkt_residual(
          x, a_ref, D, LAM))),
      # < 0 would mean a solver went below the "optimum".
      "lowest_objective_rel_to_reference": float(lowest / ref_B.sum() - 1),
      "fista_iters_to_1pct": n_fista, "lca_iters_to_1pct": n_lca,
      "fista_max_iters": fista_max_iters, "lca_max_iters": lca_max_iters,
      "lca_iters_run": len(lca_obj),
      "ratio_lca_over_fista": (n_lca / n_fista if n_lca and n_fista
                               else None),
      "per_sample_max": {"fista": _max_or_none(per_sample(fista, 1)),
                         "lca": _max_or_none(per_sample(lca_obj, 0))},
      "fista_final_rel_gap": float(fista[-1].sum() / ref_B.sum() - 1),
      "lca_final_rel_gap": float(lca_obj[-1].sum() / ref_B.sum() - 1),
      "lca_fixed_point_residual_at_reference": _rel(
          lca.threshold(u_star, LAM), a_ref),
      "codes_rel_dist_to_reference": dist}


def bench_convergence(args) -> dict:
  out = {"criterion": "batch-summed objective <= 1.01 x the last value of a "
                      f"{args.ref_iters}-iteration FISTA-with-restart run; "
                      "LCA counts updates applied, FISTA iterations run",
         "batch": args.batch, "results": {}}
  for shape in SHAPES:
    x, D = problem(shape, args.data_dir, args.batch)
    load0, start = loadavg(), time.perf_counter()
    res = iterations_to_1pct(x, D, args.ref_iters, args.lca_max_iters,
                             args.fista_iters, lca_try_iters=500)
    res.update({"seconds": time.perf_counter() - start,
                "loadavg": [load0, loadavg()]})
    out["results"][shape] = res
    print(f"convergence {shape}: {json.dumps(res)}", flush=True)
  return out


def _max_or_none(values):
  return None if any(v is None for v in values) else max(values)


# ----------------------------------------------------------------------------
# (c) lanl/lca-pytorch
# ----------------------------------------------------------------------------


def lcapt_worker(args) -> None:
  """Runs under --torch-python: times LCAConv2D, saves its codes."""
  sys.path.insert(0, args.lcapt)
  import torch  # pylint: disable=g-import-not-at-top,import-error
  from lcapt.lca import LCAConv2D  # pylint: disable=g-import-not-at-top,import-error
  with np.load(args.worker_in) as z:
    x_BHWC, D_KKCF = z["x"], z["D"]
  c, f = D_KKCF.shape[2], D_KKCF.shape[3]
  x = torch.from_numpy(np.ascontiguousarray(x_BHWC.transpose(0, 3, 1, 2)))
  w = torch.from_numpy(np.ascontiguousarray(D_KKCF.transpose(3, 2, 0, 1)))
  with tempfile.TemporaryDirectory() as tmp:
    def model(iters):
      m = LCAConv2D(f, c, result_dir=tmp, kernel_size=D_KKCF.shape[0],
                    stride=1, lambda_=LAM, tau=TAU, lca_iters=iters,
                    input_zero_mean=False, input_unit_var=False)
      m.assign_weight_values(w.to(m.weights.dtype), normalize=False)
      return m

    def timed(m):
      start = time.perf_counter()
      with torch.no_grad():
        codes = m(x)
      return time.perf_counter() - start, codes

    short, long_ = model(args.lcapt_short), model(args.lcapt_long)
    timed(short)  # warm-up
    t_short, t_long = [], []
    for _ in range(args.repeats):
      t_short.append(timed(short)[0])
      t_long.append(timed(long_)[0])
    _, codes = timed(model(args.code_iters))
  np.savez(args.worker_out,
           codes=codes.numpy().transpose(0, 2, 3, 1))  # back to BHWF
  per_iter = (min(t_long) - min(t_short)) / (args.lcapt_long - args.lcapt_short)
  print("RESULT " + json.dumps({
      "ms_per_iter": 1e3 * per_iter, "iters_per_s": 1.0 / per_iter,
      "method": f"(min time of {args.lcapt_long} - min time of "
                f"{args.lcapt_short} iterations) / difference",
      "seconds_short": t_short, "seconds_long": t_long,
      "torch": torch.__version__, "threads": torch.get_num_threads()}),
        flush=True)


def bench_lcapt(args, jax_fwd: dict | None) -> dict | str:
  if not args.lcapt:
    return "skipped"
  jax, lca = _jax()
  out = {"lcapt": os.path.abspath(args.lcapt), "torch_python":
         args.torch_python, "code_iters": args.code_iters,
         "interior_margin": KERNEL - 1,
         "note": "both run the same normalised input and dictionary; lcapt "
                 "with its own normalisation off. Interior: codes at least "
                 "kernel-1 pixels from the border. JAX ms/iter re-timed "
                 "right after lcapt's, fast path, min over repeats.",
         "results": {}}
  with tempfile.TemporaryDirectory() as tmp:
    for shape in SHAPES:
      x, D = problem(shape, args.data_dir, args.batch)
      np.savez(os.path.join(tmp, "in.npz"), x=np.asarray(x), D=np.asarray(D))
      cmd = [args.torch_python, os.path.abspath(__file__), "--worker",
             "lcapt", "--lcapt", args.lcapt,
             "--worker-in", os.path.join(tmp, "in.npz"),
             "--worker-out", os.path.join(tmp, "out.npz"),
             "--repeats", str(args.repeats), "--code-iters",
             str(args.code_iters), "--lcapt-short", str(args.lcapt_short),
             "--lcapt-long", str(args.lcapt_long)]
      load0 = loadavg()
      proc = subprocess.run(cmd, capture_output=True, text=True,
                            timeout=args.grad_timeout)
      lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
      if proc.returncode or not lines:
        out["results"][shape] = {"error": proc.stderr[-2000:]}
        continue
      theirs = json.loads(lines[-1][len("RESULT "):])
      with np.load(os.path.join(tmp, "out.npz")) as z:
        codes_pt = z["codes"]
      # Ours, timed back to back with theirs.
      n = args.fwd_iters
      fn = compile_solve(x, D, lca.LCAConfig(lam=LAM, tau=TAU, num_iters=n,
                                             normalize_input=False), True)
      fn(x, D).block_until_ready()
      ours = _rate([time_call(fn, x, D) for _ in range(args.repeats)], n)
      codes = np.asarray(lca.solve(x, D, lca.LCAConfig(
          lam=LAM, tau=TAU, num_iters=args.code_iters,
          normalize_input=False)).codes_BHWF)
      m = KERNEL - 1
      rel = lambda a, b: float(np.linalg.norm(a - b) / np.linalg.norm(b))
      res = {"lcapt": theirs, "jax": ours,
             "speed_ratio_jax_over_lcapt": (theirs["ms_per_iter"] /
                                            ours["ms_per_iter_min"]),
             "codes_rel_l2_whole": rel(codes, codes_pt),
             "codes_rel_l2_interior": rel(codes[:, m:-m, m:-m],
                                          codes_pt[:, m:-m, m:-m]),
             "loadavg": [load0, loadavg()]}
      if jax_fwd:
        res["jax_forward_section_ms_per_iter"] = (
            jax_fwd["results"][shape]["fast"]["ms_per_iter_min"])
      out["results"][shape] = res
      print(f"lcapt {shape}: theirs {theirs['ms_per_iter']:.1f} ms/it, ours "
            f"{ours['ms_per_iter_min']:.1f} ms/it, codes rel "
            f"{res['codes_rel_l2_whole']:.3f} / interior "
            f"{res['codes_rel_l2_interior']:.3f}", flush=True)
  return out


# ----------------------------------------------------------------------------


def meta() -> dict:
  info = {"date": datetime.datetime.now().isoformat(timespec="seconds"),
          "python": platform.python_version(), "cpus": os.cpu_count(),
          "XLA_FLAGS": os.environ.get("XLA_FLAGS", "")}
  try:
    with open("/proc/cpuinfo") as f:
      info["cpu"] = next(l.split(":", 1)[1].strip() for l in f
                         if l.startswith("model name"))
  except (OSError, StopIteration):
    info["cpu"] = platform.processor()
  jax, _ = _jax()
  info["jax"] = jax.__version__
  try:
    info["git"] = subprocess.run(
        ["git", "-C", REPO, "describe", "--always", "--dirty"],
        capture_output=True, text=True).stdout.strip()
  except OSError:
    pass
  return info


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--out", default=os.path.join(REPO, "results", "bench",
                                                "bench_lca.json"))
  p.add_argument("--data-dir", default=os.environ.get(
      "SCA_JAX_DATA_DIR", "/work/shared/data"))
  p.add_argument("--parts", default="forward,gradient,convergence,lcapt",
                 help="comma-separated sections to run")
  p.add_argument("--update", action="store_true",
                 help="keep the sections of an existing --out not run now")
  p.add_argument("--batch", type=int, default=64)
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--fwd-iters", type=int, default=100,
                 help="iterations per timed forward solve")
  p.add_argument("--grad-iters", type=int, default=500)
  p.add_argument("--grad-solvers", default="fista,lca",
                 help="comma-separated solvers to differentiate (lca, fista)")
  p.add_argument("--grad-modes", default=",".join(GRAD_MODES))
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
  # Internal: worker processes.
  p.add_argument("--worker", choices=("grad", "lcapt"), help=argparse.SUPPRESS)
  p.add_argument("--worker-mode", help=argparse.SUPPRESS)
  p.add_argument("--worker-solver", help=argparse.SUPPRESS)
  p.add_argument("--worker-in", help=argparse.SUPPRESS)
  p.add_argument("--worker-out", help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  args.parts = [s for s in args.parts.split(",") if s]
  args.grad_modes = [s for s in args.grad_modes.split(",") if s]
  args.grad_solvers = [s for s in args.grad_solvers.split(",") if s]
  for solver in args.grad_solvers:
    if solver not in ("lca", "fista"):
      p.error(f"unknown solver in --grad-solvers: {solver!r}")
  return args


def main(argv=None):
  args = parse_args(argv)
  if args.worker == "grad":
    return grad_worker(args)
  if args.worker == "lcapt":
    return lcapt_worker(args)
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  report = {}
  if args.update and os.path.exists(args.out):
    with open(args.out) as f:
      report = json.load(f)  # sections not run now are kept
  report.setdefault("meta_by_section", {
      s: report["meta"] for s in ("forward", "gradient", "convergence", "lcapt")
      if s in report and "meta" in report})
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
    report["forward"] = bench_forward(args)
    save()
  if "gradient" in args.parts:
    report["gradient"] = bench_gradient(args)
    save()
  if "convergence" in args.parts:
    report["convergence"] = bench_convergence(args)
    save()
  if "lcapt" in args.parts:
    report["lcapt"] = bench_lcapt(args, report.get("forward"))
  report["meta"]["loadavg_end"] = loadavg()
  save()
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
