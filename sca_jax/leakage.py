"""Per-image leakage and the floors every attack metric is read against.

Attack accuracy measures the class, not the individual: a class-mean image
already gets the class right. Two additions judge the individual:

* Re-identification rate: the share of reconstructions whose nearest
  neighbour among the N reconstructed originals is their own original, in
  pixel space and in the evaluation classifier's feature space (squared
  Euclidean distance). Chance is 1/N. Ties are explicit: when the own
  original shares the minimum distance with k others, it earns 1/(k+1) (the
  expected hit rate of a uniformly random tie-break); so a set of identical
  reconstructions scores exactly 1/N, whatever it is.
* Three floors, scored exactly like an attack: the mean auxiliary image, the
  class-mean auxiliary image of the true class, and the retrieval oracle: the
  same-class auxiliary image nearest (pixel space) to the true image, which
  uses the true image and so bounds what "a plausible member of the class"
  can score without any leak. A class absent from the auxiliary set falls
  back to the mean image (class mean) or to all auxiliary images (oracle).

Distances are computed row by row in float64 from differences, not from the
`|a|^2 - 2ab + |b|^2` expansion, so equal inputs give bitwise equal distances
and ties are exact.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

# Elements of one (block, M, D) float64 difference array: ~32 MB.
_BLOCK_ELEMENTS = 4_000_000


def squared_distances(a_ND: np.ndarray, b_MD: np.ndarray) -> np.ndarray:
  """(N, M) squared Euclidean distances, float64, exact for equal rows."""
  a = np.asarray(a_ND, np.float64).reshape(len(a_ND), -1)
  b = np.asarray(b_MD, np.float64).reshape(len(b_MD), -1)
  if a.shape[1] != b.shape[1]:
    raise ValueError(f"squared_distances: feature sizes differ, {a.shape[1]} "
                     f"vs {b.shape[1]}")
  out = np.empty((len(a), len(b)))
  block = max(1, _BLOCK_ELEMENTS // max(1, b.size))
  for i in range(0, len(a), block):
    diff = a[i:i + block, None, :] - b[None, :, :]
    out[i:i + block] = np.square(diff).sum(axis=-1)
  return out


def reidentification_rate(recon_ND: np.ndarray, orig_ND: np.ndarray) -> float:
  """Share of reconstructions nearest to their own original (ties shared)."""
  if len(recon_ND) != len(orig_ND) or len(orig_ND) < 1:
    raise ValueError(f"reidentification_rate: need equal, non-empty sets, "
                     f"got {len(recon_ND)} and {len(orig_ND)}")
  d_NN = squared_distances(recon_ND, orig_ND)
  at_min = d_NN == d_NN.min(axis=1, keepdims=True)
  own = np.diagonal(at_min)
  return float(np.mean(own / at_min.sum(axis=1)))


def reidentification(recon_NHWC: np.ndarray, x_NHWC: np.ndarray,
                     features: Callable[[np.ndarray], np.ndarray],
                     feats_true: np.ndarray | None = None) -> dict[str, float]:
  """`{"pixel", "feature", "chance"}` re-identification rates.

  `features` maps images to the evaluation classifier's feature vectors;
  `feats_true` are those of `x_NHWC` if already computed.
  """
  if feats_true is None:
    feats_true = features(x_NHWC)
  return dict(pixel=reidentification_rate(recon_NHWC, x_NHWC),
              feature=reidentification_rate(features(recon_NHWC), feats_true),
              chance=1.0 / len(x_NHWC))


def class_mean_images(y_N: np.ndarray, aux_x: np.ndarray,
                      aux_y: np.ndarray) -> np.ndarray:
  """Per target image, the mean auxiliary image of its true class."""
  overall = aux_x.mean(axis=0)
  means = {c: (aux_x[aux_y == c].mean(axis=0) if np.any(aux_y == c)
               else overall) for c in np.unique(y_N)}
  return np.stack([means[c] for c in y_N]).astype(np.float32)


def retrieval_oracle(x_NHWC: np.ndarray, y_N: np.ndarray, aux_x: np.ndarray,
                     aux_y: np.ndarray) -> np.ndarray:
  """Per target image, the nearest same-class auxiliary image (pixel space)."""
  out = np.empty_like(x_NHWC, dtype=np.float32)
  for c in np.unique(y_N):
    rows = np.flatnonzero(y_N == c)
    pool = aux_x[aux_y == c] if np.any(aux_y == c) else aux_x
    nearest = squared_distances(x_NHWC[rows], pool).argmin(axis=1)
    out[rows] = pool[nearest]
  return out


def floor_images(x_NHWC: np.ndarray, y_N: np.ndarray, aux_x: np.ndarray,
                 aux_y: np.ndarray) -> dict[str, np.ndarray]:
  """The three floors' stand-in reconstructions, one per target image."""
  mean = aux_x.mean(axis=0, keepdims=True).astype(np.float32)
  return dict(mean_image=np.repeat(mean, len(x_NHWC), axis=0),
              class_mean_image=class_mean_images(y_N, aux_x, aux_y),
              retrieval_oracle=retrieval_oracle(x_NHWC, y_N, aux_x, aux_y))


def floors(x_NHWC: np.ndarray, y_N: np.ndarray, aux_x: np.ndarray,
           aux_y: np.ndarray, evaluator: Any,
           score: Callable[..., tuple[dict[str, Any], np.ndarray]],
           feats_true: np.ndarray | None = None) -> dict[str, dict[str, Any]]:
  """Each floor scored as an attack: `score`'s metrics + reidentification.

  `score(recon, x, y, evaluator, feats_true) -> (metrics, psnr)` is the
  attacks' own scoring, so floors and attacks are measured alike.
  """
  if feats_true is None:
    feats_true = evaluator.features(x_NHWC)
  out = {}
  for name, images in floor_images(x_NHWC, y_N, aux_x, aux_y).items():
    scores, _ = score(images, x_NHWC, y_N, evaluator, feats_true)
    out[name] = dict(**scores, reidentification=reidentification(
        images, x_NHWC, evaluator.features, feats_true))
  return out


__all__ = ["class_mean_images", "floor_images", "floors", "reidentification",
           "reidentification_rate", "retrieval_oracle", "squared_distances"]
