"""GAN augmentation: generated images look like the data's, labels follow it.

Gong et al.'s GAN defense: tests/test_defense_gong.py."""

import jax
import ml_collections
import numpy as np

from sca_jax.defenses import DEFENSES
from conftest import toy_labelled_images


def _data(n=192):
  return toy_labelled_images(n, (0.6, 0.3, 0.1))


def test_generated_samples_shape_range_and_labels():
  x, y = _data()
  cfg = ml_collections.ConfigDict({"gan_epochs": 1, "gan_fraction": 2.0})
  xa, ya = DEFENSES.get("gan_augment").prepare_data(cfg, x, y,
                                                    jax.random.key(0))
  assert xa.shape == (3 * len(x), 28, 28, 1) and xa.dtype == x.dtype
  assert len(ya) == len(xa) and ya.dtype == y.dtype
  np.testing.assert_array_equal(xa[:len(x)], x)  # the real images stay
  fake, fake_y = xa[len(x):], ya[len(x):]
  assert fake.min() >= 0 and fake.max() <= 1
  np.testing.assert_allclose(np.bincount(fake_y, minlength=3) / len(fake_y),
                             np.bincount(y) / len(y), atol=0.06)

