"""MID: a stochastic bottleneck in training, its KL term shapes the gradient."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from scipy import integrate, stats

from conftest import tiny_config
from sca_jax.defenses import DEFENSES, mid
from sca_jax.models import build_model


def _setup(**fields):
  c = tiny_config("mid")
  c.defense.bottleneck = 8
  for k, v in fields.items():
    c.defense[k] = v
  model = build_model(c.defense, (28, 28, 1), 10, jax.random.key(0))
  x = jnp.asarray(np.random.default_rng(0).random((16, 28, 28, 1), np.float32))
  return c, model, x


def test_training_samples_inference_uses_the_mean():
  _, model, x = _setup()
  k1, k2 = jax.random.key(1), jax.random.key(2)
  _, r1 = model(x, train=True, key=k1)
  _, r2 = model(x, train=True, key=k2)
  assert not jnp.allclose(r1["bottleneck"], r2["bottleneck"])
  assert jnp.all(r1["bottleneck_std"] > 0)
  e1, re1 = model(x, train=False, key=k1)
  e2, _ = model(x, train=False, key=k2)
  np.testing.assert_array_equal(e1, e2)
  np.testing.assert_array_equal(re1["last_hidden"], re1["bottleneck_mu"])
  _, model, x = _setup(sample_at_inference=True)
  assert not jnp.allclose(model(x, key=k1)[0], model(x, key=k2)[0])


def test_kl_equals_numerical_integration():
  """KL(N(mu, s^2) || N(0, 1)) per dimension, integrated by scipy, summed."""
  mu = np.array([[0.0, 0.5, -1.2], [0.0, 2.0, 0.3]])
  std = np.array([[1.0, 0.4, 1.7], [1.0, 1.0, 0.2]])

  def kl_1d(m, s):
    p, q = stats.norm(m, s), stats.norm(0.0, 1.0)
    return integrate.quad(lambda z: p.pdf(z) * (p.logpdf(z) - q.logpdf(z)),
                          m - 12 * s, m + 12 * s)[0]

  want = [sum(kl_1d(m, s) for m, s in zip(mr, sr)) for mr, sr in zip(mu, std)]
  got = mid.kl_to_standard_normal(jnp.asarray(mu, jnp.float32),
                                  jnp.asarray(std, jnp.float32))
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-6)
  assert float(mid.kl_to_standard_normal(jnp.zeros(4), jnp.ones(4))) == (
      pytest.approx(0.0, abs=1e-6))


def test_kl_term_changes_the_gradient():
  c, model, x = _setup(beta=0.1)
  y = jnp.arange(16) % 10
  extra = DEFENSES.get("mid").extra_loss(c.defense)

  def grads(with_extra):
    def f(m):
      logits, reps = m(x, train=True, key=jax.random.key(1))
      ce = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
      kl, _ = extra(logits, reps, x, y, None)
      return ce + kl if with_extra else ce
    # One compiled program: eager per-op dispatch is slow on CPU.
    return nnx.jit(nnx.grad(f))(model)

  logits, reps = model(x, train=True, key=jax.random.key(1))
  term, aux = extra(logits, reps, x, y, None)
  want = mid.kl_to_standard_normal(reps["bottleneck_mu"],
                                   reps["bottleneck_std"]).mean()
  assert float(aux["kl"]) > 0
  np.testing.assert_allclose(float(aux["kl"]), float(want), rtol=1e-6)
  np.testing.assert_allclose(float(term), 0.1 * float(want), rtol=1e-6)
  g0, g1 = grads(False), grads(True)
  d = jnp.max(jnp.abs(g0.before_head_layers[0].kernel.get_value()
                      - g1.before_head_layers[0].kernel.get_value()))
  assert float(d) > 1e-6
