"""StyleGAN2 losses: non-saturating logistic loss and the R1 penalty.

As in Karras et al. 2020 (StyleGAN2) and its ADA follow-up: D minimises
softplus(D(fake)) + softplus(-D(real)), G minimises softplus(-D(fake)), and
D is regularised by R1 = |grad_x D(x)|^2 on real images, weighted gamma / 2.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp


def d_logistic(real_logits_N: jax.Array, fake_logits_N: jax.Array
               ) -> jax.Array:
  return (jax.nn.softplus(fake_logits_N)
          + jax.nn.softplus(-real_logits_N)).mean()


def g_nonsaturating(fake_logits_N: jax.Array) -> jax.Array:
  return jax.nn.softplus(-fake_logits_N).mean()


def r1_penalty(d_fn: Callable[[jax.Array], jax.Array], real_NHWC: jax.Array
               ) -> jax.Array:
  """Batch mean of the squared norm of dD/dx at each real image."""
  grad = jax.grad(lambda x: d_fn(x).sum())(real_NHWC)
  return jnp.square(grad).sum(axis=tuple(range(1, grad.ndim))).mean()


def r1_gamma_heuristic(resolution: int, batch_size: int) -> float:
  """StyleGAN2-ADA's default: gamma = 0.0002 * resolution^2 / batch size."""
  return 0.0002 * resolution ** 2 / batch_size
