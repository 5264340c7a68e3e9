"""LCA benchmark against lanl/lca-pytorch (`LCAConv2D`) on the same inputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from sca_jax.bench.common import (KERNEL, LAM, SCRIPT, SHAPES, TAU, _jax,
                                  _rate, compile_solve, loadavg, problem,
                                  time_call)


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


def bench_lcapt(args, jax_fwd: dict | None,
                convergence: dict | None = None) -> dict | str:
  """Per iteration and (with `convergence`, the iterations each solver needs
  to get within 1% of the optimum) time to solution, ours against lcapt's."""
  if not args.lcapt:
    return "skipped"
  jax, lca = _jax()
  out = {"lcapt": os.path.abspath(args.lcapt), "torch_python":
         args.torch_python, "code_iters": args.code_iters,
         "interior_margin": KERNEL - 1,
         "note": "both run the same normalised input and dictionary; lcapt "
                 "with its own normalisation off. Interior: codes at least "
                 "kernel-1 pixels from the border. JAX ms/iter re-timed "
                 "right after lcapt's, fast path, min over repeats; "
                 "jax_conv_auto: the same LCA with decode/encode through the "
                 "FFT (conv='auto', where it takes the FFT: 16->28).",
         "results": {}}
  with tempfile.TemporaryDirectory() as tmp:
    for shape in SHAPES:
      x, D = problem(shape, args.data_dir, args.batch)
      np.savez(os.path.join(tmp, "in.npz"), x=np.asarray(x), D=np.asarray(D))
      cmd = [args.torch_python, SCRIPT, "--worker",
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

      def timed(**fields):
        fn = compile_solve(x, D, lca.LCAConfig(
            lam=LAM, num_iters=n, normalize_input=False, **fields), True)
        fn(x, D).block_until_ready()
        return _rate([time_call(fn, x, D) for _ in range(args.repeats)], n)

      ours = timed(tau=TAU)
      ours_fft = (timed(tau=TAU, conv="auto")  # what the faithful grid runs
                  if lca.spectral.worth_it(D.shape, 1) else None)
      ours_fista = timed(solver="fista")
      codes = np.asarray(lca.solve(x, D, lca.LCAConfig(
          lam=LAM, tau=TAU, num_iters=args.code_iters,
          normalize_input=False)).codes_BHWF)
      m = KERNEL - 1
      rel = lambda a, b: float(np.linalg.norm(a - b) / np.linalg.norm(b))
      res = {"lcapt": theirs, "jax": ours, "jax_fista": ours_fista,
             "speed_ratio_jax_over_lcapt": (theirs["ms_per_iter"] /
                                            ours["ms_per_iter_min"]),
             "codes_rel_l2_whole": rel(codes, codes_pt),
             "codes_rel_l2_interior": rel(codes[:, m:-m, m:-m],
                                          codes_pt[:, m:-m, m:-m]),
             "loadavg": [load0, loadavg()]}
      if ours_fft:
        res["jax_conv_auto"] = ours_fft
        res["speed_ratio_jax_conv_auto_over_lcapt"] = (
            theirs["ms_per_iter"] / ours_fft["ms_per_iter_min"])
      if jax_fwd:
        res["jax_forward_section_ms_per_iter"] = (
            jax_fwd["results"][shape]["fast"]["ms_per_iter_min"])
      if convergence:
        res["time_to_solution"] = time_to_solution(
            convergence["results"][shape], theirs, ours_fista)
      out["results"][shape] = res
      print(f"lcapt {shape}: theirs {theirs['ms_per_iter']:.1f} ms/it, ours "
            f"{ours['ms_per_iter_min']:.1f} ms/it"
            + (f" (conv=auto {ours_fft['ms_per_iter_min']:.1f})"
               if ours_fft else "") + ", codes rel "
            f"{res['codes_rel_l2_whole']:.3f} / interior "
            f"{res['codes_rel_l2_interior']:.3f}", flush=True)
  return out


def time_to_solution(conv: dict, theirs: dict, ours_fista: dict) -> dict:
  """Seconds to get the batch objective within 1% of the optimum: each
  library's default solver (lcapt: LCA dynamics, here at tau 100; ours:
  FISTA) times the iterations it needs, from the convergence section (our
  LCA runs the same dynamics as lcapt: see the codes' agreement)."""
  n_lca, n_fista = conv["lca_iters_to_1pct"], conv["fista_iters_to_1pct"]
  if n_lca is None or n_fista is None:
    return {"error": "an iteration count to 1% is missing"}
  lcapt_s = n_lca * theirs["ms_per_iter"] / 1e3
  ours_s = n_fista * ours_fista["ms_per_iter_min"] / 1e3
  return {"lcapt_iters": n_lca, "jax_fista_iters": n_fista,
          "lcapt_seconds": lcapt_s, "jax_seconds": ours_s,
          "speed_ratio_jax_over_lcapt": lcapt_s / ours_s}
