"""Inversion networks: a leaked representation -> an image in [0, 1].

Chosen by name (`attack.<name>.net`) from `INVERSION_NETS`; each is built from
the per-example shape of the leaked representation and the target image shape
(28x28x1, 32x32x3, 64x64xC, ...), plus keyword settings from
`attack.<name>.net_args`. Every net exposes `logits(rep, train)` (pre-sigmoid,
for a numerically stable BCE loss) and `__call__(rep, train)` = sigmoid of it.

The input is expected standardised (the attack trainer does that with
statistics of the attacker's own auxiliary representations), since leaks from
different layers differ in scale by orders of magnitude.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sca_jax.registry import Registry

INVERSION_NETS: Registry = Registry("inversion net")


class InversionNet(nnx.Module):
  """Base class: subclasses define `logits`; outputs are sigmoid images."""

  image_shape: tuple[int, int, int]

  def logits(self, rep: jax.Array, train: bool = False) -> jax.Array:
    raise NotImplementedError

  def __call__(self, rep: jax.Array, train: bool = False) -> jax.Array:
    return jax.nn.sigmoid(self.logits(rep, train))


@INVERSION_NETS.register("mlp")
class MLPInversion(InversionNet):
  """Flatten -> ReLU linear layers of widths `hidden` -> linear -> image."""

  def __init__(self, rep_shape: tuple[int, ...],
               image_shape: tuple[int, int, int], *,
               hidden: tuple[int, ...] = (1024,), rngs: nnx.Rngs):
    self.image_shape = tuple(image_shape)
    widths = (math.prod(rep_shape), *(int(h) for h in hidden))
    self.hidden = nnx.List([nnx.Linear(a, b, rngs=rngs)
                            for a, b in zip(widths[:-1], widths[1:])])
    self.out = nnx.Linear(widths[-1], math.prod(image_shape), rngs=rngs)

  def logits(self, rep: jax.Array, train: bool = False) -> jax.Array:
    h = rep.reshape(rep.shape[0], -1)
    for layer in self.hidden:
      h = jax.nn.relu(layer(h))
    return self.out(h).reshape(rep.shape[0], *self.image_shape)


def num_upsamplings(height: int, width: int, min_size: int = 4,
                    max_ups: int = 4) -> int:
  """Most stride-2 steps that divide both sides and keep >= `min_size` px.

  28 -> 2 (from 7x7), 32 -> 3 (from 4x4), 64 -> 4 (from 4x4); an odd size
  gets 0 (the image is produced at full size by the linear layer).
  """
  n = 0
  while (n < max_ups and height % 2**(n + 1) == 0 and width % 2**(n + 1) == 0
         and min(height, width) // 2**(n + 1) >= min_size):
    n += 1
  return n


def _phase_taps(kernel: int, stride: int) -> tuple[np.ndarray, int, int]:
  """Which kernel taps feed which output phase, for lax 'SAME' transposed conv.

  `lax.conv_transpose(..., padding="SAME")` dilates the input by `stride`,
  pads it by (pad_a, pad_b) and correlates with the kernel, so output
  `stride * m + p` receives tap `t` from input `m + a` exactly when
  `p + t - pad_a = stride * a`. Returns M (stride, offsets, kernel) with a 1
  there, and the smallest and largest input offset `a`.
  """
  pad_len = kernel + stride - 2
  pad_a = kernel - 1 if stride > kernel - 1 else -(-pad_len // 2)
  hits = [(p, (p + t - pad_a) // stride, t) for p in range(stride)
          for t in range(kernel) if (p + t - pad_a) % stride == 0]
  lo = min(a for _, a, _ in hits)
  hi = max(a for _, a, _ in hits)
  taps = np.zeros((stride, hi - lo + 1, kernel), np.float32)
  for p, a, t in hits:
    taps[p, a - lo, t] = 1.0
  return taps, lo, hi


def subpixel_conv_transpose(x_BHWC: jax.Array, kernel_KKCF: jax.Array,
                            strides: tuple[int, int]) -> jax.Array:
  """`lax.conv_transpose(x, kernel, strides, "SAME")` as a conv + depth-to-space.

  The zero-dilated input of a transposed convolution wastes (1 - 1/s^2) of
  its multiplies, and XLA:CPU runs it (and its gradients) 3-4x slower than
  the equivalent sub-pixel form: one stride-1 convolution over the input
  whose s_h * s_w * F output channels are the output phases, each phase
  with the kernel taps that reach it, then interleaved into the
  (s_h H, s_w W) map. Same values to float32 rounding (tested).
  """
  (kh, kw, c, f), (sh, sw) = kernel_KKCF.shape, strides
  taps_h, lo_h, hi_h = _phase_taps(kh, sh)
  taps_w, lo_w, hi_w = _phase_taps(kw, sw)
  phase_kernel = jnp.einsum("pat,qbu,tuio->abipqo", taps_h, taps_w,
                            kernel_KKCF).reshape(
                                taps_h.shape[1], taps_w.shape[1], c,
                                sh * sw * f)
  y = jax.lax.conv_general_dilated(
      x_BHWC, phase_kernel, (1, 1), [(-lo_h, hi_h), (-lo_w, hi_w)],
      dimension_numbers=("NHWC", "HWIO", "NHWC"))
  b, h, w, _ = y.shape
  y = y.reshape(b, h, w, sh, sw, f).transpose(0, 1, 3, 2, 4, 5)
  return y.reshape(b, h * sh, w * sw, f)


class SubpixelConvTranspose(nnx.Module):
  """`nnx.ConvTranspose(padding="SAME")` computed by `subpixel_conv_transpose`.

  Same parameters (kernel (kh, kw, in, out), bias (out,)), initialisation
  and random-stream use as `nnx.ConvTranspose`, so a given `rngs` gives the
  same initial weights and the same outputs.
  """

  def __init__(self, in_features: int, out_features: int,
               kernel_size: tuple[int, int], *, strides: tuple[int, int],
               rngs: nnx.Rngs):
    self.strides = tuple(int(s) for s in strides)
    self.kernel = nnx.Param(nnx.initializers.lecun_normal()(
        rngs.params(), (*kernel_size, in_features, out_features)))
    self.bias = nnx.Param(nnx.initializers.zeros_init()(
        rngs.params(), (out_features,)))

  def __call__(self, x_BHWC: jax.Array) -> jax.Array:
    return (subpixel_conv_transpose(x_BHWC, self.kernel[...], self.strides)
            + self.bias[...])


@INVERSION_NETS.register("deconv")
class DeconvInversion(InversionNet):
  """Linear to a small map, then (ConvT stride 2, BatchNorm, ReLU) blocks.

  The map is (H / 2^n, W / 2^n, channels) with n from `num_upsamplings`; each
  block doubles the size and halves the channels (not below `min_channels`).
  A 3x3 convolution maps to the image channels. Kernel 4 with stride 2 covers
  every output pixel evenly, which avoids checkerboard artefacts. The
  transposed convolutions run in sub-pixel form (`SubpixelConvTranspose`,
  3-4x faster on XLA:CPU). Even so the net trains ~8x slower than "mlp" on
  CPU (28x28 at 64/16 channels, batch 16: ~24 vs ~3 ms per step on 2
  shared cores), hence the modest default widths; raise `channels` for RGB
  data on an accelerator.
  """

  def __init__(self, rep_shape: tuple[int, ...],
               image_shape: tuple[int, int, int], *, channels: int = 64,
               min_channels: int = 16, kernel: int = 4, rngs: nnx.Rngs):
    self.image_shape = tuple(image_shape)
    h, w, c = image_shape
    n = num_upsamplings(h, w)
    self.map_shape = (h // 2**n, w // 2**n, int(channels))
    self.fc = nnx.Linear(math.prod(rep_shape), math.prod(self.map_shape),
                         rngs=rngs)
    self.fc_bn = nnx.BatchNorm(int(channels), momentum=0.9, rngs=rngs)
    self.ups = nnx.List()
    self.bns = nnx.List()
    c_in = int(channels)
    for _ in range(n):
      c_out = max(c_in // 2, int(min_channels))
      self.ups.append(SubpixelConvTranspose(c_in, c_out, (kernel, kernel),
                                            strides=(2, 2), rngs=rngs))
      self.bns.append(nnx.BatchNorm(c_out, momentum=0.9, rngs=rngs))
      c_in = c_out
    self.out = nnx.Conv(c_in, c, (3, 3), padding="SAME", rngs=rngs)

  def logits(self, rep: jax.Array, train: bool = False) -> jax.Array:
    h = self.fc(rep.reshape(rep.shape[0], -1))
    h = h.reshape(rep.shape[0], *self.map_shape)
    h = jax.nn.relu(self.fc_bn(h, use_running_average=not train))
    for up, bn in zip(self.ups, self.bns):
      h = jax.nn.relu(bn(up(h), use_running_average=not train))
    return self.out(h)


def build_inversion_net(name: str, rep_shape: tuple[int, ...],
                        image_shape: tuple[int, int, int],
                        net_args: dict[str, Any] | None, rngs: nnx.Rngs,
                        field: str = "attack.net") -> InversionNet:
  """Builds net `name`; bad names or settings raise ValueError naming `field`.

  Args:
    name: a name registered in `INVERSION_NETS`.
    rep_shape: per-example shape of the leaked representation (no batch).
    image_shape: (H, W, C) of the images to reconstruct.
    net_args: keyword settings of the net (e.g. `hidden` for "mlp",
      `channels` for "deconv"); None for the defaults.
    rngs: initialisation randomness.
    field: config path used in error messages.
  """
  cls = INVERSION_NETS.get(name, field=field)
  check_net_args(name, net_args, field)
  return cls(tuple(rep_shape), tuple(image_shape), **dict(net_args or {}),
             rngs=rngs)


def check_net_args(name: str, net_args: dict[str, Any] | None,
                   field: str = "attack.net") -> None:
  """Raises ValueError for settings net `name` does not take."""
  cls = INVERSION_NETS.get(name, field=field)
  params = inspect.signature(cls.__init__).parameters
  allowed = sorted(k for k, p in params.items()
                   if p.kind == p.KEYWORD_ONLY and k != "rngs")
  unknown = sorted(set(net_args or {}) - set(allowed))
  if unknown:
    raise ValueError(f"config.{field}_args: inversion net {name!r} takes no "
                     f"setting(s) {unknown}; allowed: {allowed}")


def count_params(net: nnx.Module) -> int:
  return int(sum(x.size for x in jax.tree.leaves(nnx.state(net, nnx.Param))))


__all__ = ["INVERSION_NETS", "DeconvInversion", "InversionNet",
           "MLPInversion", "build_inversion_net", "check_net_args",
           "count_params", "num_upsamplings"]
