"""Whole training step of the stride-1 SCA target against its ideal time.

The target is the default SCA config at stride 1 (paper architecture: LCA
1->16 k5, batch norm, LCA 16->28 k5, batch norm, linear head; the default
solver and iteration count) built through `models.build_model` and trained
by `train.Trainer`. The ideal step is `3 x forward FLOPs / peak`: the sparse
layers' forward work (one decode and one encode per solver iteration per
layer) plus the two products of each backward convolution, at a float32
matmul peak measured in the same process. The breakdown is a per-HLO-op
profile of the same step (`sca_jax.bench.profile`): timing parts of the step
in isolation misattributed it (the stand-alone 16->28 solve gradient took
longer than the whole step). `compare_solver_settings` times variants of the
sparse layers' `LCAConfig` (e.g. implicit gradients) alternately in one
process, with their gradients' agreement with the default's.
"""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from sca_jax import config_lib, machine, train
from sca_jax.bench import profile
from sca_jax.bench.common import SCRIPT, cpu_model
from sca_jax.models import build_model


def host() -> dict:
  """CPU model, core count and load average: kept beside every timing."""
  return {"cpu_model": cpu_model(), "cpus": os.cpu_count(),
          "loadavg": list(os.getloadavg()), "jax": jax.__version__,
          "xla_flags": os.environ.get("XLA_FLAGS", ""),
          "glibc_tunables": os.environ.get("GLIBC_TUNABLES", "")}


def min_time(fn: Callable[[], object], repeats: int) -> list[float]:
  """Seconds of `repeats` calls of `fn` (after one warm-up call)."""
  jax.block_until_ready(fn())
  out = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    out.append(time.perf_counter() - start)
  return out


def matmul_peak(n: int = 2048, repeats: int = 5) -> float:
  """float32 matmul rate in FLOP/s (best of `repeats` n x n x n products)."""
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
  mm = jax.jit(jnp.matmul)
  return 2.0 * n**3 / min(min_time(lambda: mm(a, b), repeats))


def stride1_sca_config(batch: int = 64):
  """The default SCA config at stride 1 (solver and iterations as default)."""
  c = config_lib.get_config(None, "sca", "mnist")
  c.defense.strides = (1, 1)
  c.train.batch_size = batch
  return c


def sparse_flops(model, image_shape, num_iters: int, batch: int) -> dict:
  """Forward FLOPs of the sparse layers per step: per layer and iteration one
  decode and one encode, each 2 B H' W' K^2 C F multiply-adds."""
  h, w, _ = image_shape
  out = {}
  for name, layer in model.sparse_layers():
    k, _, c_in, f = layer.dictionary.get_value().shape
    s = layer.cfg.stride
    h, w = -(-h // s), -(-w // s)
    per_conv = 2.0 * batch * h * w * k * k * c_in * f
    out[name] = {"shape": f"{c_in}->{f}", "per_iteration": 2 * per_conv,
                 "per_step": 2 * per_conv * num_iters}
  return out


def _setup(batch: int, **lca_overrides):
  """(trainer, images, labels, key) of the stride-1 SCA target, the sparse
  layers' `LCAConfig` fields replaced by `lca_overrides`."""
  cfg = stride1_sca_config(batch)
  model = build_model(cfg.defense, (28, 28, 1), 10, jax.random.key(0))
  for _, layer in model.sparse_layers():
    layer.cfg = dataclasses.replace(layer.cfg, **lca_overrides)
  trainer = train.Trainer(model, cfg.defense,
                          train.make_optimizer(cfg.train, 1000))
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.random((batch, 28, 28, 1), np.float32))
  y = jnp.asarray(rng.integers(0, 10, batch))
  return trainer, x, y, jax.random.key(0)


