"""Tests for sca_jax.metrics against scikit-image / SciPy references."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
from scipy import ndimage
from skimage import metrics as skm

from sca_jax import metrics

# Float32 SSIM in dm-pix vs float64 skimage; observed max diff ~1e-7.
SSIM_ATOL = 1e-5
PSNR_ATOL_DB = 1e-4


def _noisy_pair(rng, shape, noise):
  """A smooth image in [0, 1] and a noisy copy, both float32 NHWC."""
  b, h, w, c = shape
  smooth = ndimage.gaussian_filter(
      rng.uniform(size=shape), sigma=(0, 3, 3, 0))
  smooth = (smooth - smooth.min()) / (smooth.max() - smooth.min())
  noisy = np.clip(smooth + noise * rng.standard_normal(shape), 0.0, 1.0)
  return smooth.astype(np.float32), noisy.astype(np.float32)


def _skimage_ssim(x, y):
  """skimage SSIM with the settings that reproduce dm-pix's defaults."""
  kwargs = dict(gaussian_weights=True, sigma=1.5,
                use_sample_covariance=False, data_range=1.0)
  x = x.astype(np.float64)
  y = y.astype(np.float64)
  if x.shape[-1] == 1:
    return skm.structural_similarity(x[..., 0], y[..., 0], **kwargs)
  return skm.structural_similarity(x, y, channel_axis=-1, **kwargs)


@pytest.mark.parametrize('shape', [(4, 28, 28, 1), (3, 32, 32, 3)])
def test_psnr_matches_skimage(shape):
  rng = np.random.default_rng(0)
  x = rng.uniform(size=shape).astype(np.float32)
  y = rng.uniform(size=shape).astype(np.float32)
  got = np.asarray(metrics.psnr(x, y))
  assert got.shape == (shape[0],)
  want = [skm.peak_signal_noise_ratio(x[i].astype(np.float64),
                                      y[i].astype(np.float64), data_range=1.0)
          for i in range(shape[0])]
  np.testing.assert_allclose(got, want, rtol=0, atol=PSNR_ATOL_DB)


def test_psnr_identical_is_inf_and_jittable():
  x = np.full((2, 12, 12, 1), 0.5, np.float32)
  y = x.copy()
  y[1, 0, 0, 0] = 0.0
  got = np.asarray(jax.jit(metrics.psnr)(x, y))
  assert got[0] == np.inf
  assert np.isfinite(got[1])


@pytest.mark.parametrize('shape,noise', [((4, 28, 28, 1), 0.1),
                                         ((3, 32, 32, 3), 0.05)])
def test_ssim_matches_skimage(shape, noise):
  rng = np.random.default_rng(1)
  x, y = _noisy_pair(rng, shape, noise)
  got = np.asarray(metrics.ssim(x, y))
  assert got.shape == (shape[0],)
  want = np.array([_skimage_ssim(x[i], y[i]) for i in range(shape[0])])
  # Guard against a trivial comparison where everything is ~0 or ~1.
  assert np.all((want > 0.1) & (want < 0.95)), want
  np.testing.assert_allclose(got, want, rtol=0, atol=SSIM_ATOL)


def test_ssim_identical_is_one():
  rng = np.random.default_rng(2)
  x, _ = _noisy_pair(rng, (2, 16, 16, 3), 0.0)
  np.testing.assert_allclose(np.asarray(metrics.ssim(x, x)), 1.0, atol=1e-5)


def test_ssim_rejects_small_images():
  x = np.zeros((1, 10, 28, 1), np.float32)
  with pytest.raises(ValueError, match='at least 11'):
    metrics.ssim(x, x)


@pytest.mark.parametrize('fn', [metrics.psnr, metrics.ssim])
def test_image_shape_errors(fn):
  a = np.zeros((2, 28, 28, 1), np.float32)
  with pytest.raises(ValueError, match=r'\(2, 28, 28, 1\).*\(2, 28, 28, 3\)'):
    fn(a, np.zeros((2, 28, 28, 3), np.float32))
  with pytest.raises(ValueError, match='rank-4'):
    fn(a[0], a[0])
  with pytest.raises(ValueError, match='floating'):
    fn(a.astype(np.uint8), a.astype(np.uint8))


