"""Image-quality and privacy-attack metrics: PSNR, SSIM, FID and accuracy.

Images are float arrays in [0, 1], NHWC (batch, height, width, channels) with
1 or 3 channels. ``psnr``, ``ssim`` and ``per_example_correct`` are pure JAX
and can run under ``jit`` (their shape checks use static shapes). The
Frechet distance helpers, ``accuracy``, ``summarize`` and
``check_unit_range`` run on the host and return Python / NumPy values.

PSNR: ``dm_pix.psnr`` with data range 1, i.e. ``-10 log10(MSE)`` per image.
Identical images have MSE 0 and give ``+inf`` dB; we return that value as is
rather than capping it (a cap such as 100 dB would silently bias means), and
``summarize`` counts infinities separately.

SSIM: ``dm_pix.ssim`` with its defaults (Gaussian window 11x11, sigma 1.5,
k1 0.01, k2 0.03, max_val 1). dm-pix filters with 'valid' convolution, so the
SSIM map is (H - 10) x (W - 10) and is averaged over it and over channels.
It agrees with ``skimage.metrics.structural_similarity(x, y,
gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
data_range=1.0, channel_axis=-1)`` (``channel_axis=None`` on an HxW array for
grey): skimage filters with reflected borders over the full image but then
crops (win_size - 1) // 2 = 5 px off every side before averaging, which
leaves exactly the pixels whose window lies inside the image, i.e. the
'valid' map; its per-channel mean equals dm-pix's mean over channels since
every channel has the same map size. Measured max |difference| on noisy
28x28 grey and 32x32 RGB images is ~2e-6 (dm-pix runs in float32); the tests
use a tolerance of 1e-5, while skimage's default sample covariance already
differs by ~3e-4. Both height and width must be at least 11 px.
"""

from __future__ import annotations

import math
from typing import Any

import dm_pix
import jax
import jax.numpy as jnp
import numpy as np

# dm-pix's default Gaussian window; images must be at least this large.
SSIM_FILTER_SIZE = 11


def _check_image_pair(x: Any, y: Any) -> tuple[jax.Array, jax.Array]:
  """Validates a pair of NHWC image batches and returns them as arrays."""
  x = jnp.asarray(x)
  y = jnp.asarray(y)
  if x.ndim != 4 or y.ndim != 4 or x.shape != y.shape:
    raise ValueError(
        'Expected two rank-4 NHWC arrays of identical shape, got shapes '
        f'{x.shape} and {y.shape}.')
  if x.shape[-1] not in (1, 3):
    raise ValueError(
        f'Expected 1 or 3 channels (NHWC), got shape {x.shape}.')
  # dm-pix asserts float inputs; a uint8 image would also break data range 1.
  if not (jnp.issubdtype(x.dtype, jnp.floating)
          and jnp.issubdtype(y.dtype, jnp.floating)):
    raise ValueError(
        f'Expected floating images in [0, 1], got dtypes {x.dtype} and '
        f'{y.dtype}.')
  return x, y


def psnr(x_BHWC: jax.Array, y_BHWC: jax.Array) -> jax.Array:
  """Per-image PSNR in dB with data range 1; shape (B,).

  Identical images give ``+inf`` (not capped); see ``summarize``.
  """
  x, y = _check_image_pair(x_BHWC, y_BHWC)
  return dm_pix.psnr(x, y)


def ssim(x_BHWC: jax.Array, y_BHWC: jax.Array) -> jax.Array:
  """Per-image SSIM with dm-pix defaults (11x11 Gaussian, sigma 1.5); (B,).

  Raises:
    ValueError: on mismatched/non-NHWC shapes, or if height or width is
      smaller than the 11 px window (the 'valid' map would be empty).
  """
  x, y = _check_image_pair(x_BHWC, y_BHWC)
  _, h, w, _ = x.shape
  if h < SSIM_FILTER_SIZE or w < SSIM_FILTER_SIZE:
    raise ValueError(
        f'SSIM needs images of at least {SSIM_FILTER_SIZE}x{SSIM_FILTER_SIZE} '
        f'px (its Gaussian window), got shapes {x.shape} and {y.shape}.')
  return dm_pix.ssim(x, y)


