"""Gradient schedules through the solver's iterations, and the implicit
gradient of the minimiser at the fixed point."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from sca_jax.lca.config import LCAConfig
from sca_jax.lca.ops import decode, encode


def scan(step, init, length: int, cfg: LCAConfig):
  """`lax.scan(step, init, None, length)` under the configured gradient
  schedule: every step stored, every step recomputed (`remat`), or chunks."""
  if cfg.grad == "remat_chunked":
    return chunked_scan(step, init, length, cfg.remat_levels)
  if cfg.remat:
    step = jax.checkpoint(step)
  return lax.scan(step, init, None, length=length)


def chunked_scan(step, init, length: int, levels: int):
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
        lambda c: chunked_scan(step, c, num_steps, levels - 1))

  carry, ys = lax.scan(lambda c, _: run(block)(c), init, None, length=n)
  ys = jax.tree.map(lambda y: y.reshape(n * block, *y.shape[2:]), ys)
  if rem:
    carry, ys_rem = run(rem)(carry)
    ys = jax.tree.map(lambda y, z: jnp.concatenate([y, z]), ys, ys_rem)
  return carry, ys


def implicit_vjp(cfg: LCAConfig, x_BHWC: jax.Array, D_KKCF: jax.Array,
                 a: jax.Array, g_a: jax.Array):
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
  s, hw = cfg.stride, x_BHWC.shape[1:3]
  active = (a != 0).astype(a.dtype)

  def gram(v):  # (D^T D)_SS v, with v kept on S
    return active * encode(decode(active * v, D_KKCF, s, hw), D_KKCF, s)

  v = batched_cg(gram, active * g_a, cfg.cg_iters, cfg.cg_tol)
  _, vjp = jax.vjp(
      lambda x, D: encode(x - decode(a, D, s, hw), D, s), x_BHWC, D_KKCF)
  return vjp(v)


def batched_cg(matvec, b, max_iters: int, tol: float):
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
