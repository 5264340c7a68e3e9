"""Data parallelism over all local devices (and hosts), the pmap pattern in jit.

The batch is split along a 1-D device mesh axis `data`; parameters and optimiser
state are replicated. Under `jit` the loss is the mean over the global batch,
so XLA inserts the cross-device gradient all-reduce (the `pmean` of a pmap
step) itself, and batch norm sees the global batch: one step on N devices
equals the 1-device step on the same global batch (tested with 8 CPU devices).

Multi-host: when a cluster environment is detected (SLURM with several tasks,
or JAX_COORDINATOR_ADDRESS set), `initialize_distributed()` calls
`jax.distributed.initialize()`, which reads the coordinator, process count and
id from that environment; `jax.devices()` then spans every host.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def initialize_distributed() -> bool:
  """Starts multi-host JAX if the environment describes a cluster job."""
  multi_slurm = int(os.environ.get("SLURM_NTASKS", "1")) > 1
  if multi_slurm or os.environ.get("JAX_COORDINATOR_ADDRESS"):
    jax.distributed.initialize()
    return True
  return False


def data_mesh(num_devices: int | None = None) -> jax.sharding.Mesh:
  """A 1-D mesh over the first `num_devices` devices (default: all)."""
  devices = jax.devices()
  n = len(devices) if num_devices is None else num_devices
  if not 1 <= n <= len(devices):
    raise ValueError(f"num_devices={n}, but {len(devices)} devices exist")
  return jax.make_mesh((n,), (DATA_AXIS,), axis_types=(AxisType.Auto,),
                       devices=devices[:n])


def check_batch_size(batch_size: int, mesh: jax.sharding.Mesh,
                     field: str = "config.train.batch_size") -> None:
  n = mesh.devices.size
  if batch_size % n:
    raise ValueError(f"{field}={batch_size} must be a multiple of the {n} "
                     "devices it is split over")


def shard_batch(mesh: jax.sharding.Mesh, *arrays: np.ndarray) -> tuple[Any, ...]:
  """Places each array split along its first axis over the `data` axis."""
  sharding = NamedSharding(mesh, P(DATA_AXIS))
  return tuple(jax.device_put(a, sharding) for a in arrays)


def replicate(mesh: jax.sharding.Mesh, tree: Any) -> Any:
  """Places a full copy of every leaf on every device of the mesh."""
  return jax.device_put(tree, NamedSharding(mesh, P()))
