"""The solve: LCA dynamics (or FISTA) from zero as a `lax.scan`."""

from __future__ import annotations

import functools

import jax
from jax import lax

from sca_jax.lca import fista
from sca_jax.lca.config import LCAConfig, LCAResult
from sca_jax.lca.gradients import implicit_vjp, scan
from sca_jax.lca.ops import normalize_input, threshold, trace_stats, zero_codes
from sca_jax.lca.spectral import operators


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
    a, u, trace = iterate(x_BHWC, D_KKCF, cfg, return_trace)
  return LCAResult(a, u, x_BHWC, trace)


def iterate(x_BHWC, D_KKCF, cfg: LCAConfig, return_trace: bool):
  """(codes, potentials, trace) after `cfg.num_iters` steps of the solver."""
  if cfg.solver == "fista":
    return fista.iterate_fista(x_BHWC, D_KKCF, cfg, return_trace)
  hw = x_BHWC.shape[1:3]
  s, lam, eta = cfg.stride, cfg.lam, 1.0 / cfg.tau

  dec, enc = operators(D_KKCF, hw, s, cfg.conv)

  def step(u, _):
    a = threshold(u, lam, cfg.threshold)
    resid = x_BHWC - dec(a)
    # b - (D^T D - I) a == D^T (x - D a) + a.
    u_new = u + eta * (enc(resid) - u + a)
    return u_new, (trace_stats(resid, a, lam) if return_trace else None)

  u, trace = scan(step, zero_codes(x_BHWC, D_KKCF, s), cfg.num_iters, cfg)
  return threshold(u, lam, cfg.threshold), u, trace


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _solve_implicit(x_BHWC, D_KKCF, cfg: LCAConfig, return_trace: bool):
  return iterate(x_BHWC, D_KKCF, cfg, return_trace)


def _solve_implicit_fwd(x_BHWC, D_KKCF, cfg, return_trace):
  out = iterate(x_BHWC, D_KKCF, cfg, return_trace)
  return out, (x_BHWC, D_KKCF, out[0])


def _solve_implicit_bwd(cfg, return_trace, res, cts):
  del return_trace
  x_BHWC, D_KKCF, a = res
  return implicit_vjp(cfg, x_BHWC, D_KKCF, a, cts[0])


_solve_implicit.defvjp(_solve_implicit_fwd, _solve_implicit_bwd)
