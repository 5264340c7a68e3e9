"""LCA benchmarks: forward speed (fast against generic paths) and iterations
to get within 1% of the optimum (FISTA against plain LCA)."""

from __future__ import annotations

import json
import time

import numpy as np

from sca_jax.bench.common import (LAM, SHAPES, TAU, _jax, _max_or_none, _rate,
                                  _rel, compile_solve, loadavg, problem,
                                  time_call)


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
