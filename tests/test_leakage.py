"""Re-identification rate and floors: brute force, constructed cases, ties."""

import numpy as np
import pytest

from sca_jax import leakage


def _brute_force_rate(recon, orig):
  """Loop version of the definition: own original among the nearest, ties
  shared equally."""
  n = len(orig)
  total = 0.0
  for i in range(n):
    d = [float(np.sum((recon[i].astype(np.float64) -
                       orig[j].astype(np.float64)) ** 2)) for j in range(n)]
    nearest = [j for j in range(n) if d[j] == min(d)]
    total += (1.0 / len(nearest)) if i in nearest else 0.0
  return total / n


def test_rate_matches_brute_force_on_noisy_reconstructions():
  rng = np.random.default_rng(0)
  orig = rng.random((40, 6, 6, 1)).astype(np.float32)
  rates = []
  for noise in (0.05, 0.6, 2.0):
    recon = (orig + noise * rng.standard_normal(orig.shape)).astype(np.float32)
    rates.append(leakage.reidentification_rate(recon, orig))
    assert rates[-1] == pytest.approx(_brute_force_rate(recon, orig),
                                      abs=1e-12)
  # The noise levels span the range: found, partly found, near chance.
  assert rates[0] == 1.0 and 0.3 < rates[1] < 0.95 and rates[2] < 0.2


def test_identical_is_one_constant_is_chance_and_ties_are_shared():
  rng = np.random.default_rng(1)
  orig = rng.random((25, 4, 4, 1)).astype(np.float32)
  assert leakage.reidentification_rate(orig, orig) == 1.0
  constant = np.repeat(orig.mean(axis=0, keepdims=True), 25, axis=0)
  assert leakage.reidentification_rate(constant, orig) == pytest.approx(1 / 25)
  # Two identical originals: a perfect reconstruction of either ties with
  # the other and earns 1/2; the rest are found.
  dup = orig.copy()
  dup[1] = dup[0]
  assert leakage.reidentification_rate(dup, dup) == pytest.approx(
      (23 + 0.5 + 0.5) / 25)
  assert leakage.reidentification_rate(dup, dup) == pytest.approx(
      _brute_force_rate(dup, dup))
  # A reconstruction exactly halfway between its original and another.
  mid = orig.copy()
  mid[2] = (orig[2] + orig[3]) / 2
  assert leakage.reidentification_rate(mid, orig) == pytest.approx(
      _brute_force_rate(mid, orig))


def test_rate_rejects_mismatched_sets():
  with pytest.raises(ValueError, match="equal"):
    leakage.reidentification_rate(np.zeros((3, 2)), np.zeros((4, 2)))


def test_reidentification_reports_pixel_feature_and_chance():
  rng = np.random.default_rng(2)
  orig = rng.random((10, 3, 3, 1)).astype(np.float32)
  # A "feature" map that forgets everything but the mean: all tie.
  features = lambda x: np.asarray(x).mean(axis=(1, 2, 3))[:, None] * 0
  out = leakage.reidentification(orig, orig, features)
  assert out == dict(pixel=1.0, feature=pytest.approx(0.1), chance=0.1)


def test_floor_images_class_mean_and_retrieval_oracle():
  rng = np.random.default_rng(3)
  aux_x = rng.random((30, 4, 4, 1)).astype(np.float32)
  aux_y = np.arange(30) % 3
  # Class 2 is absent from the targets' labels; target 0 is an aux image.
  x = np.concatenate([aux_x[4:5], rng.random((5, 4, 4, 1),
                                             dtype=np.float32)])
  y = np.array([1, 0, 0, 1, 1, 0])
  images = leakage.floor_images(x, y, aux_x, aux_y)
  np.testing.assert_allclose(images["mean_image"][3], aux_x.mean(axis=0),
                             rtol=1e-6)
  np.testing.assert_allclose(images["class_mean_image"][1],
                             aux_x[aux_y == 0].mean(axis=0), rtol=1e-6)
  np.testing.assert_array_equal(images["retrieval_oracle"][0], aux_x[4])
  for i in range(1, 6):  # brute force: nearest aux image of the same class
    pool = np.flatnonzero(aux_y == y[i])
    best = pool[np.argmin([np.sum((aux_x[j] - x[i]) ** 2) for j in pool])]
    np.testing.assert_array_equal(images["retrieval_oracle"][i], aux_x[best])
  # A class missing from the auxiliary set falls back to all of it.
  lone = leakage.floor_images(x[:1], np.array([7]), aux_x, aux_y)
  np.testing.assert_allclose(lone["class_mean_image"][0], aux_x.mean(axis=0),
                             rtol=1e-6)
  np.testing.assert_array_equal(lone["retrieval_oracle"][0], aux_x[4])
