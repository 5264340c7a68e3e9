"""A small StyleGAN2-style residual discriminator with equalised learning rate.

Layout as the StyleGAN2 'resnet' D: 1x1 fromRGB at full resolution, then per
resolution two 3x3 convolutions (the second halving the size) beside a 1x1
skip, summed and scaled by sqrt(1/2); at 4x4 a minibatch-standard-deviation
channel, a 3x3 convolution and two dense layers. Down-sampling is 2x2
average pooling (StyleGAN2 uses a [1,3,3,1] FIR filter). Every weight is
stored N(0, 1) and scaled by 1/sqrt(fan_in) at run time (equalised learning
rate), so Adam's step is alike for every layer and the official learning
rate 0.0025 applies.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

_LRELU_GAIN = math.sqrt(2.0)


def _lrelu(x: jax.Array) -> jax.Array:
  return jax.nn.leaky_relu(x, 0.2) * _LRELU_GAIN


def _down(x_NHWC: jax.Array) -> jax.Array:
  n, h, w, c = x_NHWC.shape
  return x_NHWC.reshape(n, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


class EqConv(nnx.Module):
  """Same-padded convolution with equalised learning rate."""

  def __init__(self, cin: int, cout: int, kernel: int, bias: bool = True, *,
               rngs: nnx.Rngs):
    self.weight = nnx.Param(jax.random.normal(rngs.params(),
                                              (kernel, kernel, cin, cout)))
    self.bias = nnx.Param(jnp.zeros((cout,))) if bias else None
    self.gain = 1.0 / math.sqrt(cin * kernel * kernel)

  def __call__(self, x_NHWC: jax.Array) -> jax.Array:
    y = jax.lax.conv_general_dilated(
        x_NHWC, self.weight[...] * self.gain, (1, 1), "SAME",
        dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y if self.bias is None else y + self.bias[...]


class EqDense(nnx.Module):
  """Dense layer with equalised learning rate."""

  def __init__(self, cin: int, cout: int, *, rngs: nnx.Rngs):
    self.weight = nnx.Param(jax.random.normal(rngs.params(), (cin, cout)))
    self.bias = nnx.Param(jnp.zeros((cout,)))
    self.gain = 1.0 / math.sqrt(cin)

  def __call__(self, x: jax.Array) -> jax.Array:
    return x @ (self.weight[...] * self.gain) + self.bias[...]


class DBlock(nnx.Module):
  """conv3x3 -> conv3x3 -> pool, beside a pooled 1x1 skip."""

  def __init__(self, cin: int, cout: int, *, rngs: nnx.Rngs):
    self.conv0 = EqConv(cin, cin, 3, rngs=rngs)
    self.conv1 = EqConv(cin, cout, 3, rngs=rngs)
    self.skip = EqConv(cin, cout, 1, bias=False, rngs=rngs)

  def __call__(self, x_NHWC: jax.Array) -> jax.Array:
    y = _down(self.skip(x_NHWC))
    x = _down(_lrelu(self.conv1(_lrelu(self.conv0(x_NHWC)))))
    return (x + y) * math.sqrt(0.5)


def minibatch_stddev(x_NHWC: jax.Array, group_size: int) -> jax.Array:
  """Appends one channel: the feature std within each group of samples.

  D then sees how varied a group of images is, so a generator producing
  near-identical samples is easy to reject (StyleGAN2's answer to mode
  collapse). Sample i belongs to group i % (N / group_size), as StyleGAN2.
  """
  n, h, w, c = x_NHWC.shape
  g = min(group_size, n)
  if n % g:
    raise ValueError(f"batch size {n} is not a multiple of the minibatch-std "
                     f"group size {g}")
  y = x_NHWC.reshape(g, n // g, h, w, c)
  std_M = jnp.sqrt(y.var(axis=0) + 1e-8).mean(axis=(1, 2, 3))
  std = jnp.tile(std_M, g).reshape(n, 1, 1, 1)
  return jnp.concatenate([x_NHWC, jnp.broadcast_to(std, (n, h, w, 1))], -1)


class Discriminator(nnx.Module):
  """Images [N, R, R, C] in [-1, 1] -> logits [N]."""

  def __init__(self, resolution: int, img_channels: int, channel_base: int,
               channel_max: int, mbstd_group: int = 4, *, rngs: nnx.Rngs):
    if resolution < 8 or resolution & (resolution - 1):
      raise ValueError(f"discriminator resolution must be a power of 2 >= 8, "
                       f"got {resolution}")
    width = lambda res: max(1, min(channel_base // res, channel_max))
    self.mbstd_group = mbstd_group
    self.from_rgb = EqConv(img_channels, width(resolution), 1, rngs=rngs)
    self.blocks = nnx.List()
    res = resolution
    while res > 4:
      self.blocks.append(DBlock(width(res), width(res // 2), rngs=rngs))
      res //= 2
    c4 = width(4)
    self.conv = EqConv(c4 + 1, c4, 3, rngs=rngs)
    self.fc = EqDense(16 * c4, c4, rngs=rngs)
    self.out = EqDense(c4, 1, rngs=rngs)

  def __call__(self, x_NHWC: jax.Array) -> jax.Array:
    h = _lrelu(self.from_rgb(x_NHWC))
    for block in self.blocks:
      h = block(h)
    h = _lrelu(self.conv(minibatch_stddev(h, self.mbstd_group)))
    return self.out(_lrelu(self.fc(h.reshape(h.shape[0], -1))))[:, 0]
