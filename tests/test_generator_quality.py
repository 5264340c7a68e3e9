"""Generator quality: class coverage entropy and the FID probe."""

import math

import numpy as np
import pytest

from sca_jax.gan import quality


def test_coverage_on_constructed_histograms():
  uniform = quality.class_coverage(np.repeat(np.arange(10), 7), 10)
  assert uniform["histogram"] == [7] * 10
  np.testing.assert_allclose(uniform["entropy_ratio"], 1.0)
  assert uniform["meets_bar"] and uniform["classes_hit"] == 10
  one = quality.class_coverage(np.full(50, 3), 10)
  assert one["entropy"] == 0.0 and not one["meets_bar"]
  two = quality.class_coverage(np.array([0, 9] * 20), 10)
  np.testing.assert_allclose(two["entropy_ratio"], math.log(2) / math.log(10))
  # 9 classes equally, one missing: ln 9 / ln 10 = 0.954 >= 0.9.
  nine = quality.class_coverage(np.repeat(np.arange(9), 3), 10)
  assert nine["classes_hit"] == 9 and nine["meets_bar"]
  # 70% in one class, the rest spread: entropy below the bar.
  skew = quality.class_coverage(np.array([0] * 63 + list(range(1, 10)) * 3),
                                10)
  p = np.array([63] + [3] * 9) / 90
  np.testing.assert_allclose(skew["entropy"], -(p * np.log(p)).sum())
  assert not skew["meets_bar"]
  with pytest.raises(ValueError, match="labels"):
    quality.class_coverage(np.array([10]), 10)


class _BrightnessClassifier:
  """Features: the pixels; class: mean brightness in 4 bins."""

  def features(self, x):
    return x.reshape(len(x), -1)

  def logits(self, x):
    return np.eye(4)[np.minimum((x.mean(axis=(1, 2, 3)) * 4).astype(int), 3)]


def test_probe_fid_and_coverage():
  rng = np.random.default_rng(0)
  real = rng.uniform(size=(400, 2, 2, 1))
  probe = quality.QualityProbe(_BrightnessClassifier(), real, 4)
  same = probe.measure(real)
  assert same["fid"] < 1e-6
  dark = probe.measure(real * 0.2)
  assert dark["fid"] > 0.1
  assert dark["coverage"]["classes_hit"] == 1
  ref = probe.reference()
  assert ref["fid_real_halves"] > 0 and ref["coverage_real"]["classes_hit"] > 1
  # Pixel spread: the images' own for real ones, 0 for a collapsed set.
  assert same["pixel_spread"] == pytest.approx(ref["pixel_spread_real"])
  assert ref["pixel_spread_real"] == pytest.approx(
      real.std(axis=0).mean())
  collapsed = probe.measure(np.repeat(real[:1], 50, axis=0))
  assert collapsed["pixel_spread"] < 1e-12


def test_pixel_spread_needs_two_images():
  assert quality.pixel_spread(np.array([[0.0], [1.0]])) == 0.5
  with pytest.raises(ValueError, match=">= 2 images"):
    quality.pixel_spread(np.zeros((1, 3)))
