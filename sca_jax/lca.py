"""Convolutional Locally Competitive Algorithm (Rozell et al. 2008), compiled.

Pure functions over (input, dictionary, settings); no Flax. The solver minimises

    E(a) = 0.5 * ||x - D * a||^2 + lam * ||a||_1            (paper, Eq. 1)

where `D * a` is the transposed convolution of the codes `a_BHWF` with the
dictionary `D_KKCF` (the decoder) and its adjoint, the strided "same"
convolution, is the encoder. The membrane potentials follow

    u <- u + (1/tau) * (b - u - (encode(decode(a)) - a)),   a = T_lam(u),

with drive `b = encode(x)`. `encode(decode(a)) - a` is the lateral competition
`(D^T D - I) a`, computed through one conv_transpose and one conv: the
competition kernel G = D^T D - I is never materialised (for 64 features it
would be a 9x9x64x64 kernel, 20x slower on CPU). By linearity the drive and
competition combine into `encode(x - decode(a))`, the encoded reconstruction
residual, which is what the loop computes: one decode and one encode per
iteration, and the residual gives the reconstruction error for the trace.
At stride 1 with a single input channel the decode is one matmul over
features plus K*K shifted adds, and a few-feature encode an im2col matmul:
faster than XLA's CPU convolutions there (see `_conv`, `_conv_t`).

The iterations run as a `jax.lax.scan`, so the solve is differentiable end to
end (input and dictionary); `remat=True` recomputes each step's intermediates
in the backward pass instead of storing them, `grad="remat_chunked"`
checkpoints nested chunks (two levels: ~sqrt(T) steps each), and
`grad="implicit"` differentiates the fixed point instead of the iterations
(see `_solve_implicit_bwd`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

THRESHOLDS = ("soft_nonneg", "soft", "hard")
SOLVERS = ("lca", "fista")
GRADS = ("unrolled", "remat_chunked", "implicit")
_DIMS = ("NHWC", "HWIO", "NHWC")


@dataclasses.dataclass(frozen=True)
class LCAConfig:
  """Settings of one LCA solve (hashable: used as a static jit argument).

  `grad` picks how gradients flow through the solve: "unrolled" is autodiff
  through every iteration (`remat=True` recomputes each step instead of
  storing it); "remat_chunked" checkpoints nested chunks, `remat_levels`
  levels of ~num_iters^(1/levels) steps (two levels: memory ~2 sqrt(T)
  states, one extra forward pass; each further level trades one more forward
  pass for memory), same gradient as "unrolled"; "implicit" differentiates
  the exact minimiser at the fixed point (memory of one solve, backward cost
  at most `cg_iters` decode/encode pairs, stopping at relative residual
  `cg_tol`): it matches the unrolled gradient only once the solve has
  converged, codes and active set, not just the objective (see
  `kkt_residual` and `_solve_implicit_bwd`).
  `fista_restart` resets FISTA's momentum per sample when it points uphill
  (O'Donoghue & Candes 2015): same fixed point, faster final convergence.
  """

  lam: float = 0.5
  tau: float = 100.0
  num_iters: int = 500
  stride: int = 1
  threshold: str = "soft_nonneg"
  normalize_input: bool = True
  remat: bool = False
  solver: str = "lca"
  fista_restart: bool = False
  grad: str = "unrolled"
  remat_levels: int = 2
  cg_iters: int = 200
  cg_tol: float = 1e-6

  def __post_init__(self):
    if not self.lam >= 0:
      raise ValueError(f"lam (sparsity lambda) must be >= 0, got {self.lam}")
    if not self.tau >= 1:
      raise ValueError(f"tau must be >= 1 (step size 1/tau), got {self.tau}")
    if int(self.num_iters) < 1:
      raise ValueError(f"num_iters must be >= 1, got {self.num_iters}")
    if int(self.stride) < 1:
      raise ValueError(f"stride must be >= 1, got {self.stride}")
    if self.solver not in SOLVERS:
      raise ValueError(f"solver must be one of {SOLVERS}, got {self.solver!r}")
    if self.solver == "fista" and self.threshold == "hard":
      raise ValueError("solver 'fista' needs a soft threshold (convex objective)")
    if self.grad not in GRADS:
      raise ValueError(f"grad must be one of {GRADS}, got {self.grad!r}")
    if int(self.remat_levels) < 1:
      raise ValueError(f"remat_levels must be >= 1, got {self.remat_levels}")
    if int(self.cg_iters) < 1 or not self.cg_tol > 0:
      raise ValueError(f"cg_iters must be >= 1 and cg_tol > 0, got "
                       f"{self.cg_iters}, {self.cg_tol}")
    if self.threshold not in THRESHOLDS:
      raise ValueError(
          f"threshold must be one of {THRESHOLDS}, got {self.threshold!r}")


class LCAResult(NamedTuple):
  codes_BHWF: jax.Array           # thresholded state after the last iteration
  potentials_BHWF: jax.Array      # membrane potentials u after the last iteration
  input_BHWC: jax.Array           # the (optionally normalised) input that was coded
  trace: dict[str, jax.Array] | None  # per-iteration (T, B) objective/recon/active


# ----------------------------------------------------------------------------
# Dictionaries
# ----------------------------------------------------------------------------


def normalize_dictionary(D_KKCF: jax.Array, eps: float = 1e-12) -> jax.Array:
  """Scales every atom (one output feature's K x K x C kernel) to unit L2 norm."""
  norms_F = jnp.sqrt(jnp.sum(D_KKCF**2, axis=(0, 1, 2), keepdims=True))
  return D_KKCF / jnp.maximum(norms_F, eps)


# Jitted: eagerly, the truncated normal dispatches (and compiles) op by op.
@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def init_dictionary(key: jax.Array, kernel: int, in_channels: int,
                    features: int) -> jax.Array:
  """Unit-norm atoms from a truncated normal, as lanl/lca-pytorch initialises."""
  D = jax.random.truncated_normal(key, -2.0, 2.0,
                                  (kernel, kernel, in_channels, features))
  return normalize_dictionary(D)


# ----------------------------------------------------------------------------
# Encoder (strided "same" convolution) and its exact adjoint, the decoder
# ----------------------------------------------------------------------------


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
# 28x28, kernel 5; numbers in results/bench/README.md). XLA's CPU convolution
# (Eigen) is slow when the decoder writes a single channel (64 -> 1: 17 ms of a
# 22 ms iteration) and, erratically, when a 1-channel encoder has few features
# (1 -> 8 or 16 slower than 1 -> 64); an im2col matrix product wins there. With
# more input channels the patches matrix grows C-fold and the convolution wins.
_PATCHES_ENCODE_MAX_FEATURES = 24
# Read at trace time; scripts/bench_lca.py switches it off to time the
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

  Written as im2col + one matmul because XLA on CPU runs weight-gradient
  convolutions 10-30x slower inside loop bodies than outside (jax-ml/jax#12868),
  which made gradients through the unrolled solver unusably slow.
  """
  pads = [_pads(n, kernel, stride)[0] for n in x_BHWC.shape[1:3]]
  patches = lax.conv_general_dilated_patches(
      x_BHWC, (kernel, kernel), (stride, stride), pads,
      dimension_numbers=_DIMS)  # (B, H', W', C*K*K), channel-major
  c, f = x_BHWC.shape[-1], g_BHWF.shape[-1]
  # Accumulates in at least float32 (bfloat16 inputs), float64 under x64.
  acc = jnp.promote_types(jnp.result_type(x_BHWC, g_BHWF), jnp.float32)
  grad_CKKF = jnp.einsum("bhwp,bhwf->pf", patches, g_BHWF,
                         preferred_element_type=acc).astype(x_BHWC.dtype)
  return grad_CKKF.reshape(c, kernel, kernel, f).transpose(1, 2, 0, 3)


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


# ----------------------------------------------------------------------------
# The solver
# ----------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("cfg", "return_trace"))
def solve(x_BHWC: jax.Array, D_KKCF: jax.Array, cfg: LCAConfig,
          return_trace: bool = False) -> LCAResult:
  """Runs `cfg.num_iters` solver iterations from zero; returns the codes.

  Gradients with respect to the input and the dictionary follow `cfg.grad`.
  With `grad="implicit"` only the codes carry gradients: the potentials and
  the trace are returned as constants.
  """
  if x_BHWC.ndim != 4 or D_KKCF.ndim != 4:
    raise ValueError(f"expected x (B,H,W,C) and D (K,K,C,F), got "
                     f"{x_BHWC.shape} and {D_KKCF.shape}")
  if x_BHWC.shape[-1] != D_KKCF.shape[2]:
    raise ValueError(f"input has {x_BHWC.shape[-1]} channels but the "
                     f"dictionary expects {D_KKCF.shape[2]}")
  if cfg.normalize_input:
    x_BHWC = normalize_input(x_BHWC)
  if cfg.grad == "implicit":
    a, u, trace = _solve_implicit(x_BHWC, D_KKCF, cfg, return_trace)
    u, trace = lax.stop_gradient((u, trace))
  else:
    a, u, trace = _iterate(x_BHWC, D_KKCF, cfg, return_trace)
  return LCAResult(a, u, x_BHWC, trace)


def _iterate(x_BHWC, D_KKCF, cfg: LCAConfig, return_trace: bool):
  """(codes, potentials, trace) after `cfg.num_iters` steps of the solver."""
  if cfg.solver == "fista":
    return _iterate_fista(x_BHWC, D_KKCF, cfg, return_trace)
  hw = x_BHWC.shape[1:3]
  s, lam, eta = cfg.stride, cfg.lam, 1.0 / cfg.tau

  def step(u, _):
    a = threshold(u, lam, cfg.threshold)
    resid = x_BHWC - decode(a, D_KKCF, s, hw)
    # b - (D^T D - I) a == D^T (x - D a) + a.
    u_new = u + eta * (encode(resid, D_KKCF, s) - u + a)
    return u_new, (_trace(resid, a, lam) if return_trace else None)

  u, trace = _scan(step, _zero_codes(x_BHWC, D_KKCF, s), cfg.num_iters, cfg)
  return threshold(u, lam, cfg.threshold), u, trace


def _zero_codes(x_BHWC, D_KKCF, stride):
  out_hw = [-(-n // stride) for n in x_BHWC.shape[1:3]]
  return jnp.zeros((x_BHWC.shape[0], *out_hw, D_KKCF.shape[-1]), x_BHWC.dtype)


def _scan(step, init, length: int, cfg: LCAConfig):
  """`lax.scan(step, init, None, length)` under the configured gradient
  schedule: every step stored, every step recomputed (`remat`), or chunks."""
  if cfg.grad == "remat_chunked":
    return _chunked_scan(step, init, length, cfg.remat_levels)
  if cfg.remat:
    step = jax.checkpoint(step)
  return lax.scan(step, init, None, length=length)


def _chunked_scan(step, init, length: int, levels: int):
  """Nested checkpointing (Griewank): `levels` levels of chunks of ~T^(1/levels)
  steps, each chunk's scan under `jax.checkpoint`.

  The backward pass keeps one carry per chunk on each level plus the steps of
  the innermost chunk being differentiated: ~levels * T^(1/levels) states
  instead of T (two levels: ~2 sqrt(T)), for levels - 1 extra forward passes.
  """
  if levels <= 1 or length <= 1:
    return lax.scan(step, init, None, length=length)
  chunk = max(1, round(length ** (1.0 / levels)))
  while chunk**levels < length:
    chunk += 1
  block = chunk**(levels - 1)  # steps per outer chunk
  n, rem = divmod(length, block)

  def run(num_steps):
    return jax.checkpoint(
        lambda c: _chunked_scan(step, c, num_steps, levels - 1))

  carry, ys = lax.scan(lambda c, _: run(block)(c), init, None, length=n)
  ys = jax.tree.map(lambda y: y.reshape(n * block, *y.shape[2:]), ys)
  if rem:
    carry, ys_rem = run(rem)(carry)
    ys = jax.tree.map(lambda y, z: jnp.concatenate([y, z]), ys, ys_rem)
  return carry, ys


def lipschitz(D_KKCF: jax.Array, hw: tuple[int, int], stride: int = 1,
              num_iters: int = 30) -> jax.Array:
  """Largest eigenvalue of D^T D (the gradient's Lipschitz constant), by
  power iteration on one image-sized problem. Power iteration approaches it
  from below; the 5% margin keeps the FISTA step 1/L on the stable side."""
  out_hw = [-(-n // stride) for n in hw]
  v = jnp.ones((1, *out_hw, D_KKCF.shape[-1]), D_KKCF.dtype)

  def body(_, v):
    w = encode(decode(v, D_KKCF, stride, hw), D_KKCF, stride)
    return w / jnp.linalg.norm(w)

  v = lax.fori_loop(0, num_iters, body, v / jnp.linalg.norm(v))
  Dv = decode(v, D_KKCF, stride, hw)
  return 1.05 * jnp.sum(Dv**2) / jnp.sum(v**2)


def _iterate_fista(x_BHWC, D_KKCF, cfg: LCAConfig, return_trace: bool):
  """FISTA (Beck & Teboulle 2009) on the LCA objective: same fixed point as
  the LCA dynamics, reached in far fewer iterations. Step 1/L; the state
  returned as "potentials" is the last gradient step before thresholding, so
  the codes are `T_{lam/L}(u)` like LCA's `T_lam(u)`."""
  hw = x_BHWC.shape[1:3]
  s = cfg.stride
  step = 1.0 / lax.stop_gradient(lipschitz(D_KKCF, hw, s))
  lam_step = cfg.lam * step

  def body(carry):
    a, z, t = carry
    resid = x_BHWC - decode(z, D_KKCF, s, hw)
    u = z + step * encode(resid, D_KKCF, s)
    a_new = threshold(u, lam_step, cfg.threshold)
    if cfg.fista_restart:
      # Gradient restart (O'Donoghue & Candes 2015), per sample: when the
      # momentum points uphill, drop it. Linear convergence once the active
      # set settles, where plain FISTA oscillates.
      uphill = jnp.sum((z - a_new) * (a_new - a), axis=(1, 2, 3),
                       keepdims=True) > 0
      t = jnp.where(uphill, 1.0, t)
    t_new = 0.5 * (1.0 + jnp.sqrt(1.0 + 4.0 * t * t))
    z_new = a_new + ((t - 1.0) / t_new) * (a_new - a)
    trace = None
    if return_trace:  # of the new codes: one more decode, only when traced
      trace = _trace(x_BHWC - decode(a_new, D_KKCF, s, hw), a_new, cfg.lam)
    return (a_new, z_new, t_new), u, trace

  def scan_body(carry, _):
    carry, _, trace = body(carry)
    return carry, trace

  a0 = _zero_codes(x_BHWC, D_KKCF, s)
  t_shape = (a0.shape[0], 1, 1, 1) if cfg.fista_restart else ()
  init = (a0, a0, jnp.ones(t_shape, a0.dtype))
  # u is not carried (a 4th state array in every stored step); the last
  # step runs outside the scan to return it.
  carry, trace = _scan(scan_body, init, cfg.num_iters - 1, cfg)
  (a, _, _), u, last = body(carry)
  if return_trace:
    trace = jax.tree.map(lambda t, l: jnp.concatenate([t, l[None]]), trace,
                         last)
  return a, u, trace


# ----------------------------------------------------------------------------
# Implicit differentiation at the fixed point
# ----------------------------------------------------------------------------


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _solve_implicit(x_BHWC, D_KKCF, cfg: LCAConfig, return_trace: bool):
  return _iterate(x_BHWC, D_KKCF, cfg, return_trace)


def _solve_implicit_fwd(x_BHWC, D_KKCF, cfg, return_trace):
  out = _iterate(x_BHWC, D_KKCF, cfg, return_trace)
  return out, (x_BHWC, D_KKCF, out[0])


def _solve_implicit_bwd(cfg, return_trace, res, cts):
  """Gradients of the exact minimiser a*(x, D), from its optimality condition.

  On the active set S (a* != 0) the fixed point satisfies
      R(a_S; x, D) = [D^T (x - D a*)]_S - lam sign(a*_S) = 0,
  and a* = 0 off S (locally constant if no code sits exactly at the
  threshold). dR/da_S = -(D^T D)_SS, so by the implicit function theorem
      d a_S = (D^T D)_SS^{-1} [d_{x,D} h]_S,   h(x, D) = D^T (x - D a*),
  and for a loss with cotangent g: solve (D^T D)_SS v = g_S (conjugate
  gradient, matrix-free through decode/encode, masked to S), then the input
  and dictionary gradients are the VJP of h at v: D v, and
  sum_patches[(x - D a*) (x) v - (D v) (x) a*]. The lam term does not depend
  on (x, D), so the same holds for the hard threshold (lam -> 0 on S).

  This is the gradient of the minimiser, not of the iterations that ran: it
  equals the unrolled gradient only once the codes and their active set have
  converged (tests/test_lca.py checks both against finite differences, to
  1e-7 in float64). Before that the two differ by design: on the benchmark
  problem (1 -> 64 features, batch 64) 500 FISTA steps leave the codes 3.5%
  from the minimiser and 4% of the active set wrong, and the input
  gradients differ by 45% (results/bench/bench_lca.json). Worse, an
  unconverged active set can hold more codes than the input has values
  (500 plain LCA steps at tau 100 activate up to ~1,600 codes per 784-pixel
  image, the minimiser ~660): (D^T D)_SS is then singular and the result is
  meaningless (orders of magnitude too large). Check convergence
  (`kkt_residual`) before trusting it.
  """
  del return_trace
  x_BHWC, D_KKCF, a = res
  g_a = cts[0]
  s, hw = cfg.stride, x_BHWC.shape[1:3]
  active = (a != 0).astype(a.dtype)

  def gram(v):  # (D^T D)_SS v, with v kept on S
    return active * encode(decode(active * v, D_KKCF, s, hw), D_KKCF, s)

  v = _batched_cg(gram, active * g_a, cfg.cg_iters, cfg.cg_tol)
  _, vjp = jax.vjp(
      lambda x, D: encode(x - decode(a, D, s, hw), D, s), x_BHWC, D_KKCF)
  return vjp(v)


_solve_implicit.defvjp(_solve_implicit_fwd, _solve_implicit_bwd)


def _batched_cg(matvec, b, max_iters: int, tol: float):
  """Conjugate gradient for a block-diagonal SPD system, one block per sample
  (leading axis): each sample has its own step sizes and stops at
  ||r|| <= tol ||b||; the loop ends when all have, or after max_iters."""
  axes = tuple(range(1, b.ndim))
  dot = lambda p, q: jnp.sum(p * q, axis=axes, keepdims=True)
  thresh = tol**2 * dot(b, b)

  def cond(state):
    i, _, _, _, rs = state
    return (i < max_iters) & jnp.any(rs > thresh)

  def body(state):
    i, x, r, p, rs = state
    Ap = matvec(p)
    pAp = dot(p, Ap)
    live = (rs > thresh) & (pAp > 0)  # converged, or a null direction
    alpha = jnp.where(live, rs / jnp.where(live, pAp, 1.0), 0.0)
    x = x + alpha * p
    r = r - alpha * Ap
    rs_new = dot(r, r)
    beta = jnp.where(live, rs_new / jnp.where(live, rs, 1.0), 0.0)
    return i + 1, x, r, r + beta * p, jnp.where(live, rs_new, 0.0)

  init = (jnp.zeros((), jnp.int32), jnp.zeros_like(b), b, b, dot(b, b))
  return lax.while_loop(cond, body, init)[1]


def _trace(resid_BHWC, a_BHWF, lam) -> dict[str, jax.Array]:
  """Per-sample objective, reconstruction error, active fraction of codes a."""
  recon = 0.5 * jnp.sum(resid_BHWC**2, axis=(1, 2, 3))
  return {"objective": recon + lam * jnp.sum(jnp.abs(a_BHWF), axis=(1, 2, 3)),
          "recon_error": recon,
          "active_fraction": jnp.mean(a_BHWF != 0, axis=(1, 2, 3))}


# ----------------------------------------------------------------------------
# Dictionary learning
# ----------------------------------------------------------------------------


def hebbian_update(D_KKCF: jax.Array, x_BHWC: jax.Array, a_BHWF: jax.Array,
                   eta: float, stride: int = 1) -> jax.Array:
  """One Hebbian dictionary step, `D += eta * a^T (x - D a) / (n_active + 1)`.

  `a^T (x - D a)` over all patches is minus the gradient of the reconstruction
  error with respect to D; dividing each atom's update by how often it fired
  (plus one) is lanl/lca-pytorch's rule, so busy atoms do not run away. The
  atoms are renormalised to unit norm afterwards. Codes are held constant.
  """
  a_BHWF = lax.stop_gradient(a_BHWF)

  def recon_loss(D):
    resid = x_BHWC - decode(a_BHWF, D, stride, x_BHWC.shape[1:3])
    return 0.5 * jnp.sum(resid**2)

  hebb_KKCF = -jax.grad(recon_loss)(D_KKCF)
  n_active_F = jnp.sum(a_BHWF != 0, axis=(0, 1, 2)).astype(D_KKCF.dtype)
  return normalize_dictionary(D_KKCF + eta * hebb_KKCF / (n_active_F + 1.0))