def test_check_unit_range():
  metrics.check_unit_range(np.array([0.0, 0.5, 1.0]), 'ok')
  with pytest.raises(ValueError, match='recon'):
    metrics.check_unit_range(np.array([0.0, 1.5]), 'recon')
  with pytest.raises(ValueError, match='recon'):
    metrics.check_unit_range(np.array([-0.1, 0.5]), 'recon')
  with pytest.raises(ValueError, match='non-finite'):
    metrics.check_unit_range(np.array([np.nan]), 'recon')


def _random_stats(rng, d, n):
  # Mixing with eigenvalues in [0.5, 2] keeps the covariance well conditioned.
  q, _ = np.linalg.qr(rng.standard_normal((d, d)))
  mix = (q * rng.uniform(0.5, 2.0, size=d)) @ q.T
  f = rng.standard_normal((n, d)) @ mix
  return metrics.feature_statistics(f + rng.standard_normal(d))


def _naive_frechet(mu1, s1, mu2, s2):
  covmean = scipy.linalg.sqrtm(s1 @ s2).real
  diff = mu1 - mu2
  return diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)


def test_frechet_matches_naive_on_well_conditioned():
  rng = np.random.default_rng(3)
  for d in (1, 5, 32):
    mu1, s1 = _random_stats(rng, d, 10 * d + 50)
    mu2, s2 = _random_stats(rng, d, 10 * d + 50)
    assert np.linalg.cond(s1) < 1e3 and np.linalg.cond(s2) < 1e3
    got = metrics.frechet_distance(mu1, s1, mu2, s2)
    want = _naive_frechet(mu1, s1, mu2, s2)
    assert isinstance(got, float)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    # The formula is symmetric but our computation is not: a useful check.
    np.testing.assert_allclose(
        metrics.frechet_distance(mu2, s2, mu1, s1), got, rtol=1e-9)


def test_frechet_identical_and_equal_covariances():
  rng = np.random.default_rng(4)
  for _ in range(5):
    mu, s = _random_stats(rng, 16, 200)
    # Roundoff alone makes the raw value about +-1e-14; it must not go < 0.
    got = metrics.frechet_distance(mu, s, mu, s)
    assert 0.0 <= got < 1e-9
  # With S1 == S2 the trace terms cancel, leaving ||mu1 - mu2||^2.
  mu2 = mu + rng.standard_normal(16)
  np.testing.assert_allclose(metrics.frechet_distance(mu, s, mu2, s),
                             np.sum((mu - mu2) ** 2), rtol=1e-9)


