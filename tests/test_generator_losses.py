"""GAN losses: the R1 penalty against analytic and finite-difference values."""

import jax
import jax.numpy as jnp
import numpy as np

from sca_jax.gan import losses


def _toy_d(a):
  # D(x) = sum tanh(a * x): dD/dx = a (1 - tanh(a x)^2), known in closed form.
  return lambda x: jnp.tanh(a * x).sum(axis=(1, 2, 3))


def test_r1_penalty_analytic():
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(3, 4, 4, 2)), jnp.float32)
  a = jnp.asarray(rng.normal(size=(4, 4, 2)), jnp.float32)
  grad = a * (1 - jnp.tanh(a * x) ** 2)
  want = float(jnp.mean(jnp.sum(grad ** 2, axis=(1, 2, 3))))
  np.testing.assert_allclose(float(losses.r1_penalty(_toy_d(a), x)), want,
                             rtol=1e-5)


def test_r1_penalty_finite_difference():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(2, 3, 3, 1))
  a = rng.normal(size=(3, 3, 1))
  d = _toy_d(jnp.asarray(a, jnp.float32))
  eps, total = 1e-3, 0.0
  for idx in np.ndindex(x.shape):
    up, down = x.copy(), x.copy()
    up[idx] += eps
    down[idx] -= eps
    g = (np.asarray(d(jnp.asarray(up, jnp.float32))) - np.asarray(
        d(jnp.asarray(down, jnp.float32))))[idx[0]] / (2 * eps)
    total += g ** 2
  got = float(losses.r1_penalty(d, jnp.asarray(x, jnp.float32)))
  np.testing.assert_allclose(got, total / len(x), rtol=2e-2)


def test_logistic_losses_and_gamma_heuristic():
  big = jnp.full((4,), 30.0)
  # D certain and right: D loss ~0; G fooled nobody: G loss ~30.
  assert float(losses.d_logistic(big, -big)) < 1e-6
  np.testing.assert_allclose(float(losses.g_nonsaturating(-big)), 30.0,
                             rtol=1e-6)
  np.testing.assert_allclose(float(losses.d_logistic(0 * big, 0 * big)),
                             2 * np.log(2), rtol=1e-6)
  # ADA paper: gamma = 0.0002 N / M; 256x256 at batch 64 gives 0.2048.
  np.testing.assert_allclose(losses.r1_gamma_heuristic(256, 64), 0.2048)
