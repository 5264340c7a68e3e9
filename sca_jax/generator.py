"""StyleGAN2 generators for the Plug-&-Play attack: loading and rendering.

A generator is a folder written by `sca_jax.convert.stylegan.save_generator`
(`params/` orbax + `config.json`): either an official checkpoint converted by
`scripts/convert_stylegan.py` or one trained on the attacker's auxiliary split
by `scripts/train_generator.py` (default folder
`$SCA_JAX_CACHE_DIR/generators/<name>`, `~/.cache/sca_jax/generators/<name>`
without the variable). `render` maps the generator's [-1, 1] output to the
target's input: [0, 1], centre crop, resize, grey <-> RGB.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from sca_jax import cache

# Rec. 601 luma, as torchvision's Grayscale transform.
_LUMA = jnp.array([0.299, 0.587, 0.114], jnp.float32)


def cache_dir(name: str) -> Path:
  """Default folder of a trained generator called `name`."""
  return cache.cache_dir("generators", name)


def check_generator_path(path: Any, field: str) -> Path:
  """The generator folder, or FileNotFoundError naming the config field."""
  hint = ("train one on the auxiliary split with scripts/train_generator.py "
          "or convert an official StyleGAN2 pickle with "
          "scripts/convert_stylegan.py, then set the field to its folder")
  if not path:
    raise FileNotFoundError(f"config.{field} is not set: the Plug-&-Play "
                            f"attack needs a generator; {hint}")
  p = Path(str(path)).expanduser()
  if not (p / "config.json").is_file() or not (p / "params").is_dir():
    raise FileNotFoundError(f"config.{field} = {str(path)!r} is not a saved "
                            f"generator (no config.json and params/ there); "
                            f"{hint}")
  return p


def digest(path: str | Path) -> str:
  """SHA-256 over a saved generator's config.json and params/ files: a
  retrained or replaced generator at the same path gets a new digest."""
  root = Path(path).expanduser()
  h = hashlib.sha256()
  files = [root / "config.json"] + sorted(
      f for f in (root / "params").rglob("*") if f.is_file())
  for f in files:
    h.update(str(f.relative_to(root)).encode() + b"\0")
    h.update(f.read_bytes())
  return h.hexdigest()


def saved_source(path: str | Path) -> dict[str, Any]:
  """The `source` record of a saved generator (how it was made)."""
  return dict(json.loads((Path(path) / "config.json").read_text()).get(
      "source") or {})


def render(img_NHWC: jax.Array, image_shape: tuple[int, int, int],
           center_crop: int | None = None) -> jax.Array:
  """Generator output ([-1, 1]) -> target input ([0, 1], target's shape)."""
  x = jnp.clip((img_NHWC + 1.0) * 0.5, 0.0, 1.0)
  if center_crop:
    h, w = x.shape[1:3]
    top, left = (h - center_crop) // 2, (w - center_crop) // 2
    x = x[:, top:top + center_crop, left:left + center_crop]
  # Clipped again: float rounding in the resize may leave [0, 1].
  return jnp.clip(to_channels(resize(x, image_shape[:2]), image_shape[2]),
                  0.0, 1.0)


def resize(x_NHWC: jax.Array, hw: tuple[int, int]) -> jax.Array:
  if tuple(x_NHWC.shape[1:3]) == tuple(hw):
    return x_NHWC
  return jax.image.resize(x_NHWC, (x_NHWC.shape[0], *hw, x_NHWC.shape[3]),
                          "linear", antialias=True)


def to_channels(x_NHWC: jax.Array, channels: int) -> jax.Array:
  have = x_NHWC.shape[-1]
  if have == channels:
    return x_NHWC
  if have == 3 and channels == 1:
    return (x_NHWC @ _LUMA)[..., None]
  if have == 1 and channels == 3:
    return jnp.repeat(x_NHWC, 3, axis=-1)
  raise ValueError(f"cannot map {have}-channel generator images to a "
                   f"{channels}-channel target")
