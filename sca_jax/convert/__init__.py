"""Converters from official PyTorch checkpoints to the project's Flax ports.

Submodules are imported on demand: `safe_pickle` (torch-free restricted
unpickling) and `stylegan` (official StyleGAN2-ADA pickles -> the Flax port
in `third_party/stylegan2`, which only `stylegan` and the Plug-&-Play attack
may import, through `import_stylegan2`).
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

_REPO_ROOT = Path(__file__).resolve().parents[2]


def import_stylegan2() -> ModuleType:
  """`third_party.stylegan2`, putting the repository root on sys.path if needed.

  The port lives outside the `sca_jax` package because of its separate
  (non-commercial) NVIDIA license.
  """
  try:
    return importlib.import_module("third_party.stylegan2")
  except ModuleNotFoundError as e:
    if e.name not in ("third_party", "third_party.stylegan2"):
      raise
  if not (_REPO_ROOT / "third_party" / "stylegan2").is_dir():
    raise ModuleNotFoundError(
        f"third_party/stylegan2 not found under {_REPO_ROOT}; install the "
        "package with it or run from a source checkout")
  sys.path.append(str(_REPO_ROOT))
  importlib.invalidate_caches()
  return importlib.import_module("third_party.stylegan2")
