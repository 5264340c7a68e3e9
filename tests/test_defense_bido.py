"""BiDO: dependency terms are real dependencies and change the gradient."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from conftest import tiny_config
from sca_jax.defenses import DEFENSES, bido
from sca_jax.models import build_model


def test_hsic_and_coco_detect_dependence():
  k = jax.random.split(jax.random.key(0), 2)
  a = jax.random.normal(k[0], (64, 8))
  b = jax.random.normal(k[1], (64, 8))
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
