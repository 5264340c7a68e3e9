# Copyright (c) 2021, NVIDIA CORPORATION. All rights reserved.
# JAX port for sca_jax; licensed under the NVIDIA Source Code License for
# StyleGAN2-ADA (see LICENSE.txt in this directory): non-commercial use only.
"""StyleGAN2(-ADA) generator in Flax NNX, ported from the official networks.

Mirrors `training/networks.py` of NVlabs/stylegan2-ada-pytorch: same
constructor arguments, same attribute names (so the official state-dict keys
name the port's variables), same arithmetic. Differences: images are NHWC,
conv weights HWIO, FC weights [in, out], the constant input [H, W, C]; all
computation is float32 (`num_fp16_res` is accepted and ignored); there is no
training-time state (w_avg is never updated); noise defaults to 'const'.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from . import ops

_RESAMPLE = (1, 3, 3, 1)


class Buffer(nnx.Variable):
  """Non-trainable state of the official network (w_avg, noise, filters)."""


def _filter_buffer(f: Sequence[float]) -> Buffer:
  return Buffer(jnp.asarray(ops.setup_filter(f)))


class FullyConnectedLayer(nnx.Module):
  """Dense layer with equalised learning rate; weight stored [in, out]."""

  def __init__(self, in_features: int, out_features: int, *, bias: bool = True,
               activation: str = "linear", lr_multiplier: float = 1.0,
               bias_init: float = 0.0, rngs: nnx.Rngs):
    self.activation = activation
    self.weight = nnx.Param(jax.random.normal(
        rngs.params(), (in_features, out_features)) / lr_multiplier)
    self.bias = (nnx.Param(jnp.full((out_features,), bias_init, jnp.float32))
                 if bias else None)
    self.weight_gain = float(lr_multiplier / np.sqrt(in_features))
    self.bias_gain = float(lr_multiplier)

  def __call__(self, x: jax.Array) -> jax.Array:
    x = x @ (self.weight[...] * self.weight_gain)
    b = None if self.bias is None else self.bias[...] * self.bias_gain
    return ops.bias_act(x, b, act=self.activation)


class MappingNetwork(nnx.Module):
  """z (and label c) -> w, broadcast to `num_ws` copies."""

  def __init__(self, z_dim: int, c_dim: int, w_dim: int, num_ws: int | None,
               num_layers: int = 8, embed_features: int | None = None,
               layer_features: int | None = None, activation: str = "lrelu",
               lr_multiplier: float = 0.01, w_avg_beta: float | None = 0.995,
               *, rngs: nnx.Rngs):
    self.z_dim, self.c_dim, self.w_dim = z_dim, c_dim, w_dim
    self.num_ws, self.num_layers = num_ws, num_layers
    self.w_avg_beta = w_avg_beta
    if embed_features is None:
      embed_features = w_dim
    if c_dim == 0:
      embed_features = 0
    if layer_features is None:
      layer_features = w_dim
    features = ([z_dim + embed_features] + [layer_features] * (num_layers - 1)
                + [w_dim])
    if c_dim > 0:
      self.embed = FullyConnectedLayer(c_dim, embed_features, rngs=rngs)
    for idx in range(num_layers):
      setattr(self, f"fc{idx}", FullyConnectedLayer(
          features[idx], features[idx + 1], activation=activation,
          lr_multiplier=lr_multiplier, rngs=rngs))
    if num_ws is not None and w_avg_beta is not None:
      self.w_avg = Buffer(jnp.zeros((w_dim,), jnp.float32))

  def __call__(self, z: jax.Array | None, c: jax.Array | None,
               truncation_psi: float | jax.Array = 1,
               truncation_cutoff: int | None = None) -> jax.Array:
    """-> ws [N, num_ws, w_dim] (or [N, w_dim] if num_ws is None)."""
    x = None
    if self.z_dim > 0:
      x = ops.normalize_2nd_moment(jnp.asarray(z, jnp.float32))
    if self.c_dim > 0:
      y = ops.normalize_2nd_moment(self.embed(jnp.asarray(c, jnp.float32)))
      x = y if x is None else jnp.concatenate([x, y], axis=1)
    for idx in range(self.num_layers):
      x = getattr(self, f"fc{idx}")(x)
    if self.num_ws is not None:
      x = jnp.repeat(x[:, None, :], self.num_ws, axis=1)
    # A traced psi is always applied; a Python 1 skips the work.
    if not (isinstance(truncation_psi, (int, float)) and truncation_psi == 1):
      if self.w_avg_beta is None:
        raise ValueError("truncation needs w_avg, but w_avg_beta is None")
      w_avg = self.w_avg[...]
      truncated = w_avg + truncation_psi * (x - w_avg)
      if self.num_ws is None or truncation_cutoff is None:
        x = truncated
      else:
        x = x.at[:, :truncation_cutoff].set(truncated[:, :truncation_cutoff])
    return x


class SynthesisLayer(nnx.Module):
  """Modulated 3x3 convolution (optionally upsampling) + noise + bias + act."""

  def __init__(self, in_channels: int, out_channels: int, w_dim: int,
               resolution: int, kernel_size: int = 3, up: int = 1,
               use_noise: bool = True, activation: str = "lrelu",
               resample_filter: Sequence[float] = _RESAMPLE,
               conv_clamp: float | None = None, channels_last: bool = False,
               *, rngs: nnx.Rngs):
    del channels_last  # a torch memory-format switch
    self.resolution, self.up = resolution, up
    self.use_noise, self.activation = use_noise, activation
    self.conv_clamp = conv_clamp
    self.resample_filter = _filter_buffer(resample_filter)
    self.padding = kernel_size // 2
    self.act_gain = ops.activation_gain(activation)
    self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1,
                                      rngs=rngs)
    self.weight = nnx.Param(jax.random.normal(
        rngs.params(), (kernel_size, kernel_size, in_channels, out_channels)))
    if use_noise:
      self.noise_const = Buffer(jax.random.normal(rngs.params(),
                                                  (resolution, resolution)))
      self.noise_strength = nnx.Param(jnp.zeros((), jnp.float32))
    self.bias = nnx.Param(jnp.zeros((out_channels,), jnp.float32))

  def __call__(self, x_NHWC: jax.Array, w: jax.Array, noise_mode: str = "const",
               gain: float = 1.0, random_noise: jax.Array | None = None
               ) -> jax.Array:
    """random_noise: unit normal [N, res, res, 1], for noise_mode 'random'."""
    if noise_mode not in ("random", "const", "none"):
      raise ValueError(
          f"noise_mode must be random/const/none, got {noise_mode!r}")
    styles = self.affine(w)
    noise = None
    if self.use_noise and noise_mode == "random":
      if random_noise is None:
        raise ValueError("noise_mode='random' needs random_noise")
      noise = random_noise * self.noise_strength[...]
    if self.use_noise and noise_mode == "const":
      noise = (self.noise_const[...] * self.noise_strength[...])[:, :, None]
    x = ops.modulated_conv2d(
        x_NHWC, self.weight[...], styles, noise=noise, up=self.up,
        padding=self.padding, resample_filter=self.resample_filter[...],
        flip_weight=(self.up == 1))
    clamp = None if self.conv_clamp is None else self.conv_clamp * gain
    return ops.bias_act(x, self.bias[...], act=self.activation,
                        gain=self.act_gain * gain, clamp=clamp)


class ToRGBLayer(nnx.Module):
  """Modulated 1x1 convolution without demodulation, linear output."""

  def __init__(self, in_channels: int, out_channels: int, w_dim: int,
               kernel_size: int = 1, conv_clamp: float | None = None,
               channels_last: bool = False, *, rngs: nnx.Rngs):
    del channels_last
    self.conv_clamp = conv_clamp
    self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1,
                                      rngs=rngs)
    self.weight = nnx.Param(jax.random.normal(
        rngs.params(), (kernel_size, kernel_size, in_channels, out_channels)))
    self.bias = nnx.Param(jnp.zeros((out_channels,), jnp.float32))
    self.weight_gain = float(1 / np.sqrt(in_channels * kernel_size ** 2))

  def __call__(self, x_NHWC: jax.Array, w: jax.Array) -> jax.Array:
    styles = self.affine(w) * self.weight_gain
    x = ops.modulated_conv2d(x_NHWC, self.weight[...], styles, demodulate=False)
    return ops.bias_act(x, self.bias[...], clamp=self.conv_clamp)


class Conv2dLayer(nnx.Module):
  """Plain equalised-lr convolution; the generator uses it as resnet skip."""

  def __init__(self, in_channels: int, out_channels: int, kernel_size: int,
               bias: bool = True, activation: str = "linear", up: int = 1,
               resample_filter: Sequence[float] = _RESAMPLE,
               conv_clamp: float | None = None, *, rngs: nnx.Rngs):
    self.activation, self.up, self.conv_clamp = activation, up, conv_clamp
    self.resample_filter = _filter_buffer(resample_filter)
    self.padding = kernel_size // 2
    self.weight_gain = float(1 / np.sqrt(in_channels * kernel_size ** 2))
    self.act_gain = ops.activation_gain(activation)
    self.weight = nnx.Param(jax.random.normal(
        rngs.params(), (kernel_size, kernel_size, in_channels, out_channels)))
    self.bias = (nnx.Param(jnp.zeros((out_channels,), jnp.float32))
                 if bias else None)

  def __call__(self, x_NHWC: jax.Array, gain: float = 1.0) -> jax.Array:
    x = ops.conv2d_resample(
        x_NHWC, self.weight[...] * self.weight_gain,
        f=self.resample_filter[...], up=self.up, padding=self.padding,
        flip_weight=(self.up == 1))
    clamp = None if self.conv_clamp is None else self.conv_clamp * gain
    b = None if self.bias is None else self.bias[...]
    return ops.bias_act(x, b, act=self.activation, gain=self.act_gain * gain,
                        clamp=clamp)


class SynthesisBlock(nnx.Module):
  """One resolution: [const | up-conv0] -> conv1 -> [toRGB], image skip."""

  def __init__(self, in_channels: int, out_channels: int, w_dim: int,
               resolution: int, img_channels: int, is_last: bool,
               architecture: str = "skip",
               resample_filter: Sequence[float] = _RESAMPLE,
               conv_clamp: float | None = None, use_fp16: bool = False,
               fp16_channels_last: bool = False, *, rngs: nnx.Rngs,
               **layer_kwargs: Any):
    del use_fp16, fp16_channels_last  # computation is always float32
    if architecture not in ("orig", "skip", "resnet"):
      raise ValueError(f"unknown architecture {architecture!r}")
    self.in_channels, self.w_dim = in_channels, w_dim
    self.resolution, self.img_channels = resolution, img_channels
    self.is_last, self.architecture = is_last, architecture
    self.resample_filter = _filter_buffer(resample_filter)
    self.num_conv = self.num_torgb = 0
    if in_channels == 0:
      self.const = nnx.Param(jax.random.normal(
          rngs.params(), (resolution, resolution, out_channels)))
    else:
      self.conv0 = SynthesisLayer(
          in_channels, out_channels, w_dim=w_dim, resolution=resolution, up=2,
          resample_filter=resample_filter, conv_clamp=conv_clamp, rngs=rngs,
          **layer_kwargs)
      self.num_conv += 1
    self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim=w_dim,
                                resolution=resolution, conv_clamp=conv_clamp,
                                rngs=rngs, **layer_kwargs)
    self.num_conv += 1
    if is_last or architecture == "skip":
      self.torgb = ToRGBLayer(out_channels, img_channels, w_dim=w_dim,
                              conv_clamp=conv_clamp, rngs=rngs)
      self.num_torgb += 1
    if in_channels != 0 and architecture == "resnet":
      self.skip = Conv2dLayer(in_channels, out_channels, kernel_size=1,
                              bias=False, up=2,
                              resample_filter=resample_filter, rngs=rngs)

  def __call__(self, x_NHWC: jax.Array | None, img_NHWC: jax.Array | None,
               ws: jax.Array, noise_mode: str = "const",
               random_noise: Sequence[jax.Array] | None = None
               ) -> tuple[jax.Array, jax.Array | None]:
    """ws: [N, num_conv + num_torgb, w_dim]; -> (features, image so far).

    random_noise: one unit-normal [N, res, res, 1] per conv layer, in order.
    """
    noise = list(random_noise) if random_noise is not None else [None] * 2
    layer = dict(noise_mode=noise_mode)
    if self.in_channels == 0:
      const = self.const[...]
      x = jnp.broadcast_to(const[None], (ws.shape[0], *const.shape))
      x = self.conv1(x, ws[:, 0], random_noise=noise[0], **layer)
    elif self.architecture == "resnet":
      y = self.skip(x_NHWC, gain=float(np.sqrt(0.5)))
      x = self.conv0(x_NHWC, ws[:, 0], random_noise=noise[0], **layer)
      x = self.conv1(x, ws[:, 1], gain=float(np.sqrt(0.5)),
                     random_noise=noise[1], **layer)
      x = y + x
    else:
      x = self.conv0(x_NHWC, ws[:, 0], random_noise=noise[0], **layer)
      x = self.conv1(x, ws[:, 1], random_noise=noise[1], **layer)
    if img_NHWC is not None:
      img_NHWC = ops.upsample2d(img_NHWC, self.resample_filter[...])
    if self.is_last or self.architecture == "skip":
      y = self.torgb(x, ws[:, self.num_conv])
      img_NHWC = y if img_NHWC is None else img_NHWC + y
    return x, img_NHWC


class SynthesisNetwork(nnx.Module):
  """ws [N, num_ws, w_dim] -> image [N, R, R, img_channels]."""

  def __init__(self, w_dim: int, img_resolution: int, img_channels: int,
               channel_base: int = 32768, channel_max: int = 512,
               num_fp16_res: int = 0, *, rngs: nnx.Rngs, **block_kwargs: Any):
    if img_resolution < 4 or img_resolution & (img_resolution - 1):
      raise ValueError(f"img_resolution must be a power of 2 >= 4, "
                       f"got {img_resolution}")
    del num_fp16_res  # only a mixed-precision setting of the original
    self.w_dim, self.img_resolution = w_dim, img_resolution
    self.img_channels = img_channels
    log2 = int(np.log2(img_resolution))
    self.block_resolutions = tuple(2 ** i for i in range(2, log2 + 1))
    channels = {res: min(channel_base // res, channel_max)
                for res in self.block_resolutions}
    self.num_ws = 0
    for res in self.block_resolutions:
      is_last = res == img_resolution
      block = SynthesisBlock(
          channels[res // 2] if res > 4 else 0, channels[res], w_dim=w_dim,
          resolution=res, img_channels=img_channels, is_last=is_last,
          rngs=rngs, **block_kwargs)
      self.num_ws += block.num_conv + (block.num_torgb if is_last else 0)
      setattr(self, f"b{res}", block)

  def __call__(self, ws: jax.Array, noise_mode: str = "const",
               noise_key: jax.Array | None = None) -> jax.Array:
    """Image NHWC, unclamped (nominally [-1, 1], as the official output)."""
    if ws.shape[1:] != (self.num_ws, self.w_dim):
      raise ValueError(f"ws must be [N, {self.num_ws}, {self.w_dim}], got "
                       f"{ws.shape}")
    ws = ws.astype(jnp.float32)
    noise = None
    if noise_mode == "random":
      if noise_key is None:
        raise ValueError("noise_mode='random' needs a noise_key")
      noise = self._random_noise(noise_key, ws.shape[0])
    x = img = None
    w_idx = 0
    for res in self.block_resolutions:
      block = getattr(self, f"b{res}")
      # Consecutive blocks share one w: a block's toRGB uses the same w as
      # the next block's first conv.
      cur = ws[:, w_idx:w_idx + block.num_conv + block.num_torgb]
      x, img = block(x, img, cur, noise_mode=noise_mode,
                     random_noise=None if noise is None else noise[res])
      w_idx += block.num_conv
    return img

  def _random_noise(self, key: jax.Array, n: int) -> dict[int, list[jax.Array]]:
    """Unit-normal noise for every conv layer, by block resolution.

    One draw split into pieces: each separate jax.random call site costs a
    compilation of its own, which dominates compile time otherwise.
    """
    counts = {res: getattr(self, f"b{res}").num_conv
              for res in self.block_resolutions}
    sizes = [n * res * res for res, k in counts.items() for _ in range(k)]
    flat = jax.random.normal(key, (sum(sizes),))
    pieces = iter(jnp.split(flat, np.cumsum(sizes)[:-1]))
    return {res: [next(pieces).reshape(n, res, res, 1) for _ in range(k)]
            for res, k in counts.items()}


class Generator(nnx.Module):
  """The official `Generator`: mapping then synthesis; images NHWC."""

  def __init__(self, z_dim: int, c_dim: int, w_dim: int, img_resolution: int,
               img_channels: int,
               mapping_kwargs: Mapping[str, Any] | None = None,
               synthesis_kwargs: Mapping[str, Any] | None = None,
               *, rngs: nnx.Rngs):
    self.z_dim, self.c_dim, self.w_dim = z_dim, c_dim, w_dim
    self.img_resolution, self.img_channels = img_resolution, img_channels
    # The constructor arguments, JSON-ready, to rebuild this generator.
    self.init_kwargs = dict(
        z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, img_resolution=img_resolution,
        img_channels=img_channels, mapping_kwargs=dict(mapping_kwargs or {}),
        synthesis_kwargs=dict(synthesis_kwargs or {}))
    self.synthesis = SynthesisNetwork(
        w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels,
        rngs=rngs, **dict(synthesis_kwargs or {}))
    self.num_ws = self.synthesis.num_ws
    self.mapping = MappingNetwork(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim,
                                  num_ws=self.num_ws, rngs=rngs,
                                  **dict(mapping_kwargs or {}))

  def __call__(self, z: jax.Array, c: jax.Array | None,
               truncation_psi: float | jax.Array = 1,
               truncation_cutoff: int | None = None, noise_mode: str = "const",
               noise_key: jax.Array | None = None) -> jax.Array:
    """z [N, z_dim], c [N, c_dim] -> image [N, R, R, C], nominally [-1, 1].

    Unlike the official default ('random'), noise defaults to 'const' so
    the same z gives the same image; pass noise_key for 'random'.
    """
    ws = self.mapping(z, c, truncation_psi=truncation_psi,
                      truncation_cutoff=truncation_cutoff)
    return self.synthesis(ws, noise_mode=noise_mode, noise_key=noise_key)
