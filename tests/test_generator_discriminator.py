"""The residual equalised-lr discriminator and its minibatch std."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sca_jax.gan import discriminator


def test_minibatch_stddev_groups():
  x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 2, 2, 3)),
                  jnp.float32)
  y = discriminator.minibatch_stddev(x, 2)
  assert y.shape == (4, 2, 2, 4)
  np.testing.assert_array_equal(y[..., :3], x)
  # Groups are samples {0, 2} and {1, 3}.
  want0 = np.sqrt(np.var(np.asarray(x)[[0, 2]], axis=0) + 1e-8).mean()
  np.testing.assert_allclose(y[0, ..., 3], want0, rtol=1e-5)
  np.testing.assert_allclose(y[2, ..., 3], want0, rtol=1e-5)
  # Identical samples: no spread.
  same = discriminator.minibatch_stddev(jnp.ones((4, 2, 2, 3)), 4)
  np.testing.assert_allclose(same[..., 3], 1e-4, rtol=1e-3)
  with pytest.raises(ValueError, match="multiple"):
    discriminator.minibatch_stddev(x[:3], 2)


def test_discriminator_shapes_and_bad_resolution():
  # Built and run compiled: eager dispatch of every op is slow on a busy CPU.
  d = nnx.jit(lambda: discriminator.Discriminator(8, 1, 32, 4, 2,
                                                  rngs=nnx.Rngs(0)))()
  logits = nnx.jit(lambda d, x: d(x))(d, jnp.zeros((4, 8, 8, 1)))
  assert logits.shape == (4,) and bool(jnp.all(jnp.isfinite(logits)))
  assert len(d.blocks) == 1
  with pytest.raises(ValueError, match="power of 2"):
    discriminator.Discriminator(12, 1, 64, 8, rngs=nnx.Rngs(0))
