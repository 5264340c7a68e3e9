"""The encoder (strided "same" convolution), its exact adjoint the decoder,
thresholds and the objective.

Both convolutions carry a custom VJP whose dictionary gradient is a forward
convolution (see `_dictionary_grad`). At stride 1 with a single input channel the
decode is one matmul over features plus K*K shifted adds, and a few-feature
encode an im2col matmul: faster than XLA's CPU convolutions there (see
`_conv`, `_conv_t`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from sca_jax.lca.config import THRESHOLDS

_DIMS = ("NHWC", "HWIO", "NHWC")


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
  """TensorFlow-style "same" padding: output size ceil(size / stride)."""
  out = -(-size // stride)
  total = max((out - 1) * stride + kernel - size, 0)
  return total // 2, total - total // 2


def _pads(size: int, kernel: int, stride: int) -> tuple[tuple[int, int], ...]:
  """(encoder padding, decoder padding) along one spatial axis.

  The decoder's (k-1-lo, k-1-hi+r), with r the rows the strided encoder
  skipped, makes it the exact adjoint of the encoder for every size and stride.
  """
  lo, hi = same_padding(size, kernel, stride)
  skipped = (size + lo + hi - kernel) % stride
  return (lo, hi), (kernel - 1 - lo, kernel - 1 - hi + skipped)


# Stride-1 fast paths, chosen by measurement on a 2-core AVX2 CPU (batch 64,
# 28x28, kernel 5; results/bench/bench_lca.json "forward"). XLA's CPU conv
# (Eigen) is slow when the decoder writes a single channel (64 -> 1: 17 ms of a
# 22 ms iteration) and, erratically, when a 1-channel encoder has few features
# (1 -> 8 or 16 slower than 1 -> 64); an im2col matrix product wins there. With
# more input channels the patches matrix grows C-fold and the convolution wins.
_PATCHES_ENCODE_MAX_FEATURES = 24
# Read at trace time; sca_jax.bench.common switches it off to time the
# generic convolution paths against the fast ones.
_STRIDE1_FAST_PATHS = True


def _taps_decode_ok(D_KKCF, stride) -> bool:
  return _STRIDE1_FAST_PATHS and stride == 1 and D_KKCF.shape[2] == 1


def _patches_encode_ok(D_KKCF, stride) -> bool:
  return (_STRIDE1_FAST_PATHS and stride == 1 and D_KKCF.shape[2] == 1
          and D_KKCF.shape[3] < _PATCHES_ENCODE_MAX_FEATURES)


# Jitted so that eager calls (outside any jit) compile once instead of
# dispatching the K*K taps op by op; inside a jit they are inlined.
@functools.partial(jax.jit, static_argnums=(2, 3))
def _conv(x_BHWC, D_KKCF, stride, hw):
  pads = [_pads(n, D_KKCF.shape[0], stride)[0] for n in hw]
  if _patches_encode_ok(D_KKCF, stride):
    k, _, c, f = D_KKCF.shape
    patches = lax.conv_general_dilated_patches(
        x_BHWC, (k, k), (1, 1), pads, dimension_numbers=_DIMS)  # (c, i, j)
    D_PF = D_KKCF.transpose(2, 0, 1, 3).reshape(c * k * k, f)
    return (patches.reshape(-1, c * k * k) @ D_PF).reshape(
        *x_BHWC.shape[:3], f)
  return lax.conv_general_dilated(x_BHWC, D_KKCF, (stride, stride), pads,
                                  dimension_numbers=_DIMS)


def _decode_taps(a_BHWF, D_KKCF, hw):
  """Stride-1 decode as one matmul over features, then K*K shifted adds.

  P[b, h, w, i, j] = sum_f a[b, h, w, f] D[i, j, :, f] is the atom placed at
  code position (h, w); pixel (h - lo + i, w - lo + j) receives tap (i, j).
  Each tap's slice is padded back to the image size separately so XLA fuses
  all K*K adds into one loop without materialising a padded copy of P.
  """
  k, _, c, f = D_KKCF.shape
  (h, w), b = hw, a_BHWF.shape[0]
  lo_h, lo_w = same_padding(h, k, 1)[0], same_padding(w, k, 1)[0]
  D_FP = D_KKCF.transpose(3, 0, 1, 2).reshape(f, k * k * c)
  P = (a_BHWF.reshape(-1, f) @ D_FP).reshape(b, h, w, k, k, c)
  out = jnp.zeros((b, h, w, c), a_BHWF.dtype)
  for i in range(k):
    for j in range(k):
      di, dj = i - lo_h, j - lo_w  # tap (i, j) lands di rows lower
      if abs(di) >= h or abs(dj) >= w:
        continue  # falls entirely outside the image
      tap = P[:, max(0, -di):h - max(0, di), max(0, -dj):w - max(0, dj), i, j]
      out = out + jnp.pad(tap, ((0, 0), (max(0, di), max(0, -di)),
                                (max(0, dj), max(0, -dj)), (0, 0)))
  return out


@functools.partial(jax.jit, static_argnums=(2, 3))
def _conv_t(a_BHWF, D_KKCF, stride, hw):
  if _taps_decode_ok(D_KKCF, stride):
    return _decode_taps(a_BHWF, D_KKCF, hw)
  pads = [_pads(n, D_KKCF.shape[0], stride)[1] for n in hw]
  return lax.conv_transpose(a_BHWF, D_KKCF, (stride, stride), pads,
                            dimension_numbers=_DIMS, transpose_kernel=True)


def _dictionary_grad(x_BHWC, g_BHWF, kernel, stride):
  """sum over patches of x_patch (x) g: the dictionary gradient of <conv(x, D), g>.

  Written as a forward convolution with the roles swapped (the input's
  channels as batch, its batch as channels, the cotangent as a kernel dilated
  by the stride) because XLA on CPU runs weight-gradient convolutions 10-30x
  slower inside loop bodies than outside (jax-ml/jax#12868), which made
  gradients through the unrolled solver unusably slow. An im2col matmul
  (`lax.conv_general_dilated_patches`) was 4x slower again on 16 -> 28
  features inside the solver's scan: the patches are K*K times the input.
  """
  pads = [_pads(n, kernel, stride)[0] for n in x_BHWC.shape[1:3]]
  # Accumulates in at least float32 (bfloat16 inputs), float64 under x64.
  acc = jnp.promote_types(jnp.result_type(x_BHWC, g_BHWF), jnp.float32)
  grad_CKKF = lax.conv_general_dilated(
      x_BHWC.transpose(3, 1, 2, 0), g_BHWF.transpose(1, 2, 0, 3), (1, 1),
      pads, rhs_dilation=(stride, stride), dimension_numbers=_DIMS,
      preferred_element_type=acc)
  # Rows the strided encoder skipped at the far edge leave extra outputs.
  return grad_CKKF[:, :kernel, :kernel].transpose(1, 2, 0, 3).astype(
      x_BHWC.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _encode(x_BHWC, D_KKCF, stride, hw):
  return _conv(x_BHWC, D_KKCF, stride, hw)


def _encode_fwd(x_BHWC, D_KKCF, stride, hw):
  return _conv(x_BHWC, D_KKCF, stride, hw), (x_BHWC, D_KKCF)


def _encode_bwd(stride, hw, res, g_BHWF):
  x_BHWC, D_KKCF = res
  return (_conv_t(g_BHWF, D_KKCF, stride, hw),
          _dictionary_grad(x_BHWC, g_BHWF, D_KKCF.shape[0], stride))


_encode.defvjp(_encode_fwd, _encode_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _decode(a_BHWF, D_KKCF, stride, hw):
  return _conv_t(a_BHWF, D_KKCF, stride, hw)


def _decode_fwd(a_BHWF, D_KKCF, stride, hw):
  return _conv_t(a_BHWF, D_KKCF, stride, hw), (a_BHWF, D_KKCF)


def _decode_bwd(stride, hw, res, g_BHWC):
  a_BHWF, D_KKCF = res
  # <g, decode(a, D)> == <encode(g, D), a>: the same dictionary gradient.
  return (_conv(g_BHWC, D_KKCF, stride, hw),
          _dictionary_grad(g_BHWC, a_BHWF, D_KKCF.shape[0], stride))


_decode.defvjp(_decode_fwd, _decode_bwd)


def encode(x_BHWC: jax.Array, D_KKCF: jax.Array, stride: int = 1) -> jax.Array:
  """Correlates the input with every atom: `D^T x`, shape (B, H/s, W/s, F)."""
  return _encode(x_BHWC, D_KKCF, stride, tuple(x_BHWC.shape[1:3]))


def decode(a_BHWF: jax.Array, D_KKCF: jax.Array, stride: int,
           out_hw: tuple[int, int]) -> jax.Array:
  """Reconstruction `D a` (B, H, W, C) by conv_transpose: the adjoint of `encode`."""
  return _decode(a_BHWF, D_KKCF, stride, tuple(out_hw))


# ----------------------------------------------------------------------------
# Thresholds and the objective
# ----------------------------------------------------------------------------


def threshold(u: jax.Array, lam: float, kind: str = "soft_nonneg") -> jax.Array:
  """T_lam(u): `relu(u - lam)`, signed soft shrinkage, or hard threshold."""
  if kind == "soft_nonneg":
    return jax.nn.relu(u - lam)
  if kind == "soft":
    return jnp.sign(u) * jax.nn.relu(jnp.abs(u) - lam)
  if kind == "hard":
    return jnp.where(jnp.abs(u) > lam, u, 0.0)
  raise ValueError(f"threshold must be one of {THRESHOLDS}, got {kind!r}")


def normalize_input(x_BHWC: jax.Array, eps: float = 1e-6) -> jax.Array:
  """Per-sample zero mean, unit variance, as lanl/lca-pytorch does by default."""
  mean = jnp.mean(x_BHWC, axis=(1, 2, 3), keepdims=True)
  std = jnp.std(x_BHWC, axis=(1, 2, 3), keepdims=True)
  return (x_BHWC - mean) / (std + eps)


def objective(x_BHWC: jax.Array, a_BHWF: jax.Array, D_KKCF: jax.Array,
              lam: float, stride: int = 1) -> jax.Array:
  """Per-sample `0.5 ||x - D a||^2 + lam ||a||_1`, shape (B,)."""
  resid = x_BHWC - decode(a_BHWF, D_KKCF, stride, x_BHWC.shape[1:3])
  return (0.5 * jnp.sum(resid**2, axis=(1, 2, 3))
          + lam * jnp.sum(jnp.abs(a_BHWF), axis=(1, 2, 3)))


def kkt_residual(x_BHWC: jax.Array, a_BHWF: jax.Array, D_KKCF: jax.Array,
                 lam: float, kind: str = "soft_nonneg",
                 stride: int = 1) -> jax.Array:
  """Per-sample distance of codes `a` from the minimiser's optimality
  conditions, relative: `||r|| / ||D^T x||`, shape (B,); 0 exactly at the
  optimum of the (convex) soft-threshold objectives.

  With `c = D^T (x - D a)`: on the active set `r = c - lam sign(a)`; off it,
  the part of `c` the subgradient cannot absorb, `max(c - lam, 0)`
  (non-negative codes) or `max(|c| - lam, 0)` (signed). Unlike the objective
  gap, it is small only when the codes themselves are near the minimiser.
  """
  if kind not in ("soft_nonneg", "soft"):
    raise ValueError(f"kkt_residual needs a soft threshold, got {kind!r}")
  hw = x_BHWC.shape[1:3]
  c = encode(x_BHWC - decode(a_BHWF, D_KKCF, stride, hw), D_KKCF, stride)
  off = jax.nn.relu(c - lam) if kind == "soft_nonneg" else jax.nn.relu(
      jnp.abs(c) - lam)
  r = jnp.where(a_BHWF != 0, c - lam * jnp.sign(a_BHWF), off)
  axes = (1, 2, 3)
  return (jnp.sqrt(jnp.sum(r**2, axis=axes)) /
          jnp.sqrt(jnp.sum(encode(x_BHWC, D_KKCF, stride)**2, axis=axes)))



def trace_stats(resid_BHWC, a_BHWF, lam) -> dict[str, jax.Array]:
  """Per-sample objective, reconstruction error, active fraction of codes a."""
  recon = 0.5 * jnp.sum(resid_BHWC**2, axis=(1, 2, 3))
  return {"objective": recon + lam * jnp.sum(jnp.abs(a_BHWF), axis=(1, 2, 3)),
          "recon_error": recon,
          "active_fraction": jnp.mean(a_BHWF != 0, axis=(1, 2, 3))}


def zero_codes(x_BHWC, D_KKCF, stride):
  out_hw = [-(-n // stride) for n in x_BHWC.shape[1:3]]
  return jnp.zeros((x_BHWC.shape[0], *out_hw, D_KKCF.shape[-1]), x_BHWC.dtype)