def bench_train_step(batch: int = 64, repeats: int = 5,
                     breakdown: bool = True, conv: str = "direct") -> dict:
  """Seconds per training step of the stride-1 SCA target, its ideal, and
  (with `breakdown`) a per-op profile of one step. `conv` is the sparse
  layers' `LCAConfig.conv`; the ideal counts direct-convolution FLOPs in
  every case (what the FFT saves shows as a smaller ratio)."""
  cfg = stride1_sca_config(batch)
  trainer, x, y, key = _setup(batch, conv=conv)
  model = trainer.model(trainer.init_state)
  state = [trainer.init_state]

  def step():
    state[0], metrics = trainer.train_step(state[0], x, y, key)
    return metrics

  peak = matmul_peak()
  seconds = min_time(step, repeats)
  flops = sparse_flops(model, (28, 28, 1), int(cfg.defense.num_iters), batch)
  fwd = sum(v["per_step"] for v in flops.values())
  ideal = 3.0 * fwd / peak
  report = {
      "setting": {"defense": "sca", "strides": [1, 1], "batch": batch,
                  "features": list(cfg.defense.features),
                  "kernel": int(cfg.defense.kernel),
                  "solver": cfg.defense.solver, "conv": conv,
                  "num_iters": int(cfg.defense.num_iters),
                  "lam": float(cfg.defense.lam)},
      "seconds_per_step": min(seconds), "seconds": seconds,
      "sparse_forward_flops": {"total": fwd, "layers": flops},
      "matmul_peak_flops": peak,
      "ideal_seconds": ideal, "ratio_to_ideal": min(seconds) / ideal,
      "host": host()}
  if breakdown:
    # `trainer.train_step` donates its state; this jit does not.
    report["profile"] = profile.profile(
        jax.jit(trainer._train_step),  # pylint: disable=protected-access
        (state[0], x, y, key))
  report["host_after"] = host()
  return report


def _relative_errors(ref, other) -> list[float]:
  return [float(jnp.linalg.norm(a - b) / jnp.maximum(jnp.linalg.norm(a),
                                                      1e-30))
          for a, b in zip(jax.tree.leaves(ref), jax.tree.leaves(other))]


def compare_solver_settings(variants: dict[str, dict], batch: int = 64,
                            repeats: int = 4) -> dict:
  """A/B of the training step under `LCAConfig` overrides (name -> fields;
  the first is the reference), all compiled in this process and timed
  alternately; with each variant's loss gradient at the initial state
  against the reference's (relative L2 error per parameter array, named by
  its path)."""
  runs, grads = {}, {}
  for name, overrides in variants.items():
    trainer, x, y, key = _setup(batch, **overrides)
    state = trainer.init_state
    trainable = trainer._trainable(state.params, state.dicts)  # pylint: disable=protected-access
    grads[name] = jax.jit(jax.grad(lambda t, s=state, tr=trainer: tr._loss_fn(  # pylint: disable=protected-access
        s, t, x, y, key)[0]))(trainable)
    state, metrics = trainer.train_step(jax.tree.map(jnp.copy, state), x, y,
                                        key)
    jax.block_until_ready(metrics)  # compiled
    runs[name] = [trainer, state, []]
  ref = next(iter(variants))
  paths = [jax.tree_util.keystr(p) for p, _ in
           jax.tree_util.tree_leaves_with_path(grads[ref])]
  load0 = host()
  for _ in range(repeats):
    for run in runs.values():
      start = time.perf_counter()
      run[1], metrics = run[0].train_step(run[1], x, y, key)
      jax.block_until_ready(metrics)
      run[2].append(time.perf_counter() - start)
  out = {"reference": ref, "variants": {}}
  for name, run in runs.items():
    out["variants"][name] = {
        "lca_overrides": variants[name], "seconds": run[2],
        "min": min(run[2]), "speedup_over_reference": min(runs[ref][2]) /
        min(run[2]),
        "grad_rel_error": dict(zip(paths, _relative_errors(grads[ref],
                                                           grads[name])))}
  out["host"], out["host_after"] = load0, host()
  return out


# train_step_malloc: the default C library settings against malloc's huge
# pages (`machine.malloc_env`); each a fresh process, since glibc reads its
# tunables at start-up. An explicit "" for GLIBC_TUNABLES is the default.
MALLOC_SETTINGS = {"default": {"GLIBC_TUNABLES": ""},
                   "hugetlb": {"GLIBC_TUNABLES": machine.HUGEPAGE_TUNABLE}}


