"""The one cache directory of the package: `$SCA_JAX_CACHE_DIR`, else
`~/.cache/sca_jax`; each user keeps its own subfolder (trained evaluation
classifiers, generators, converted data)."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "SCA_JAX_CACHE_DIR"


def cache_dir(*parts: str) -> Path:
  """`<cache root>/<parts...>` (not created)."""
  root = Path(os.environ.get(CACHE_ENV) or
              Path.home() / ".cache" / "sca_jax").expanduser()
  return root.joinpath(*parts)
