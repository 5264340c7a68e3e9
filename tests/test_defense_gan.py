"""GAN augmentation: generated images look like the data's, labels follow it."""

import jax
import ml_collections
import numpy as np
import pytest

from sca_jax.defenses import DEFENSES, gan


def _data(n=192):
  rng = np.random.default_rng(0)
  y = rng.choice(3, size=n, p=[0.6, 0.3, 0.1]).astype(np.int32)
  x = (rng.random((n, 28, 28, 1)) < 0.1 + 0.3 * y[:, None, None, None] / 2
       ).astype(np.float32)
  return x, y


@pytest.mark.parametrize("name", ["gan_augment", "gong_gan"])
def test_generated_samples_shape_range_and_labels(name):
  x, y = _data()
  cfg = ml_collections.ConfigDict({"gan_epochs": 1, "gan_fraction": 2.0})
  xa, ya = DEFENSES.get(name).prepare_data(cfg, x, y, jax.random.key(0))
  assert xa.shape == (3 * len(x), 28, 28, 1) and xa.dtype == x.dtype
  assert len(ya) == len(xa) and ya.dtype == y.dtype
  np.testing.assert_array_equal(xa[:len(x)], x)  # the real images stay
  fake, fake_y = xa[len(x):], ya[len(x):]
  assert fake.min() >= 0 and fake.max() <= 1
  np.testing.assert_allclose(np.bincount(fake_y, minlength=3) / len(fake_y),
                             np.bincount(y) / len(y), atol=0.06)


def test_gong_fakes_carry_their_class_pattern():
  x, y = _data()
  cfg = ml_collections.ConfigDict({"gan_epochs": 1, "gong_alpha": 0.5})
  xa, ya = DEFENSES.get("gong_gan").prepare_data(cfg, x, y, jax.random.key(0))
  pats = gan.spurious_patterns(3, (28, 28, 1), 0)
  fake, fy = xa[len(x):], ya[len(x):]
  on = (fake * pats[fy]).sum() / pats[fy].sum()
  off = (fake * (1 - pats[fy])).sum() / (1 - pats[fy]).sum()
  assert on > off + 0.4
