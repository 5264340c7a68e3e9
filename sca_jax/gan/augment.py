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


def _draw_yx(key: jax.Array, n: int, groups_of: int, low: tuple[int, int],
             high: tuple[int, int]) -> tuple[jax.Array, jax.Array]:
  """Per-image random ints (y in [low[0], high[0]), x likewise), one draw
  per sample index modulo n / groups_of (see `diff_augment`)."""
  if n % groups_of:
    raise ValueError(f"batch {n} is not a multiple of groups_of={groups_of}")
  k_y, k_x = jax.random.split(key)
  m = n // groups_of
  draw = lambda k, lo, hi: jnp.tile(jax.random.randint(k, (m,), lo, hi),
                                    groups_of)
  return draw(k_y, low[0], high[0]), draw(k_x, low[1], high[1])


def translate(x_NHWC: jax.Array, key: jax.Array, ratio: float,
              fill: float = 0.0, groups_of: int = 1) -> jax.Array:
  """Shifts each image by up to ratio * side pixels, filling with `fill`."""
  n, h, w, _ = x_NHWC.shape
  sh, sw = int(ratio * h + 0.5), int(ratio * w + 0.5)
  if sh == 0 and sw == 0:
    return x_NHWC
  dy, dx = _draw_yx(key, n, groups_of, (-sh, -sw), (sh + 1, sw + 1))
  padded = jnp.pad(x_NHWC, ((0, 0), (sh, sh), (sw, sw), (0, 0)),
                   constant_values=fill)
  crop = lambda img, y, x: jax.lax.dynamic_slice(
      img, (sh - y, sw - x, 0), (h, w, img.shape[-1]))
  return jax.vmap(crop)(padded, dy, dx)


def cutout(x_NHWC: jax.Array, key: jax.Array, ratio: float,
           fill: float = 0.0, groups_of: int = 1) -> jax.Array:
  """Sets one square of ratio * side per image (centre anywhere) to `fill`."""
  n, h, w, _ = x_NHWC.shape
  ch, cw = int(ratio * h + 0.5), int(ratio * w + 0.5)
  if ch == 0 or cw == 0:
    return x_NHWC
  cy, cx = _draw_yx(key, n, groups_of, (0, 0), (h, w))
  cy, cx = cy[:, None, None], cx[:, None, None]
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
                 strength: float = 1.0, fill: float = 0.0,
                 groups_of: int = 1) -> jax.Array:
  """Applies the ops of `policy` in order (DiffAugment's ratios x strength).

  fill: the value of uncovered and cut-out pixels (the images' background,
  -1 for MNIST in [-1, 1]). groups_of: samples i, i + N/g, i + 2N/g, ...
  (one minibatch-std group of D, `discriminator.minibatch_stddev`) share
  one draw. With a draw per image, 32 augmented copies of one digit vary as
  much as 32 different digits, so D's minibatch std cannot see a collapsed
  G (measured on MNIST: copies 0.136 vs distinct 0.154 on D's std feature;
  with shared draws 0.0001 vs 0.069). Sharing draws alone did not stop the
  MNIST generator's collapse (docs/plug_and_play.md).
  """
  check_policy(policy)
  keys = jax.random.split(key, len(POLICIES))
  if "translation" in policy:
    x_NHWC = translate(x_NHWC, keys[0], strength / 8, fill, groups_of)
  if "cutout" in policy:
    x_NHWC = cutout(x_NHWC, keys[1], strength / 2, fill, groups_of)
  return x_NHWC