def steal_seconds() -> float | None:
  """CPU time the hypervisor gave to other guests (all cores, /proc/stat),
  None off Linux: on a shared VM it slows a run without showing in the
  load average."""
  try:
    with open("/proc/stat", encoding="utf-8") as f:
      fields = f.readline().split()
    return int(fields[8]) / os.sysconf("SC_CLK_TCK")
  except (OSError, IndexError, ValueError):
    return None


def step_worker(out_path: str, batch: int, repeats: int, conv: str) -> None:
  """Times `repeats` training steps of the stride-1 SCA target in this
  process (after one compiling step) with the minor page faults and system
  CPU time they cost (getrusage) and the machine's steal time, and writes
  them to `out_path` as JSON."""
  trainer, x, y, key = _setup(batch, conv=conv)
  state = trainer.init_state
  state, metrics = trainer.train_step(state, x, y, key)
  jax.block_until_ready(metrics)
  seconds = []
  steal0 = steal_seconds()
  usage0 = resource.getrusage(resource.RUSAGE_SELF)
  for _ in range(repeats):
    start = time.perf_counter()
    state, metrics = trainer.train_step(state, x, y, key)
    jax.block_until_ready(metrics)
    seconds.append(time.perf_counter() - start)
  usage1 = resource.getrusage(resource.RUSAGE_SELF)
  steal1 = steal_seconds()
  with open(out_path, "w") as f:
    json.dump({"seconds": seconds,
               "minor_faults_per_step": (usage1.ru_minflt - usage0.ru_minflt)
               / repeats,
               "sys_seconds_per_step": (usage1.ru_stime - usage0.ru_stime)
               / repeats,
               "steal_seconds": (None if steal0 is None
                                 else steal1 - steal0),
               "host": host()}, f)


def compare_malloc_settings(settings: dict[str, dict[str, str]],
                            batch: int = 64, repeats: int = 6,
                            rounds: int = 3, conv: str = "auto",
                            workdir: str | None = None) -> dict:
  """A/B of the training step under environment settings (name -> variables
  for a fresh process; the first is the reference): `rounds` rounds, each
  running one process per setting in turn, so that load drifts hit all
  alike. Per setting: every process's step times, page faults and system
  time, and the speed-up of the best and of the median step."""
  workdir = workdir or tempfile.gettempdir()
  runs: dict[str, list[dict]] = {name: [] for name in settings}
  for r in range(rounds):
    for name, env_vars in settings.items():
      out = os.path.join(workdir, f"bench_step_{name}_{r}_{os.getpid()}.json")
      cmd = [sys.executable, SCRIPT, "--worker", "step", "--worker-out", out,
             "--batch", str(batch), "--repeats", str(repeats), "--conv", conv]
      print(f"train_step_malloc round {r + 1}/{rounds}: {name}", flush=True)
      subprocess.run(cmd, env=dict(os.environ, **env_vars), check=True)
      with open(out) as f:
        runs[name].append(json.load(f))
      os.remove(out)
  ref = next(iter(settings))

  def pooled(name):
    return [t for run in runs[name] for t in run["seconds"]]

  out = {"reference": ref, "setting": {"batch": batch, "repeats": repeats,
                                       "rounds": rounds, "conv": conv},
         "variants": {}}
  for name in settings:
    times = pooled(name)
    out["variants"][name] = {
        "env": settings[name], "runs": runs[name],
        "min": min(times), "median": float(np.median(times)),
        "speedup_min": min(pooled(ref)) / min(times),
        "speedup_median": float(np.median(pooled(ref)) / np.median(times)),
        "minor_faults_per_step": float(np.mean(
            [run["minor_faults_per_step"] for run in runs[name]])),
        "sys_seconds_per_step": float(np.mean(
            [run["sys_seconds_per_step"] for run in runs[name]]))}
  out["host_after"] = host()
  return out
