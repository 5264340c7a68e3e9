"""DiffAugment ops: shapes, identity at zero strength, what they change."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sca_jax.gan import augment

X = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (6, 16, 16, 2)),
                jnp.float32)
KEY = jax.random.key(0)
POLICY = ("translation", "cutout")


def test_identity_at_zero_strength_and_shapes_kept():
  np.testing.assert_array_equal(augment.diff_augment(X, KEY, POLICY, 0.0), X)
  np.testing.assert_array_equal(augment.diff_augment(X, KEY, ()), X)
  for strength in (0.5, 1.0):
    y = augment.diff_augment(X, KEY, POLICY, strength)
    assert y.shape == X.shape and y.dtype == X.dtype
    assert not np.allclose(y, X)


def test_translation_is_an_integer_shift_with_fill():
  y = np.asarray(augment.translate(X, KEY, 1 / 8, fill=-3.0))
  x = np.asarray(X)
  for i in range(len(x)):
    found = False
    for dy in range(-2, 3):
      for dx in range(-2, 3):
        padded = np.pad(x[i], ((2, 2), (2, 2), (0, 0)), constant_values=-3.0)
        shifted = padded[2 - dy:18 - dy, 2 - dx:18 - dx]
        found |= np.array_equal(shifted, y[i])
    assert found, f"image {i} is not a shift of at most 2 pixels"


def test_cutout_fills_one_square_and_keeps_the_rest():
  y = np.asarray(augment.cutout(X, KEY, 0.5, fill=7.0))
  cut = np.all(y == 7.0, axis=-1)
  assert np.all(cut.sum(axis=(1, 2)) <= 64) and np.all(cut.sum(axis=(1, 2)))
  np.testing.assert_array_equal(y[~cut], np.asarray(X)[~cut])


def test_differentiable_gradient_is_the_kept_mask():
  grad = jax.grad(lambda x: augment.cutout(x, KEY, 0.5).sum())(X)
  kept = np.asarray(augment.cutout(jnp.ones_like(X), KEY, 0.5, fill=0.0))
  np.testing.assert_array_equal(grad, kept)


def test_unknown_op_is_rejected():
  with pytest.raises(ValueError, match="colour"):
    augment.diff_augment(X, KEY, ("colour",))


def test_one_draw_per_minibatch_std_group_keeps_a_collapsed_batch_collapsed():
  """Copies of one image stay identical within each minibatch-std group
  (samples i mod N/g), so D's minibatch std still sees a collapsed G; with a
  draw per image the same copies look as varied as different images."""
  from sca_jax.gan.discriminator import minibatch_stddev
  copies = jnp.broadcast_to(X[:1], (8, 16, 16, 2))
  grouped = augment.diff_augment(copies, KEY, POLICY, fill=-1.0, groups_of=4)
  per_image = augment.diff_augment(copies, KEY, POLICY, fill=-1.0)
  for i in range(2):  # group members: i, i + 2, i + 4, i + 6
    for j in range(i + 2, 8, 2):
      np.testing.assert_array_equal(grouped[i], grouped[j])
  assert not np.array_equal(grouped[0], grouped[1])  # groups differ
  std = lambda x: float(minibatch_stddev(x, 4)[..., -1].max())
  assert std(grouped) < 1e-3 < 0.1 < std(per_image)
  with pytest.raises(ValueError, match="groups_of=3"):
    augment.diff_augment(copies, KEY, POLICY, groups_of=3)


def test_fill_is_the_given_background():
  y = augment.cutout(jnp.zeros((2, 16, 16, 1)), KEY, 0.5, fill=-1.0)
  assert set(np.unique(np.asarray(y))) == {-1.0, 0.0}
