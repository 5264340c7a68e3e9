"""BiDO: dependency terms are real dependencies and change the gradient."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from scipy.spatial.distance import cdist

from conftest import tiny_config
from sca_jax.defenses import DEFENSES, bido
from sca_jax.models import build_model


def _numpy_hsic_coco(a, b, sigma):
  """HSIC = tr(K H L H) / (m-1)^2 and COCO = sqrt(||H K H H L H||_2) / m
  with Gaussian kernels of width sigma * sqrt(dim) (BiDO's), from scipy's
  distances and numpy's spectral norm."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  m = len(a)
  k = np.exp(-cdist(a, a, "sqeuclidean") / (2 * sigma**2 * a.shape[1]))
  l = np.exp(-cdist(b, b, "sqeuclidean") / (2 * sigma**2 * b.shape[1]))
  h = np.eye(m) - 1.0 / m
  return (np.trace(k @ h @ l @ h) / (m - 1) ** 2,
          np.sqrt(np.linalg.norm(h @ k @ h @ h @ l @ h, 2)) / m)


def test_hsic_and_coco_match_numpy_and_detect_dependence():
  k = jax.random.split(jax.random.key(0), 2)
  a = jax.random.normal(k[0], (64, 8))
  b = jax.random.normal(k[1], (64, 8))
  for other, sigma in ((a ** 3, 1.0), (b, 1.0), (b, 2.5)):
    want_hsic, want_coco = _numpy_hsic_coco(a, other, sigma)
    np.testing.assert_allclose(float(bido.hsic(a, other, sigma)), want_hsic,
                               rtol=1e-4)
    np.testing.assert_allclose(float(bido.coco(a, other, sigma)), want_coco,
                               rtol=1e-4)
  for dep in (bido.hsic, bido.coco):
    assert float(dep(a, a ** 3, 1.0)) > 1.3 * float(dep(a, b, 1.0))


@pytest.mark.parametrize("dependency", ["hsic", "coco"])
def test_dependency_terms_change_the_gradient(dependency):
  c = tiny_config("bido")
  c.defense.dependency = dependency
  model = build_model(c.defense, (28, 28, 1), 10, jax.random.key(0))
  extra = DEFENSES.get("bido").extra_loss(c.defense)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.random((16, 28, 28, 1), np.float32))
  y = jnp.asarray(rng.integers(0, 10, 16))

  def grads(with_extra):
    def f(m):
      logits, reps = m(x, train=True, key=jax.random.key(1))
      ce = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
      term, _ = extra(logits, reps, x, y, None)
      return ce + term if with_extra else ce
    # One compiled program: eager per-op dispatch is slow on CPU.
    return nnx.jit(nnx.grad(f))(model)

  logits, reps = model(x, train=True, key=jax.random.key(1))
  _, metrics = extra(logits, reps, x, y, None)
  assert float(metrics["dep_hx"]) > 0 and float(metrics["dep_hy"]) > 0
  g0, g1 = grads(False), grads(True)
  diff = jax.tree.map(lambda a, b: jnp.max(jnp.abs(a - b)), g0, g1)
  assert max(float(d) for d in jax.tree.leaves(diff)) > 1e-6
