"""Saving and loading converted networks: orbax `params/` + `config.json`.

Shared by the StyleGAN2 and FID-Inception converters (and the generator
trainer), so every converted network folder has the same layout.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Mapping

import orbax.checkpoint as ocp
from flax import nnx


def save_module(module: nnx.Module, out_dir: str | Path,
                config: Mapping[str, Any]) -> Path:
  """Writes `out_dir/params` (orbax) and `out_dir/config.json`."""
  out = Path(out_dir).absolute()
  out.mkdir(parents=True, exist_ok=True)
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(out / "params", nnx.to_pure_dict(nnx.state(module)),
                    force=True)
  checkpointer.wait_until_finished()
  checkpointer.close()
  (out / "config.json").write_text(json.dumps(dict(config), indent=2) + "\n")
  return out


def restore_module(abstract: nnx.Module, path: str | Path) -> nnx.Module:
  """`abstract` (built with `nnx.eval_shape`) filled from `path/params`."""
  graphdef, state = nnx.split(abstract)
  checkpointer = ocp.StandardCheckpointer()
  try:
    restored = checkpointer.restore(Path(path).absolute() / "params",
                                    nnx.to_pure_dict(state))
  finally:
    checkpointer.close()
  nnx.replace_by_pure_dict(state, restored)
  return nnx.merge(graphdef, state)


def sha256(path: str | Path) -> str:
  """Hex digest of a file, read in 1 MiB chunks."""
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      digest.update(chunk)
  return digest.hexdigest()
