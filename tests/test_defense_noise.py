"""Noise defenses: random, with the configured scale, where configured."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import tiny_config
from sca_jax.models import build_model


def _model(name, **fields):
  c = tiny_config(name)
  for k, v in fields.items():
    c.defense[k] = v
  return build_model(c.defense, (28, 28, 1), 10, jax.random.key(0))


X = jnp.asarray(np.random.default_rng(0).random((64, 28, 28, 1), np.float32))


@pytest.mark.parametrize("train", [True, False])
def test_laplace_noise_on_the_split_output(train):
  model = _model("laplace_noise", laplace_scale=0.5)
  assert model.names[2] == "layer2_laplace"
  _, r1 = model(X, train=train, key=jax.random.key(1))
  _, r2 = model(X, train=train, key=jax.random.key(2))
  # `first` is the noised output of the first (conv, bn) pair.
  np.testing.assert_array_equal(r1["first"], r1["layer2_laplace"])
  noise = r1["first"] - r1["layer1_bn"]
  assert float(jnp.std(noise)) == pytest.approx(0.5 * np.sqrt(2), rel=0.05)
  assert abs(float(jnp.mean(noise))) < 0.02
  assert not jnp.allclose(r1["first"], r2["first"])


def test_gaussian_noise_on_hidden_layers_only_after_training():
  model = _model("gaussian_noise", noise_std=0.5)
  last = model.names[-1]

  def clean(reps):
    h = reps[last].reshape(len(X), -1)
    return jax.nn.relu(model.hidden_layers[0](h))

  _, r1 = model(X, train=False, key=jax.random.key(1))
  _, r2 = model(X, train=False, key=jax.random.key(2))
  noise = r1["hidden0"] - clean(r1)
  assert float(jnp.std(noise)) == pytest.approx(0.5, rel=0.05)
  assert not jnp.allclose(r1["hidden0"], r2["hidden0"])
  np.testing.assert_array_equal(r1["first"], r2["first"])  # feature layers clean
  _, rt = model(X, train=True, key=jax.random.key(1))
  np.testing.assert_allclose(rt["hidden0"], clean(rt), atol=1e-6)
