"""LCA benchmarks: one gradient per `LCAConfig.grad` mode, each in its own
process (time, peak memory), and agreement of the modes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from sca_jax.bench.common import (KERNEL, LAM, SCRIPT, TAU, _jax, _rel,
                                  loadavg, problem)
from sca_jax.bench.solver import reference_codes, solve_convergence

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
        cmd = [sys.executable, SCRIPT, "--worker", "grad",
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
