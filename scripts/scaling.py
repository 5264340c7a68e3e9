"""Data-parallel scaling: training throughput of the SCA target on 1, 2, 4, 8 devices.

  python scripts/scaling.py --out results/scaling.json [--per_device_batch 32]

Weak scaling: each device keeps `per_device_batch` images, so the global batch
grows with the device count. On a multi-GPU machine this is the pmap scaling
experiment; on a CPU with `XLA_FLAGS=--xla_force_host_platform_device_count=8`
it only checks the mechanics (8 virtual devices share the same cores). With
one device visible it says so on stderr, and how to get more, before
measuring that one.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from sca_jax import config_lib, parallel, train
from sca_jax.models import build_model


def one_device_warning(devices: list) -> str | None:
  """What to do when only one device is visible (None with more)."""
  if len(devices) > 1:
    return None
  return (
      f"warning: one device visible ({devices[0].platform}): this measures "
      "no scaling. More devices: on CPU, run with "
      "XLA_FLAGS=--xla_force_host_platform_device_count=8 (virtual devices "
      "sharing the same cores: checks the mechanics, not the speed-up); on "
      "GPUs or TPUs, install jax for them (pip install -e \".[gpu]\" or "
      "\".[tpu]\") and make them visible (CUDA_VISIBLE_DEVICES unset or "
      "listing several GPUs; python -c 'import jax; print(jax.devices())' "
      "shows what JAX sees); several hosts: run one process per host under "
      "SLURM or with JAX_COORDINATOR_ADDRESS (sca_jax.parallel).")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--out", default="results/scaling.json")
  parser.add_argument("--per_device_batch", type=int, default=32)
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--num_iters", type=int, default=30)
  parser.add_argument("--strides", default="2,2")
  args = parser.parse_args()
  parallel.initialize_distributed()
  warning = one_device_warning(jax.devices())
  if warning:
    print(warning, file=sys.stderr, flush=True)

  cfg = config_lib.get_config(None, name="sca", dataset="mnist")
  cfg.defense.num_iters = args.num_iters
  cfg.defense.strides = tuple(int(s) for s in args.strides.split(","))
  model = build_model(cfg.defense, (28, 28, 1), 10, jax.random.key(0))
  trainer = train.Trainer(model, cfg.defense,
                          train.make_optimizer(cfg.train, 100))
  rows = []
  counts = [n for n in (1, 2, 4, 8, 16) if n <= len(jax.devices())]
  for n in counts:
    mesh = parallel.data_mesh(n)
    batch = args.per_device_batch * n
    rng = np.random.default_rng(0)
    x, y = parallel.shard_batch(
        mesh, rng.uniform(size=(batch, 28, 28, 1)).astype(np.float32),
        rng.integers(0, 10, batch).astype(np.int32))
    state = parallel.replicate(mesh, jax.tree.map(jnp.copy,
                                                  trainer.init_state))
    state, m = trainer.train_step(state, x, y, jax.random.key(0))  # compile
    jax.block_until_ready(m)
    t0 = time.perf_counter()
    for step in range(args.steps):
      state, m = trainer.train_step(state, x, y, jax.random.key(step))
    jax.block_until_ready(m)
    dt = (time.perf_counter() - t0) / args.steps
    rows.append({"devices": n, "global_batch": batch, "step_s": dt,
                 "images_per_s": batch / dt})
    print(rows[-1], flush=True)
  base = rows[0]["images_per_s"]
  for r in rows:
    r["speedup"] = r["images_per_s"] / base
    r["efficiency"] = r["speedup"] / r["devices"]
  out = Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps({
      "device_kind": jax.devices()[0].device_kind,
      "platform": platform.platform(), "jax": jax.__version__,
      "settings": vars(args), "rows": rows}, indent=2))
  print(f"wrote {out}")


if __name__ == "__main__":
  main()
