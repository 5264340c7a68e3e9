"""GAN augmentation: generated digits are of the class asked for and as
varied as the data's; labels follow the data's.

Gong et al.'s GAN defense: tests/test_defense_gong.py."""

import jax
import ml_collections
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from sca_jax.data import load_source
from sca_jax.defenses import DEFENSES, gan
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



@pytest.mark.real_data
def test_conditional_gan_makes_digits_of_the_asked_class(real_data_dir):
  """~1,000 steps on 4,000 MNIST digits. A classifier fitted on 4,000 other
  digits (86% on real ones) agrees with the conditioned label on 73-81% of the
  samples (seeds 0-1); the form with the label concatenated to D's input
  collapsed to one image for every label: 10% (chance), pixel std 0.01."""
  raw = load_source("mnist", str(real_data_dir))
  x = raw.images[:8000].astype(np.float32) / np.float32(255)  # uint8 source
  y = raw.labels[:8000].astype(np.int32)
  clf = LogisticRegression(max_iter=200).fit(x[4000:].reshape(4000, -1),
                                             y[4000:])
  g = gan.train_gan(x[:4000], y[:4000], 10, 16, jax.random.key(0))
  y_fake = np.repeat(np.arange(10, dtype=np.int32), 50)
  fake = gan.sample(g, y_fake, (28, 28, 1), jax.random.key(1))
  agree = float(np.mean(clf.predict(fake.reshape(len(fake), -1)) == y_fake))
  assert agree >= 0.5, agree
  # Not one image per class: the samples spread as the real digits do.
  assert fake.std(0).mean() >= 0.5 * x[:4000].std(0).mean()
