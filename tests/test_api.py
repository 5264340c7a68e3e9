"""Tests for sca_jax.api: SCA as a layer in a user's own Flax NNX model."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import sca_jax
from sca_jax import SparseCoding, attack_model, hebbian_step, lca


class _Net(nnx.Module):
  def __init__(self, rngs):
    self.sparse = SparseCoding(3, 6, kernel=3, lam=0.3, stride=2, rngs=rngs)
    self.head = nnx.Linear(4 * 4 * 6, 3, rngs=rngs)

  def __call__(self, x):
    return self.head(self.sparse(x).reshape(len(x), -1))


def _batch():
  x = jax.random.uniform(jax.random.key(0), (6, 8, 8, 3))
  return x, jnp.arange(6) % 3


def test_layer_matches_the_lca_solver():
  layer = SparseCoding(3, 6, kernel=3, lam=0.3, stride=2, num_iters=20,
                       rngs=nnx.Rngs(0))
  x, _ = _batch()
  codes = layer(x)
  assert codes.shape == (6, 4, 4, 6) and bool(jnp.all(codes >= 0))
  cfg = lca.LCAConfig(lam=0.3, tau=10.0, num_iters=20, stride=2,
                      solver="fista")
  want = lca.solve(x, layer.dictionary.get_value(), cfg).codes_BHWF
  np.testing.assert_allclose(codes, want, atol=1e-5)
  assert float(jnp.mean(codes == 0)) > 0.3  # sparse
  with pytest.raises(ValueError, match="lam"):
    SparseCoding(3, 6, lam=-1.0, rngs=nnx.Rngs(0))


def test_backprop_and_hebbian_move_the_dictionary():
  model = _Net(nnx.Rngs(0))
  x, y = _batch()
  optimizer = nnx.Optimizer(model, optax.sgd(0.1), wrt=nnx.Param)
  d0 = model.sparse.dictionary.get_value()

  @nnx.jit
  def step(model, optimizer):
    grads = nnx.grad(lambda m: optax.softmax_cross_entropy_with_integer_labels(
        m(x), y).mean())(model)
    optimizer.update(model, grads)

  step(model, optimizer)
  d1 = model.sparse.dictionary.get_value()
  assert float(jnp.abs(d1 - d0).max()) > 1e-4  # backprop reached it
  coded = _coded(model, x)  # what the layer codes before the Hebbian step
  assert nnx.jit(lambda m: hebbian_step(m, x, lr=0.1))(model) == 1
  d2 = model.sparse.dictionary.get_value()
  want = lca.hebbian_update(
      lca.normalize_dictionary(d1), *coded, 0.1, 2)
  np.testing.assert_allclose(d2, want, atol=1e-5)


def _coded(model, x):
  result = model.sparse.solve(x)
  return result.input_BHWC, result.codes_BHWF


def test_public_names_and_attack_model_errors(tmp_path):
  assert sca_jax.SparseCoding is SparseCoding
  with pytest.raises(AttributeError, match="no attribute"):
    sca_jax.NoSuchThing  # pylint: disable=pointless-statement
  model = _Net(nnx.Rngs(0))
  with pytest.raises(ValueError, match="unknown attack .nope.*leaks"):
    attack_model(model, None, {"nope": lambda m, x: x}, tmp_path)
  with pytest.raises(ValueError, match="settings for .'split'."):
    attack_model(model, None, {"end_to_end": lambda m, x: x}, tmp_path,
                 settings={"split": {"epochs": 1}})
