"""Orbax checkpoints of any pytree, restored against a template of the same run.

The pytree is stored as its flat list of leaves: the template (a freshly built
train state of the same config) supplies the structure on restore, so nothing
but arrays is ever written or read, and a checkpoint from another config is
refused with a clear message instead of being half-loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import jax
import numpy as np
import orbax.checkpoint as ocp

T = TypeVar("T")


class CheckpointError(RuntimeError):
  """A checkpoint exists but cannot be used: corrupt, or from another config."""


def _leaves(tree: Any) -> dict[str, Any]:
  return {f"{i:05d}": leaf for i, leaf in enumerate(jax.tree.leaves(tree))}


class Checkpointer:
  """Saves every call to `save`, keeps the newest `max_to_keep` steps."""

  def __init__(self, directory: Path, max_to_keep: int = 2):
    self.directory = Path(directory).absolute()
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep,
                                             create=True))

  def save(self, step: int, tree: Any) -> None:
    self.manager.save(step, args=ocp.args.StandardSave(_leaves(tree)))

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def restore_latest(self, template: T) -> T | None:
    """The newest checkpoint in the structure of `template`, or None if none."""
    step = self.manager.latest_step()
    if step is None:
      return None
    leaves, treedef = jax.tree.flatten(template)
    target = {k: jax.ShapeDtypeStruct(np.shape(v), np.asarray(v).dtype
                                      if not hasattr(v, "dtype") else v.dtype)
              for k, v in _leaves(template).items()}
    where = self.directory / str(step)
    try:
      restored = self.manager.restore(step,
                                      args=ocp.args.StandardRestore(target))
    except Exception as e:  # orbax raises many types for damaged files
      raise CheckpointError(
          f"checkpoint {where} cannot be restored ({type(e).__name__}: "
          f"{str(e)[:300]}). It is corrupt or was written by a different "
          "config. It was left untouched: move it away, or pass another "
          "--workdir.") from None
    if len(restored) != len(leaves):
      raise CheckpointError(f"checkpoint {where} has {len(restored)} arrays, "
                            f"this config needs {len(leaves)}")
    return jax.tree.unflatten(treedef, [restored[k] for k in sorted(restored)])

  def close(self) -> None:
    self.manager.close()
