"""Shared inputs, timers and metadata of the LCA benchmarks.

Imports jax lazily (`_jax`): the lanl/lca-pytorch worker runs in an
interpreter without it.
"""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys
import time

import numpy as np

from sca_jax.machine import cpu_model  # noqa: F401  (re-exported)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))
SCRIPT = os.path.join(REPO, "scripts", "bench_lca.py")  # workers' entry point
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



def compile_solve(x, D, cfg, fast: bool):
  """AOT-compiled solve with the stride-1 fast paths on or off."""
  jax, lca = _jax()
  lca.ops._STRIDE1_FAST_PATHS = fast  # pylint: disable=protected-access
  jax.clear_caches()  # the switch is read at trace time
  try:
    fn = jax.jit(lambda x, D: lca.solve(x, D, cfg).codes_BHWF)
    return fn.lower(x, D).compile()
  finally:
    lca.ops._STRIDE1_FAST_PATHS = True  # pylint: disable=protected-access
    jax.clear_caches()


def time_call(fn, *args) -> float:
  start = time.perf_counter()
  fn(*args).block_until_ready()
  return time.perf_counter() - start


def _rate(seconds: list[float], n: int) -> dict:
  best, med = min(seconds), float(np.median(seconds))
  return {"ms_per_iter_min": 1e3 * best / n, "ms_per_iter_median": 1e3 * med / n,
          "iters_per_s": n / best, "seconds": seconds}



def meta() -> dict:
  info = {"date": datetime.datetime.now().isoformat(timespec="seconds"),
          "python": platform.python_version(), "cpus": os.cpu_count(),
          "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
          "GLIBC_TUNABLES": os.environ.get("GLIBC_TUNABLES", ""),
          "cpu": cpu_model()}
  jax, _ = _jax()
  info["jax"] = jax.__version__
  try:
    info["git"] = subprocess.run(
        ["git", "-C", REPO, "describe", "--always", "--dirty"],
        capture_output=True, text=True).stdout.strip()
  except OSError:
    pass
  return info


def _rel(a, b) -> float:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _max_or_none(values):
  return None if any(v is None for v in values) else max(values)