def check_unit_range(x: Any, name: str = 'x') -> None:
  """Host-side check that ``x`` is finite and within [0, 1].

  Not done inside ``psnr``/``ssim`` because it needs concrete values (it
  cannot run under ``jit``) and forces a device-to-host transfer.

  Raises:
    ValueError: naming ``name`` and the observed range if the check fails.
  """
  arr = np.asarray(x)
  if arr.size == 0:
    return
  if not np.all(np.isfinite(arr)):
    raise ValueError(f'{name} contains non-finite values.')
  lo, hi = float(arr.min()), float(arr.max())
  if lo < 0.0 or hi > 1.0:
    raise ValueError(
        f'{name} must lie in [0, 1], got values in [{lo}, {hi}].')


def _clip_eigvals(eigvals: np.ndarray) -> np.ndarray:
  """Zeroes eigenvalues below the numerical-rank tolerance of a PSD matrix.

  Roundoff leaves the exact zeros of a singular covariance at about
  +-D * eps * max_eig; their square roots (~1e-8 relative each) would add up
  to a visible bias in the trace term, so, like ``np.linalg.matrix_rank``, we
  treat anything under that tolerance (negatives included) as zero. A true
  eigenvalue that small contributes at most sqrt(tol), which is below the
  roundoff noise of the sqrt anyway.
  """
  tol = eigvals.size * np.finfo(np.float64).eps * max(eigvals.max(), 0.0)
  return np.where(eigvals > tol, eigvals, 0.0)


def _psd_sqrt(sigma: np.ndarray) -> np.ndarray:
  """Symmetric PSD square root via eigh, with roundoff eigenvalues zeroed."""
  eigvals, eigvecs = np.linalg.eigh(sigma)
  return (eigvecs * np.sqrt(_clip_eigvals(eigvals))) @ eigvecs.T


def frechet_distance(mu1: Any, sigma1: Any, mu2: Any, sigma2: Any) -> float:
  """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2).

  d^2 = ||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^{1/2}), in float64
  on the host. The usual ``scipy.linalg.sqrtm(S1 @ S2)`` works on a
  non-symmetric product and, for near-singular covariances (e.g. fewer
  samples than feature dimensions), can return complex values or fail to
  converge. Instead we use that S1 S2 is similar to the symmetric PSD matrix
  M = S1^{1/2} S2 S1^{1/2}, so tr((S1 S2)^{1/2}) = sum_i sqrt(lambda_i(M)),
  where eigvalsh is stable and real. Eigenvalues below the numerical-rank
  tolerance (tiny negatives included) are set to 0 in both decompositions,
  which keeps rank-deficient covariances (N < D samples) accurate. The
  result is clipped at 0 too, since d^2 >= 0 exactly and only roundoff can
  make it negative (e.g. for identical statistics).

  Args:
    mu1: Mean of the first Gaussian, shape (D,).
    sigma1: Covariance of the first Gaussian, shape (D, D), symmetric PSD.
    mu2: Mean of the second Gaussian, shape (D,).
    sigma2: Covariance of the second Gaussian, shape (D, D), symmetric PSD.

  Returns:
    The squared Frechet distance (the quantity reported as FID) as a float.
  """
  mu1 = np.asarray(mu1, dtype=np.float64)
  mu2 = np.asarray(mu2, dtype=np.float64)
  sigma1 = np.asarray(sigma1, dtype=np.float64)
  sigma2 = np.asarray(sigma2, dtype=np.float64)
  if mu1.ndim != 1 or mu1.shape != mu2.shape or mu1.size == 0:
    raise ValueError('Means must be non-empty 1-D of equal shape, got '
                     f'{mu1.shape} and {mu2.shape}.')
  d = mu1.shape[0]
  if sigma1.shape != (d, d) or sigma2.shape != (d, d):
    raise ValueError(
        f'Covariances must have shape {(d, d)}, got {sigma1.shape} and '
        f'{sigma2.shape}.')
  for arr, name in ((mu1, 'mu1'), (mu2, 'mu2'), (sigma1, 'sigma1'),
                    (sigma2, 'sigma2')):
    if not np.all(np.isfinite(arr)):
      raise ValueError(f'{name} contains non-finite values.')
  # Symmetrize so eigh sees both triangles (inputs may carry roundoff).
  sigma1 = 0.5 * (sigma1 + sigma1.T)
  sigma2 = 0.5 * (sigma2 + sigma2.T)

  sqrt_s1 = _psd_sqrt(sigma1)
  m = sqrt_s1 @ sigma2 @ sqrt_s1
  m = 0.5 * (m + m.T)
  eigvals = _clip_eigvals(np.linalg.eigvalsh(m))
  tr_covmean = float(np.sum(np.sqrt(eigvals)))

  diff = mu1 - mu2
  dist = (float(diff @ diff) + float(np.trace(sigma1)) +
          float(np.trace(sigma2)) - 2.0 * tr_covmean)
  return max(dist, 0.0)


