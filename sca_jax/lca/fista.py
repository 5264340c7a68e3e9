"""FISTA on the LCA objective, and the Lipschitz constant it steps by."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from sca_jax.lca.config import LCAConfig
from sca_jax.lca.gradients import scan
from sca_jax.lca.ops import decode, encode, threshold, trace_stats, zero_codes
from sca_jax.lca.spectral import operators


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


def iterate_fista(x_BHWC, D_KKCF, cfg: LCAConfig, return_trace: bool):
  """FISTA (Beck & Teboulle 2009) on the LCA objective: same fixed point as
  the LCA dynamics, reached in far fewer iterations. Step 1/L; the state
  returned as "potentials" is the last gradient step before thresholding, so
  the codes are `T_{lam/L}(u)` like LCA's `T_lam(u)`."""
  hw = x_BHWC.shape[1:3]
  s = cfg.stride
  step = 1.0 / lax.stop_gradient(lipschitz(D_KKCF, hw, s))
  lam_step = cfg.lam * step
  dec, enc = operators(D_KKCF, hw, s, cfg.conv)

  def body(carry):
    a, z, t = carry
    u = z + step * enc(x_BHWC - dec(z))
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
      trace = trace_stats(x_BHWC - dec(a_new), a_new, cfg.lam)
    return (a_new, z_new, t_new), u, trace

  def scan_body(carry, _):
    carry, _, trace = body(carry)
    return carry, trace

  a0 = zero_codes(x_BHWC, D_KKCF, s)
  t_shape = (a0.shape[0], 1, 1, 1) if cfg.fista_restart else ()
  init = (a0, a0, jnp.ones(t_shape, a0.dtype))
  # u is not carried (a 4th state array in every stored step); the last
  # step runs outside the scan to return it.
  carry, trace = scan(scan_body, init, cfg.num_iters - 1, cfg)
  (a, _, _), u, last = body(carry)
  if return_trace:
    trace = jax.tree.map(lambda t, l: jnp.concatenate([t, l[None]]), trace,
                         last)
  return a, u, trace
