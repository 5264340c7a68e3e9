"""Whole training step of the stride-1 SCA target against its ideal time.

The target is the default SCA config at stride 1 (paper architecture: LCA
1->16 k5, batch norm, LCA 16->28 k5, batch norm, linear head; the default
solver and iteration count) built through `models.build_model` and trained
by `train.Trainer`. The ideal step is `3 x forward FLOPs / peak`: the sparse
layers' forward work (one decode and one encode per solver iteration per
layer) plus the two products of each backward convolution, at a float32
matmul peak measured in the same process. The breakdown times the parts
that make up a step (forward only; the 16->28 solve alone, forward and
with its gradient) so that the ratio can be attributed.
"""

from __future__ import annotations

import os
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from sca_jax import config_lib, lca, train
from sca_jax.bench.common import cpu_model
from sca_jax.models import build_model


def host() -> dict:
  """CPU model, core count and load average: kept beside every timing."""
  return {"cpu_model": cpu_model(), "cpus": os.cpu_count(),
          "loadavg": list(os.getloadavg()), "jax": jax.__version__,
          "xla_flags": os.environ.get("XLA_FLAGS", "")}


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


def bench_train_step(batch: int = 64, repeats: int = 5,
                     breakdown: bool = True) -> dict:
  """Seconds per training step of the stride-1 SCA target, its ideal, and
  (with `breakdown`) the time of its parts."""
  cfg = stride1_sca_config(batch)
  image_shape, num_classes = (28, 28, 1), 10
  model = build_model(cfg.defense, image_shape, num_classes,
                      jax.random.key(0))
  trainer = train.Trainer(model, cfg.defense,
                          train.make_optimizer(cfg.train, 1000))
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.random((batch, *image_shape), np.float32))
  y = jnp.asarray(rng.integers(0, num_classes, batch))
  key = jax.random.key(0)

  state = [trainer.init_state]

  def step():
    state[0], metrics = trainer.train_step(state[0], x, y, key)
    return metrics

  peak = matmul_peak()
  seconds = min_time(step, repeats)
  flops = sparse_flops(model, image_shape, int(cfg.defense.num_iters), batch)
  fwd = sum(v["per_step"] for v in flops.values())
  ideal = 3.0 * fwd / peak
  report = {
      "setting": {"defense": "sca", "strides": [1, 1], "batch": batch,
                  "features": list(cfg.defense.features),
                  "kernel": int(cfg.defense.kernel),
                  "solver": cfg.defense.solver,
                  "num_iters": int(cfg.defense.num_iters),
                  "lam": float(cfg.defense.lam)},
      "seconds_per_step": min(seconds), "seconds": seconds,
      "sparse_forward_flops": {"total": fwd, "layers": flops},
      "matmul_peak_flops": peak,
      "ideal_seconds": ideal, "ratio_to_ideal": min(seconds) / ideal,
      "host": host()}
  if breakdown:
    report["breakdown"] = _breakdown(trainer, state[0], x, repeats)
  report["host_after"] = host()
  return report


def _breakdown(trainer, state, x, repeats: int) -> dict:
  """Seconds of the step's parts: the model's forward alone, and the 16->28
  solve alone, forward and with the gradient of its summed codes."""
  fwd = jax.jit(lambda s, x: trainer.model(s)(x, train=True)[0])
  model = trainer.model(state)  # the initial model's arrays were donated
  _, reps = model(x, train=True)
  name, layer = model.sparse_layers()[-1]
  x2 = reps[f"{name}_input"]
  D2 = layer.dictionary.get_value()
  cfg = layer.cfg
  solve_fwd = jax.jit(lambda x, D: lca.solve(x, D, cfg).codes_BHWF)
  solve_grad = jax.jit(jax.grad(
      lambda x, D: jnp.sum(lca.solve(x, D, cfg).codes_BHWF), argnums=(0, 1)))
  return {
      "forward_seconds": min(min_time(lambda: fwd(state, x), repeats)),
      "last_sparse_layer": name,
      "last_sparse_forward_seconds": min(
          min_time(lambda: solve_fwd(x2, D2), repeats)),
      "last_sparse_grad_seconds": min(
          min_time(lambda: solve_grad(x2, D2), repeats))}


def _dictionary_grad_im2col(x_BHWC, g_BHWF, kernel, stride):
  """The dictionary gradient before issue 16: im2col patches and one einsum."""
  pads = [lca.ops._pads(n, kernel, stride)[0] for n in x_BHWC.shape[1:3]]  # pylint: disable=protected-access
  patches = jax.lax.conv_general_dilated_patches(
      x_BHWC, (kernel, kernel), (stride, stride), pads,
      dimension_numbers=("NHWC", "HWIO", "NHWC"))
  c, f = x_BHWC.shape[-1], g_BHWF.shape[-1]
  grad_CKKF = jnp.einsum("bhwp,bhwf->pf", patches, g_BHWF,
                         preferred_element_type=jnp.float32)
  return grad_CKKF.reshape(c, kernel, kernel, f).transpose(1, 2, 0, 3)


def compare_dictionary_gradients(batch: int = 64, repeats: int = 6) -> dict:
  """A/B of the training step: im2col against the current dictionary
  gradient, both compiled in this process, timed alternately."""
  cfg = stride1_sca_config(batch)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.random((batch, 28, 28, 1), np.float32))
  y = jnp.asarray(rng.integers(0, 10, batch))
  key = jax.random.key(0)
  current = lca.ops._dictionary_grad  # pylint: disable=protected-access
  runs = {}
  try:
    for name, fn in (("im2col", _dictionary_grad_im2col),
                     ("current", current)):
      lca.ops._dictionary_grad = fn  # read at trace time
      jax.clear_caches()
      model = build_model(cfg.defense, (28, 28, 1), 10, jax.random.key(0))
      trainer = train.Trainer(model, cfg.defense,
                              train.make_optimizer(cfg.train, 1000))
      state, metrics = trainer.train_step(trainer.init_state, x, y, key)
      jax.block_until_ready(metrics)  # compiled
      runs[name] = [trainer, state, []]
  finally:
    lca.ops._dictionary_grad = current
  load0 = host()
  for _ in range(repeats):
    for run in runs.values():
      start = time.perf_counter()
      run[1], metrics = run[0].train_step(run[1], x, y, key)
      jax.block_until_ready(metrics)
      run[2].append(time.perf_counter() - start)
  out = {k: {"seconds": r[2], "min": min(r[2])} for k, r in runs.items()}
  out["speedup_current_over_im2col"] = (out["im2col"]["min"] /
                                        out["current"]["min"])
  out["host"], out["host_after"] = load0, host()
  return out