def feature_statistics(features_ND: Any) -> tuple[np.ndarray, np.ndarray]:
  """Float64 mean (D,) and sample covariance (D, D) with ddof=1.

  Raises:
    ValueError: if features are not 2-D (N, D) or N < 2.
  """
  f = np.asarray(features_ND, dtype=np.float64)
  if f.ndim != 2:
    raise ValueError(f'Expected features of shape (N, D), got {f.shape}.')
  if f.shape[0] < 2:
    raise ValueError(
        f'Need at least 2 feature vectors for a covariance, got {f.shape}.')
  mu = f.mean(axis=0)
  # atleast_2d: np.cov returns a 0-d array when D == 1.
  sigma = np.atleast_2d(np.cov(f, rowvar=False, ddof=1))
  return mu, sigma


def fid_from_features(f1_ND: Any, f2_ND: Any) -> float:
  """Frechet distance between Gaussians fitted to two feature sets."""
  f1 = np.asarray(f1_ND)
  f2 = np.asarray(f2_ND)
  if f1.ndim != 2 or f2.ndim != 2 or f1.shape[1] != f2.shape[1]:
    raise ValueError(
        'Expected feature arrays (N1, D) and (N2, D), got shapes '
        f'{f1.shape} and {f2.shape}.')
  mu1, sigma1 = feature_statistics(f1)
  mu2, sigma2 = feature_statistics(f2)
  return frechet_distance(mu1, sigma1, mu2, sigma2)


def _check_logits_labels(logits: Any, labels: Any) -> tuple[jax.Array,
                                                            jax.Array]:
  logits = jnp.asarray(logits)
  labels = jnp.asarray(labels)
  if logits.ndim != 2 or labels.ndim != 1 or (
      logits.shape[0] != labels.shape[0]):
    raise ValueError(
        'Expected logits (B, K) and labels (B,), got shapes '
        f'{logits.shape} and {labels.shape}.')
  if not jnp.issubdtype(labels.dtype, jnp.integer):
    raise ValueError(f'Labels must be integers, got dtype {labels.dtype}.')
  return logits, labels


def per_example_correct(logits_BK: jax.Array, labels_B: jax.Array) -> jax.Array:
  """Boolean (B,) array: whether argmax of each row equals its label."""
  logits, labels = _check_logits_labels(logits_BK, labels_B)
  return jnp.argmax(logits, axis=-1) == labels


def accuracy(logits_BK: jax.Array, labels_B: jax.Array) -> float:
  """Fraction of examples whose argmax equals the label (host float).

  Raises:
    ValueError: on bad shapes or an empty batch (accuracy is undefined).
  """
  correct = per_example_correct(logits_BK, labels_B)
  if correct.shape[0] == 0:
    raise ValueError('Accuracy of an empty batch is undefined.')
  return float(jnp.mean(correct.astype(jnp.float32)))


def summarize(values: Any) -> dict[str, float]:
  """Mean and std of per-example metric values, reporting infinities.

  PSNR is ``+inf`` for perfect reconstructions, which would make a plain mean
  ``inf``. We therefore compute ``mean`` and ``std`` (population, ddof=0) over
  the finite values only and report how many were infinite in ``n_inf``
  (``n`` is the total count and ``n_finite`` the count used). If no value is
  finite, ``mean`` and ``std`` are NaN. NaN inputs raise rather than being
  dropped, since they indicate a bug upstream.

  Returns:
    dict with Python floats: mean, std, n, n_finite, n_inf.
  """
  v = np.asarray(values, dtype=np.float64).reshape(-1)
  if np.any(np.isnan(v)):
    raise ValueError(
        f'summarize got {int(np.isnan(v).sum())} NaN value(s) out of {v.size}.')
  finite = v[np.isfinite(v)]
  n_finite = finite.size
  if n_finite:
    mean, std = float(finite.mean()), float(finite.std())
  else:
    mean = std = math.nan
  return dict(mean=mean, std=std, n=float(v.size), n_finite=float(n_finite),
              n_inf=float(v.size - n_finite))
