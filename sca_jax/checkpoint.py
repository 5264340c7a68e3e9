"""Orbax checkpoints of any pytree, each stamped with its experiment.

The pytree is stored as its flat list of leaves: the template (a freshly built
train state of the same config) supplies the structure on restore, so nothing
but arrays is ever written or read. Beside the arrays every step stores the
experiment's fingerprint (`<step>/fingerprint/metadata`, plain JSON, written in
the same atomic orbax commit), so a checkpoint is only ever resumed by the
experiment that wrote it, whatever else in the workdir is missing.

Only finite state is written (`all_finite`). A step that cannot be read is
moved to `<workdir>/unreadable_checkpoints/` with one line saying why, and the
newest intact step is used instead. A run whose loss or state stops being
finite sets its checkpoints, metrics and config aside (`set_aside_diverged`)
so the same workdir can be rerun with other settings.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

T = TypeVar("T")
UNREADABLE_DIR = "unreadable_checkpoints"
DIVERGED_DIR = "diverged"


class CheckpointError(RuntimeError):
  """Checkpoints exist but cannot be used: none intact, or another experiment's."""


class TrainingDiverged(FloatingPointError):
  """The loss or the train state stopped being finite; the run was set aside."""


def _leaves(tree: Any) -> dict[str, Any]:
  return {f"{i:05d}": leaf for i, leaf in enumerate(jax.tree.leaves(tree))}


@jax.jit
def _finite(leaves: list[jax.Array]) -> jax.Array:
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves] +
                           [jnp.array(True)]))


def all_finite(tree: Any) -> bool:
  """True when no floating-point leaf of `tree` holds NaN or inf."""
  floats = [x for x in jax.tree.leaves(tree)
            if jnp.issubdtype(jnp.result_type(x), jnp.inexact)]
  return bool(_finite(floats))


@contextlib.contextmanager
def _quiet_orbax():
  """Orbax logs damaged files at ERROR as it meets them (from its threads
  too); an unreadable step is reported in one line of our own instead."""
  absl_logger = logging.getLogger("absl")
  level = absl_logger.level
  absl_logger.setLevel(logging.CRITICAL)
  try:
    yield
  finally:
    absl_logger.setLevel(level)


def _short(e: BaseException) -> str:
  first = (str(e).strip().splitlines() or [""])[0]
  return f"{type(e).__name__}: {first[:200]}"


def _new_folder(parent: Path, stem: str) -> Path:
  """`parent/<stem>-<time>`, never an existing one (two in one second)."""
  base = f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}".lstrip("-")
  path, i = parent / base, 1
  while path.exists():
    path, i = parent / f"{base}.{i}", i + 1
  return path


def read_fingerprints(directory: Path) -> dict[int, Any]:
  """{step: stored fingerprint, or None where it cannot be read}, no orbax.

  Read before any data is loaded, to refuse another experiment's workdir.
  """
  found = {}
  directory = Path(directory)
  if not directory.is_dir():
    return found
  for step_dir in directory.iterdir():
    if not step_dir.name.isdigit():  # orbax's unfinished saves are *.tmp*
      continue
    try:
      found[int(step_dir.name)] = json.loads(
          (step_dir / "fingerprint" / "metadata").read_text())
    except (OSError, ValueError):
      found[int(step_dir.name)] = None
  return found


