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

The iterations run as a `jax.lax.scan`, so the solve is differentiable end to
end (input and dictionary); `remat=True` recomputes each step's intermediates
in the backward pass instead of storing them.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

THRESHOLDS = ("soft_nonneg", "soft", "hard")
SOLVERS = ("lca", "fista")
_DIMS = ("NHWC", "HWIO", "NHWC")


@dataclasses.dataclass(frozen=True)
class LCAConfig:
  """Settings of one LCA solve (hashable: used as a static jit argument)."""

  lam: float = 0.5
  tau: float = 100.0
  num_iters: int = 500
  stride: int = 1
  threshold: str = "soft_nonneg"
  normalize_input: bool = True
  remat: bool = False
  solver: str = "lca"

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


def _conv(x_BHWC, D_KKCF, stride, hw):
  pads = [_pads(n, D_KKCF.shape[0], stride)[0] for n in hw]
  return lax.conv_general_dilated(x_BHWC, D_KKCF, (stride, stride), pads,
                                  dimension_numbers=_DIMS)


def _conv_t(a_BHWF, D_KKCF, stride, hw):
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
  grad_CKKF = jnp.einsum("bhwp,bhwf->pf", patches, g_BHWF,
                         preferred_element_type=jnp.float32).astype(x_BHWC.dtype)
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


# ----------------------------------------------------------------------------
# The solver
# ----------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("cfg", "return_trace"))
def solve(x_BHWC: jax.Array, D_KKCF: jax.Array, cfg: LCAConfig,
          return_trace: bool = False) -> LCAResult:
  """Runs `cfg.num_iters` LCA iterations from u = 0; returns the codes."""
  if x_BHWC.ndim != 4 or D_KKCF.ndim != 4:
    raise ValueError(f"expected x (B,H,W,C) and D (K,K,C,F), got "
                     f"{x_BHWC.shape} and {D_KKCF.shape}")
  if x_BHWC.shape[-1] != D_KKCF.shape[2]:
    raise ValueError(f"input has {x_BHWC.shape[-1]} channels but the "
                     f"dictionary expects {D_KKCF.shape[2]}")
  if cfg.normalize_input:
    x_BHWC = normalize_input(x_BHWC)
  if cfg.solver == "fista":
    a, u, trace = _solve_fista(x_BHWC, D_KKCF, cfg, return_trace)
    return LCAResult(a, u, x_BHWC, trace)
  hw = x_BHWC.shape[1:3]
  s, lam, eta = cfg.stride, cfg.lam, 1.0 / cfg.tau

  def step(u, _):
    a = threshold(u, lam, cfg.threshold)
    resid = x_BHWC - decode(a, D_KKCF, s, hw)
    # b - (D^T D - I) a == D^T (x - D a) + a.
    u_new = u + eta * (encode(resid, D_KKCF, s) - u + a)
    return u_new, (_trace(resid, a, lam) if return_trace else None)

  if cfg.remat:
    step = jax.checkpoint(step)
  out_hw = [-(-n // s) for n in hw]
  u0 = jnp.zeros((x_BHWC.shape[0], *out_hw, D_KKCF.shape[-1]), x_BHWC.dtype)
  u, trace = lax.scan(step, u0, None, length=cfg.num_iters)
  return LCAResult(threshold(u, lam, cfg.threshold), u, x_BHWC, trace)


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


def _solve_fista(x_BHWC, D_KKCF, cfg: LCAConfig, return_trace: bool):
  """FISTA (Beck & Teboulle 2009) on the LCA objective: same fixed point as
  the LCA dynamics, reached in far fewer iterations. Step 1/L; the state
  carried as "potentials" is the gradient step before thresholding, so the
  codes are `T_{lam/L}(u)` like LCA's `T_lam(u)`."""
  hw = x_BHWC.shape[1:3]
  s = cfg.stride
  step = 1.0 / lax.stop_gradient(lipschitz(D_KKCF, hw, s))
  lam_step = cfg.lam * step

  def body(carry, _):
    a, z, t, _ = carry
    resid = x_BHWC - decode(z, D_KKCF, s, hw)
    u = z + step * encode(resid, D_KKCF, s)
    a_new = threshold(u, lam_step, cfg.threshold)
    t_new = 0.5 * (1.0 + jnp.sqrt(1.0 + 4.0 * t * t))
    z_new = a_new + ((t - 1.0) / t_new) * (a_new - a)
    trace = None
    if return_trace:  # of the new codes: one more decode, only when traced
      trace = _trace(x_BHWC - decode(a_new, D_KKCF, s, hw), a_new, cfg.lam)
    return (a_new, z_new, t_new, u), trace

  if cfg.remat:
    body = jax.checkpoint(body)
  out_hw = [-(-n // s) for n in hw]
  a0 = jnp.zeros((x_BHWC.shape[0], *out_hw, D_KKCF.shape[-1]), x_BHWC.dtype)
  init = (a0, a0, jnp.ones((), a0.dtype), a0)
  (a, _, _, u), trace = lax.scan(body, init, None, length=cfg.num_iters)
  return a, u, trace


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
