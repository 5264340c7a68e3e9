"""DiffAugment (Zhao et al. 2020): differentiable augmentation for GANs.

Every image D sees, real or generated, in both D and G steps, goes through
the same random augmentation, so D cannot overfit a small data set and G is
not taught the augmentation (it cannot tell which copy was augmented).
Translation and cutout only: colour jitter is pointless on grey images.
`strength` scales both (translation up to strength/8 of the side, cutout
squares of strength/2 of the side); at 0 every op is the identity.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

POLICIES = ("translation", "cutout")


def translate(x_NHWC: jax.Array, key: jax.Array, ratio: float,
              fill: float = 0.0) -> jax.Array:
  """Shifts each image by up to ratio * side pixels, filling with `fill`."""
  n, h, w, _ = x_NHWC.shape
  sh, sw = int(ratio * h + 0.5), int(ratio * w + 0.5)
  if sh == 0 and sw == 0:
    return x_NHWC
  k_y, k_x = jax.random.split(key)
  dy = jax.random.randint(k_y, (n,), -sh, sh + 1)
  dx = jax.random.randint(k_x, (n,), -sw, sw + 1)
  padded = jnp.pad(x_NHWC, ((0, 0), (sh, sh), (sw, sw), (0, 0)),
                   constant_values=fill)
  crop = lambda img, y, x: jax.lax.dynamic_slice(
      img, (sh - y, sw - x, 0), (h, w, img.shape[-1]))
  return jax.vmap(crop)(padded, dy, dx)


def cutout(x_NHWC: jax.Array, key: jax.Array, ratio: float,
           fill: float = 0.0) -> jax.Array:
  """Sets one square of ratio * side per image (centre anywhere) to `fill`."""
  n, h, w, _ = x_NHWC.shape
  ch, cw = int(ratio * h + 0.5), int(ratio * w + 0.5)
  if ch == 0 or cw == 0:
    return x_NHWC
  k_y, k_x = jax.random.split(key)
  cy = jax.random.randint(k_y, (n, 1, 1), 0, h)
  cx = jax.random.randint(k_x, (n, 1, 1), 0, w)
  rows = jnp.arange(h)[None, :, None]
  cols = jnp.arange(w)[None, None, :]
  inside = ((rows >= cy - ch // 2) & (rows < cy - ch // 2 + ch)
            & (cols >= cx - cw // 2) & (cols < cx - cw // 2 + cw))
  return jnp.where(inside[..., None], fill, x_NHWC)


def check_policy(policy: Sequence[str], field: str = "augment") -> None:
  for op in policy:
    if op not in POLICIES:
      raise ValueError(f"{field}: unknown DiffAugment op {op!r}; allowed "
                       f"{', '.join(POLICIES)} (or none)")


def diff_augment(x_NHWC: jax.Array, key: jax.Array, policy: Sequence[str],
                 strength: float = 1.0) -> jax.Array:
  """Applies the ops of `policy` in order (DiffAugment's ratios x strength)."""
  check_policy(policy)
  keys = jax.random.split(key, len(POLICIES))
  if "translation" in policy:
    x_NHWC = translate(x_NHWC, keys[0], strength / 8)
  if "cutout" in policy:
    x_NHWC = cutout(x_NHWC, keys[1], strength / 2)
  return x_NHWC