def test_frechet_commuting_rank_deficient_closed_form():
  # Diagonal covariances commute: d^2 = ||dmu||^2 + sum (sqrt a - sqrt b)^2,
  # including the zero (rank-deficient) entries.
  a = np.array([4.0, 1.0, 0.0, 0.0, 2.0])
  b = np.array([1.0, 0.0, 9.0, 0.0, 2.0])
  mu1, mu2 = np.zeros(5), np.arange(5.0)
  want = np.sum(mu2 ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
  got = metrics.frechet_distance(mu1, np.diag(a), mu2, np.diag(b))
  np.testing.assert_allclose(got, want, rtol=1e-12)


def test_frechet_rank_deficient_is_finite_and_non_negative():
  # N < D features give singular covariances, where sqrtm(S1 @ S2) may be
  # complex or inaccurate; ours must stay real, finite and >= 0.
  rng = np.random.default_rng(5)
  d = 64
  for n in (3, 10, 40):
    f1 = rng.standard_normal((n, d))
    f2 = rng.standard_normal((n, d)) + 0.1
    got = metrics.fid_from_features(f1, f2)
    assert isinstance(got, float) and math.isfinite(got) and got >= 0
    np.testing.assert_allclose(metrics.fid_from_features(f2, f1), got,
                               rtol=1e-8)
    assert metrics.fid_from_features(f1, f1) == pytest.approx(0, abs=1e-8)
    # Equal singular covariances: exactly ||dmu||^2. Naive sqrtm(S @ S) of a
    # singular S is off by ~1e-6 here, so this tolerance separates the two.
    mu1, s1 = metrics.feature_statistics(f1)
    mu2 = metrics.feature_statistics(f2)[0]
    np.testing.assert_allclose(metrics.frechet_distance(mu1, s1, mu2, s1),
                               np.sum((mu1 - mu2) ** 2), rtol=0, atol=1e-9)


def test_frechet_rotated_rank_deficient_closed_form():
  # Covariances sharing eigenvectors Q commute, so the closed form for the
  # diagonal case holds, here with half the eigenvalues exactly zero.
  rng = np.random.default_rng(6)
  d = 32
  q, _ = np.linalg.qr(rng.standard_normal((d, d)))
  a = np.where(np.arange(d) % 2 == 0, rng.uniform(0.5, 2.0, d), 0.0)
  b = np.where(np.arange(d) < d // 2, rng.uniform(0.5, 2.0, d), 0.0)
  s1, s2 = (q * a) @ q.T, (q * b) @ q.T
  mu = np.zeros(d)
  want = np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
  np.testing.assert_allclose(metrics.frechet_distance(mu, s1, mu, s2), want,
                             rtol=0, atol=1e-9)


def test_feature_statistics_and_errors():
  f = np.array([[1.0, 2.0], [3.0, 6.0], [5.0, 4.0]], np.float32)
  mu, sigma = metrics.feature_statistics(f)
  assert mu.dtype == np.float64 and sigma.dtype == np.float64
  np.testing.assert_allclose(mu, [3.0, 4.0])
  np.testing.assert_allclose(sigma, [[4.0, 2.0], [2.0, 4.0]])
  mu1, sigma1 = metrics.feature_statistics(f[:, :1])
  assert mu1.shape == (1,) and sigma1.shape == (1, 1)
  with pytest.raises(ValueError, match='at least 2'):
    metrics.feature_statistics(f[:1])
  with pytest.raises(ValueError, match='shape'):
    metrics.feature_statistics(f[0])
  with pytest.raises(ValueError, match=r'\(3, 2\).*\(3, 1\)'):
    metrics.fid_from_features(f, f[:, :1])
  with pytest.raises(ValueError, match='Covariances'):
    metrics.frechet_distance(mu, sigma, mu, sigma[:1])


def test_accuracy_hand_made():
  logits = jnp.array([[2.0, 1.0, 0.0],
                      [0.0, 3.0, 1.0],
                      [0.5, 0.1, 0.9],
                      [1.0, 0.0, -1.0]])
  labels = jnp.array([0, 1, 0, 2])
  np.testing.assert_array_equal(
      np.asarray(metrics.per_example_correct(logits, labels)),
      [True, True, False, False])
  assert metrics.accuracy(logits, labels) == 0.5
  with pytest.raises(ValueError, match=r'\(4, 3\).*\(3,\)'):
    metrics.accuracy(logits, labels[:3])
  with pytest.raises(ValueError, match='integers'):
    metrics.accuracy(logits, labels.astype(jnp.float32))


def test_summarize_reports_infinities():
  out = metrics.summarize([10.0, 20.0, np.inf])
  assert out == dict(mean=15.0, std=5.0, n=3.0, n_finite=2.0, n_inf=1.0)
  assert all(type(v) is float for v in out.values())
  out = metrics.summarize(jnp.array([np.inf, np.inf]))
  assert math.isnan(out['mean']) and out['n_inf'] == 2.0
  with pytest.raises(ValueError, match='NaN'):
    metrics.summarize([1.0, np.nan])