class Checkpointer:
  """Saves every call to `save`, keeps the newest `max_to_keep` steps.

  `fingerprint`: JSON-able description of the experiment, stored with every
  step and compared on restore.
  """

  def __init__(self, directory: Path, max_to_keep: int = 2,
               fingerprint: Any = None,
               log: Callable[[str], None] = print):
    self.directory = Path(directory).absolute()
    self.fingerprint = json.loads(json.dumps(fingerprint, default=str))
    self.log = log
    self.max_to_keep = max_to_keep
    self.manager = self._open()

  def _open(self) -> ocp.CheckpointManager:
    with _quiet_orbax():  # it reads every step's metadata here
      return ocp.CheckpointManager(
          self.directory,
          options=ocp.CheckpointManagerOptions(max_to_keep=self.max_to_keep,
                                               create=True))

  def save(self, step: int, tree: Any) -> None:
    """Writes `tree` at `step`; refuses state that is not finite."""
    if not all_finite(tree):
      raise FloatingPointError(f"refusing to checkpoint step {step}: the "
                               "state holds NaN or inf")
    self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(_leaves(tree)),
        fingerprint=ocp.args.JsonSave(self.fingerprint)))

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def _set_aside(self, step: int, why: str) -> Path:
    dest = _new_folder(self.directory.parent / UNREADABLE_DIR, str(step))
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(self.directory / str(step), dest)
    self.log(f"checkpoint step {step} is unreadable ({why}); moved to {dest}")
    return dest

  def _restore(self, step: int, template_leaves: dict[str, Any]) -> list[Any]:
    """The arrays of `step`; raises CheckpointError for a foreign one."""
    stored = self.manager.restore(step, args=ocp.args.Composite(
        fingerprint=ocp.args.JsonRestore())).fingerprint
    if stored != self.fingerprint:
      raise CheckpointError(
          f"{self.directory / str(step)} belongs to a different experiment "
          f"(its stored fingerprint differs from this config's); use another "
          "--workdir. Nothing was changed.")
    target = {k: jax.ShapeDtypeStruct(np.shape(v), jnp.result_type(v))
              for k, v in template_leaves.items()}
    restored = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target))).state
    if len(restored) != len(template_leaves):
      raise ValueError(f"{len(restored)} arrays, this config needs "
                       f"{len(template_leaves)}")
    return [restored[k] for k in sorted(restored)]

  def restore_latest(self, template: T) -> T | None:
    """The newest intact checkpoint in the structure of `template`.

    Returns None when no step exists. A step that cannot be read is moved
    aside (one line says which and why) and the next older one is tried.

    Raises:
      CheckpointError: a step of another experiment (nothing is moved), or
        steps existed but none could be read.
    """
    treedef = jax.tree.structure(template)
    template_leaves = _leaves(template)
    moved = []
    for step in sorted(self.manager.all_steps(), reverse=True):
      try:
        with _quiet_orbax():
          leaves = self._restore(step, template_leaves)
      except CheckpointError:
        raise
      except Exception as e:  # orbax raises many types for damaged files
        moved.append(self._set_aside(step, _short(e)))
        continue
      if moved:
        self.log(f"resuming from step {step}, the newest intact checkpoint")
      self.manager.close()
      self.manager = self._open()  # forget the steps moved aside
      return jax.tree.unflatten(treedef, leaves)
    if moved:
      self.manager.close()
      self.manager = self._open()
      raise CheckpointError(
          f"no intact checkpoint in {self.directory}: every step was "
          f"unreadable and moved to {moved[0].parent}. Rerun to train from "
          "scratch in this workdir.")
    return None

  def close(self) -> None:
    self.manager.close()


def truncate_metrics(path: Path, last_step: int) -> None:
  """Keeps the JSON lines of `path` with step <= `last_step`, each step once.

  Called when training (re)starts at `last_step`: lines logged after the
  checkpoint it resumes from are logged again by this run; a line cut by a
  kill is dropped.
  """
  if not path.exists():
    return
  kept: dict[int, str] = {}
  for line in path.read_text().splitlines():
    try:
      step = int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
      continue
    if step <= last_step:
      kept[step] = line
  tmp = path.with_suffix(path.suffix + ".tmp")
  tmp.write_text("".join(kept[s] + "\n" for s in sorted(kept)))
  os.replace(tmp, path)


def stop_diverged(workdir: Path, ckpt: Checkpointer, what: str
                  ) -> TrainingDiverged:
  """Moves a diverged run's checkpoints, metrics and config.json aside.

  Returns the error to raise: it says `what` went wrong, where the files went
  and which checkpoint there is the newest (finite) one, or that none was
  written. The workdir is left as if the run had never started, so a rerun
  with another learning rate (part of the fingerprint) starts cleanly.
  """
  ckpt.wait()
  step = ckpt.latest_step()
  ckpt.close()
  dest = _new_folder(workdir / DIVERGED_DIR, "")
  dest.mkdir(parents=True)
  for name in ("checkpoints", "train_metrics.jsonl", "config.json"):
    if (workdir / name).exists():
      shutil.move(str(workdir / name), dest / name)
  saved = ("it had written no checkpoint" if step is None else
           f"its newest checkpoint (step {step}, finite) is now "
           f"{dest / 'checkpoints' / str(step)}")
  return TrainingDiverged(
      f"{what}; stopped. This run's checkpoints, metrics and config.json were "
      f"moved to {dest} ({saved}), so {workdir} can be rerun from scratch: "
      "lower config.train.learning_rate or check the data.")
