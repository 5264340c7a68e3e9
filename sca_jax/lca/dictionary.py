"""Dictionaries: initialisation, unit-norm atoms, the Hebbian update."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from sca_jax.lca.ops import decode


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
