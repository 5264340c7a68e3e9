# Copyright (c) 2021, NVIDIA CORPORATION. All rights reserved.
# JAX port for sca_jax; licensed under the NVIDIA Source Code License for
# StyleGAN2-ADA (see LICENSE.txt in this directory): non-commercial use only.
"""The generator's low-level ops in JAX, channels-last (NHWC, weights HWIO).

Ported from `torch_utils/ops/{upfirdn2d,conv2d_resample,bias_act}.py` of
NVlabs/stylegan2-ada-pytorch, following the reference (non-CUDA) code paths.
Only what the generator needs is here: no downsampling, no custom gradients.
Weights keep the meaning of the official OIHW weights, merely transposed to
HWIO, so the flips of the official transposed convolution happen in here.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

_DIMS = ("NHWC", "HWIO", "NHWC")
# Filters up to this many taps (the default [1,3,3,1] has 16) are applied as
# shifted sums rather than a depthwise convolution (see `upfirdn2d`).
_MAX_SHIFTED_TAPS = 16

# name -> (function of (x, alpha), default alpha, default gain).
_ACTIVATIONS = {
    "linear": (lambda x, a: x, 0.0, 1.0),
    "relu": (lambda x, a: jax.nn.relu(x), 0.0, float(np.sqrt(2))),
    "lrelu": (lambda x, a: jnp.where(x >= 0, x, x * a), 0.2,
              float(np.sqrt(2))),
    "tanh": (lambda x, a: jnp.tanh(x), 0.0, 1.0),
    "sigmoid": (lambda x, a: jax.nn.sigmoid(x), 0.0, 1.0),
    "elu": (lambda x, a: jax.nn.elu(x), 0.0, 1.0),
    "selu": (lambda x, a: jax.nn.selu(x), 0.0, 1.0),
    "softplus": (lambda x, a: jax.nn.softplus(x), 0.0, 1.0),
    "swish": (lambda x, a: jax.nn.sigmoid(x) * x, 0.0, float(np.sqrt(2))),
}


def activation_gain(act: str) -> float:
  """The default gain of `act` (sqrt(2) for relu-like, else 1)."""
  if act not in _ACTIVATIONS:
    raise ValueError(
        f"unknown activation {act!r}; one of {sorted(_ACTIVATIONS)}")
  return _ACTIVATIONS[act][2]


def bias_act(x: jax.Array, b: jax.Array | None = None, act: str = "linear",
             alpha: float | None = None, gain: float | None = None,
             clamp: float | None = None) -> jax.Array:
  """Adds a bias on the last axis, activates, scales by `gain`, clamps."""
  func, def_alpha, def_gain = _ACTIVATIONS[act]
  if b is not None:
    x = x + b.astype(x.dtype)
  x = func(x, def_alpha if alpha is None else alpha)
  gain = def_gain if gain is None else gain
  if gain != 1:
    x = x * gain
  if clamp is not None:
    x = jnp.clip(x, -clamp, clamp)
  return x


def setup_filter(f: Sequence[float] | np.ndarray | None, normalize: bool = True,
                 flip_filter: bool = False, gain: float = 1.0) -> np.ndarray:
  """The official FIR filter buffer: 2-D unless 1-D with >= 8 taps."""
  f = np.asarray(1.0 if f is None else f, np.float32)
  if f.ndim == 0:
    f = f[np.newaxis]
  if f.ndim == 1 and f.size < 8:
    f = np.outer(f, f)
  if normalize:
    f = f / f.sum()
  if flip_filter:
    f = f[(slice(None, None, -1),) * f.ndim]
  return (f * gain ** (f.ndim / 2)).astype(np.float32)


def _parse_padding(padding: int | Sequence[int]) -> tuple[int, int, int, int]:
  """-> (x_before, x_after, y_before, y_after), as the official ops."""
  if isinstance(padding, int):
    padding = (padding, padding)
  if len(padding) == 2:
    px, py = padding
    padding = (px, px, py, py)
  return tuple(int(p) for p in padding)


def _filter_2d(f: jax.Array | np.ndarray) -> jax.Array:
  # A separable (1-D) filter is applied twice, once per axis, which is the
  # same as applying its outer product once.
  f = jnp.asarray(f, jnp.float32)
  return jnp.outer(f, f) if f.ndim == 1 else f


def upfirdn2d(x_NHWC: jax.Array, f: jax.Array | np.ndarray | None,
              up: int = 1, down: int = 1, padding: int | Sequence[int] = 0,
              flip_filter: bool = False, gain: float = 1.0) -> jax.Array:
  """Upsample by zero insertion, pad (or crop), FIR-filter, downsample.

  Same semantics as the official `upfirdn2d` (and `scipy.signal.upfirdn`):
  zeros go after every input pixel, padding is with respect to the
  upsampled image, and `flip_filter=False` is a true convolution.
  """
  c = x_NHWC.shape[-1]
  px0, px1, py0, py1 = _parse_padding(padding)
  # Zero insertion after every pixel (the last one too) plus padding or
  # cropping, all in one lax.pad: interior padding puts up-1 zeros between
  # pixels, the trailing up-1 come from the high edge.
  x = jax.lax.pad(x_NHWC, jnp.zeros((), x_NHWC.dtype),
                  [(0, 0, 0), (py0, py1 + up - 1, up - 1),
                   (px0, px1 + up - 1, up - 1), (0, 0, 0)])
  f2 = jnp.ones((1, 1), jnp.float32) if f is None else _filter_2d(f)
  f2 = f2 * gain
  if not flip_filter:
    f2 = f2[::-1, ::-1]
  fh, fw = f2.shape
  if fh * fw <= _MAX_SHIFTED_TAPS:
    # A sum of shifted, scaled copies: the same valid correlation, but
    # elementwise ops, whose gradient XLA:CPU runs several times faster
    # than that of a depthwise (grouped) convolution.
    oh = (x.shape[1] - fh) // down + 1
    ow = (x.shape[2] - fw) // down + 1
    f2 = f2.astype(x.dtype)
    return sum(f2[a, b] * x[:, a:a + (oh - 1) * down + 1:down,
                            b:b + (ow - 1) * down + 1:down]
               for a in range(fh) for b in range(fw))
  kernel = jnp.broadcast_to(f2[:, :, None, None], (*f2.shape, 1, c))
  # Keeping every `down`-th output of a valid convolution is a strided one.
  return jax.lax.conv_general_dilated(
      x, kernel.astype(x.dtype), window_strides=(down, down), padding="VALID",
      dimension_numbers=_DIMS, feature_group_count=c)


def upsample2d(x_NHWC: jax.Array, f: jax.Array | np.ndarray, up: int = 2,
               gain: float = 1.0) -> jax.Array:
  """Upsamples by `up` keeping the image size an exact multiple."""
  f2 = _filter_2d(f)
  fh, fw = f2.shape
  p = ((fw + up - 1) // 2, (fw - up) // 2, (fh + up - 1) // 2, (fh - up) // 2)
  return upfirdn2d(x_NHWC, f2, up=up, padding=p, gain=gain * up * up)


def conv2d_resample(x_NHWC: jax.Array, w_HWIO: jax.Array,
                    f: jax.Array | np.ndarray | None = None, up: int = 1,
                    padding: int | Sequence[int] = 0,
                    flip_weight: bool = True) -> jax.Array:
  """2-D convolution with optional upsampling, as official `conv2d_resample`.

  `flip_weight=True` is a correlation (torch `conv2d`); the official layers
  pass False when upsampling, which the transposed convolution undoes.
  Padding is with respect to the upsampled image.
  """
  kh, kw = w_HWIO.shape[:2]
  px0, px1, py0, py1 = _parse_padding(padding)
  w = w_HWIO.astype(x_NHWC.dtype)
  if up == 1:
    if not flip_weight:
      w = w[::-1, ::-1]
    return jax.lax.conv_general_dilated(
        x_NHWC, w, (1, 1), [(py0, py1), (px0, px1)], dimension_numbers=_DIMS)
  fh, fw = _filter_2d(f).shape
  px0 += (fw + up - 1) // 2
  px1 += (fw - up) // 2
  py0 += (fh + up - 1) // 2
  py1 += (fh - up) // 2
  if kh == 1 and kw == 1:
    # 1x1 kernels: convolve at low resolution, then upsample.
    x = jax.lax.conv_general_dilated(x_NHWC, w, (1, 1), "VALID",
                                     dimension_numbers=_DIMS)
    return upfirdn2d(x, f, up=up, padding=(px0, px1, py0, py1), gain=up * up)
  # Official: conv_transpose2d(stride=up) with the weight flipped only if
  # flip_weight, cropped by (pxt, pyt); then the FIR filter with gain up^2.
  px0 -= kw - 1
  px1 -= kw - up
  py0 -= kh - 1
  py1 -= kh - up
  pxt = max(min(-px0, -px1), 0)
  pyt = max(min(-py0, -py1), 0)
  # A transposed convolution is a correlation of the zero-dilated input,
  # padded by k-1 (less the crop), with the spatially flipped kernel.
  if not flip_weight:
    w = w[::-1, ::-1]
  x = jax.lax.conv_general_dilated(
      x_NHWC, w, (1, 1), [(kh - 1 - pyt,) * 2, (kw - 1 - pxt,) * 2],
      lhs_dilation=(up, up), dimension_numbers=_DIMS)
  return upfirdn2d(x, f, padding=(px0 + pxt, px1 + pxt, py0 + pyt, py1 + pyt),
                   gain=up * up)


def normalize_2nd_moment(x: jax.Array, axis: int = -1,
                         eps: float = 1e-8) -> jax.Array:
  return x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=axis, keepdims=True)
                           + eps)


def modulated_conv2d(x_NHWC: jax.Array, w_HWIO: jax.Array, styles_NI: jax.Array,
                     noise: jax.Array | None = None, up: int = 1,
                     padding: int = 0,
                     resample_filter: jax.Array | None = None,
                     demodulate: bool = True,
                     flip_weight: bool = True) -> jax.Array:
  """StyleGAN2 modulated convolution, in the official non-fused form.

  Scaling the input by the styles and the output by the demodulation
  coefficients equals convolving with per-sample weights (the official
  fused path) but shares one weight across the batch, which is cheaper when
  PPA optimises many latents at once.
  """
  x = x_NHWC * styles_NI[:, None, None, :].astype(x_NHWC.dtype)
  x = conv2d_resample(x, w_HWIO, f=resample_filter, up=up, padding=padding,
                      flip_weight=flip_weight)
  if demodulate:
    # sum_{h,w,i} (W[h,w,i,o] s_i)^2 = sum_i s_i^2 sum_{h,w} W[h,w,i,o]^2.
    w_sq_IO = jnp.sum(jnp.square(w_HWIO), axis=(0, 1))
    dcoefs_NO = jax.lax.rsqrt(jnp.square(styles_NI) @ w_sq_IO + 1e-8)
    x = x * dcoefs_NO[:, None, None, :].astype(x.dtype)
  if noise is not None:
    x = x + noise.astype(x.dtype)
  return x


def demodulated_weights(w_HWIO: jax.Array, styles_NI: jax.Array) -> jax.Array:
  """The per-sample weights the fused official op convolves with: N,H,W,I,O."""
  w = w_HWIO[None] * styles_NI[:, None, None, :, None]
  dcoefs = jax.lax.rsqrt(jnp.sum(jnp.square(w), axis=(1, 2, 3)) + 1e-8)
  return w * dcoefs[:, None, None, None, :]
