"""Stride-1 decode/encode through the FFT: the same linear maps as
`ops.decode` / `ops.encode`, at a fraction of the FLOPs.

At stride 1 the decoder is a full convolution cropped to the image and the
encoder its adjoint, a correlation with "same" zero padding. Both are exact
as circular convolutions on an N x N grid with N >= max(H + lo,
H + K - 1 - lo), lo the "same" padding before the image: the wrap-around
then lands only in rows the crop drops or the padding holds at zero
(`fft_size`; 30 for 28x28 images and 5x5 atoms, not 32). In the Fourier
domain each frequency then needs one (B, F) @ (F, C) product instead of
K*K of them: for 16 -> 28 features, 28x28 images and 5x5 atoms, one
decode + encode pair is ~0.4 GFLOP (FFTs and per-frequency products) at batch 64 against 2.2 GFLOP
for the two convolutions, and XLA's CPU convolutions run those at a fraction
of the matmul peak (docs/performance.md).

`SpectralDictionary` transforms the dictionary once per solve; gradients
flow through the FFTs, the products and that transform by ordinary autodiff
(the FFT's transpose is an FFT), so no custom VJP is needed. Results equal
the direct convolutions to float32 rounding (~1e-6 relative; tested).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp

from sca_jax.lca.ops import decode, encode, same_padding

# Auto-selection: the FFT pays where the per-pixel product is large. Measured
# (docs/performance.md): 16 -> 28 wins; a single input channel's direct fast
# paths (taps decode, im2col encode) are cheaper at any feature count (one
# LCA iteration, batch 64, idle machine: 1 -> 64 takes 5.4 ms direct, 36 ms
# through the FFT).
_MIN_CHANNEL_PRODUCT = 64


def fft_size(n: int, kernel: int) -> int:
  """The smallest even grid with only factors 2, 3, 5 on which the decode
  and encode of an n-pixel side are exact circular convolutions.

  The image sits at offset lo (the "same" padding), so the grid must hold
  n + lo; the decoder's full output has n + kernel - 1 rows, of which the
  ones past the grid wrap onto rows [0, n + kernel - 1 - N), which must stay
  below lo, where the crop drops them (and the encoder reads the padding's
  zeros). For 28 pixels and 5 taps: 30 rather than 32, 12% fewer
  frequencies (measured: one decode + encode 13%, its gradient 16% faster).
  """
  lo = same_padding(n, kernel, 1)[0]
  m = max(n + lo, n + kernel - 1 - lo)
  while True:
    m += m % 2
    r = m
    for p in (2, 3, 5):
      while r % p == 0:
        r //= p
    if r == 1:
      return m
    m += 1


def worth_it(D_KKCF_shape: tuple[int, ...], stride: int) -> bool:
  """Whether `conv="auto"` takes the FFT path for this dictionary shape."""
  _, _, c, f = D_KKCF_shape
  return stride == 1 and c > 1 and c * f >= _MIN_CHANNEL_PRODUCT


@dataclasses.dataclass(frozen=True)
class SpectralDictionary:
  """The dictionary's transform on an N x M grid, frequency-major.

  D_PFC[p, f, c]: frequency p of atom f's channel c (P = N * (M // 2 + 1));
  DH_PCF its conjugate transpose, the encoder's, formed once here so that
  the solver loop's backward accumulates both cotangents without a
  per-iteration transpose (profiled: 3.6 ms of each iteration).
  `lo` is the encoder's top/left "same" padding: the image sits at offset
  (lo_h, lo_w) in the grid, where the decoder's full output lines up with it.
  """

  D_PFC: jax.Array
  DH_PCF: jax.Array
  hw: tuple[int, int]
  grid: tuple[int, int]
  lo: tuple[int, int]

  @classmethod
  def build(cls, D_KKCF: jax.Array, hw: tuple[int, int]) -> SpectralDictionary:
    k = D_KKCF.shape[0]
    grid = (fft_size(hw[0], k), fft_size(hw[1], k))
    lo = (same_padding(hw[0], k, 1)[0], same_padding(hw[1], k, 1)[0])
    # The atom's transform as a (P, K*K) DFT matrix product: an FFT of the
    # zero-padded atoms ran ~20x slower per element than the batch's FFTs
    # (profiled), and the atoms have only K*K non-zero taps.
    fy = jnp.fft.fftfreq(grid[0])[:, None]
    fx = jnp.fft.rfftfreq(grid[1])[None, :]
    taps = jnp.arange(k, dtype=jnp.float32)
    phase = (fy[:, :, None, None] * taps[:, None] +
             fx[:, :, None, None] * taps[None, :])      # (N, M', K, K)
    dft_PT = jnp.exp(-2j * jnp.pi * phase).reshape(-1, k * k).astype(
        jnp.result_type(D_KKCF.dtype, jnp.complex64))
    D_PFC = (dft_PT @ D_KKCF.reshape(k * k, -1).astype(dft_PT.dtype)).reshape(
        -1, *D_KKCF.shape[2:]).transpose(0, 2, 1)
    return cls(D_PFC, jnp.conj(D_PFC).transpose(0, 2, 1), tuple(hw), grid, lo)

  def _to_freq(self, x_BCHW: jax.Array) -> jax.Array:
    X = jnp.fft.rfft2(x_BCHW, s=self.grid)                    # (B, C, N, M')
    return X.reshape(*X.shape[:2], -1).transpose(2, 0, 1)     # (P, B, C)

  def _from_freq(self, X_PBC: jax.Array) -> jax.Array:
    _, b, c = X_PBC.shape
    X = X_PBC.transpose(1, 2, 0).reshape(b, c, self.grid[0], -1)
    return jnp.fft.irfft2(X, s=self.grid)                     # (B, C, N, M)

  def decode(self, a_BHWF: jax.Array) -> jax.Array:
    """`ops.decode(a, D, 1, hw)`: the reconstruction D a, (B, H, W, C)."""
    A_PBF = self._to_freq(a_BHWF.transpose(0, 3, 1, 2))
    full = self._from_freq(A_PBF @ self.D_PFC)
    (h, w), (lh, lw) = self.hw, self.lo
    return full[:, :, lh:lh + h, lw:lw + w].transpose(0, 2, 3, 1).astype(
        a_BHWF.dtype)

  def encode(self, x_BHWC: jax.Array) -> jax.Array:
    """`ops.encode(x, D, 1)`: correlation with every atom, (B, H, W, F)."""
    (h, w), (lh, lw) = self.hw, self.lo
    x_BCNM = jnp.pad(x_BHWC.transpose(0, 3, 1, 2),
                     ((0, 0), (0, 0), (lh, self.grid[0] - h - lh),
                      (lw, self.grid[1] - w - lw)))
    X_PBC = self._to_freq(x_BCNM)
    # Correlation: multiply by the conjugate transform, (P, B, C) @ (P, C, F).
    corr = self._from_freq(X_PBC @ self.DH_PCF)
    return corr[:, :, :h, :w].transpose(0, 2, 3, 1).astype(x_BHWC.dtype)


def operators(D_KKCF: jax.Array, hw: tuple[int, int], stride: int,
              conv: str) -> tuple[Callable, Callable]:
  """(decode, encode) of one solve: a -> D a and r -> D^T r, by `conv`."""
  if conv == "fft" or (conv == "auto" and worth_it(D_KKCF.shape, stride)):
    S = SpectralDictionary.build(D_KKCF, tuple(hw))
    return S.decode, S.encode
  return (lambda a: decode(a, D_KKCF, stride, hw),
          lambda r: encode(r, D_KKCF, stride))
