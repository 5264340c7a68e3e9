"""Generator quality: FID and class coverage in the evaluation CNN's eyes.

FID is computed on the evaluation classifier's penultimate features
(`sca_jax.evaluation`) between generated images and held-out auxiliary
images the generator never trained on. Class coverage is the classifier's
histogram of the generated images' predicted classes; its entropy over
ln(classes) is 1 for a uniform spread and 0 when one class takes all. A
collapsed generator (a few strokes) fails coverage even at a modest FID.
Pixel spread (the per-pixel std over the images, averaged over pixels)
shows collapse without any classifier: a generator that ignores its latent
falls far below the real images' spread.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from sca_jax import metrics

COVERAGE_BAR = 0.9  # entropy >= 0.9 ln(classes), issue 15's bar


def class_coverage(labels_N: np.ndarray, num_classes: int) -> dict[str, Any]:
  """Histogram of predicted labels, its entropy (nats) and entropy/ln(K)."""
  labels_N = np.asarray(labels_N)
  if num_classes < 2:
    raise ValueError(f"num_classes must be >= 2, got {num_classes}")
  if labels_N.size == 0 or labels_N.min() < 0 or labels_N.max() >= num_classes:
    raise ValueError(f"labels must be non-empty and in [0, {num_classes})")
  counts = np.bincount(labels_N, minlength=num_classes)
  p = counts / counts.sum()
  entropy = float(-(p[p > 0] * np.log(p[p > 0])).sum())
  ratio = entropy / math.log(num_classes)
  return dict(histogram=counts.tolist(), entropy=entropy,
              entropy_ratio=ratio, classes_hit=int((counts > 0).sum()),
              meets_bar=bool(ratio >= COVERAGE_BAR))


def pixel_spread(x_NHWC: np.ndarray) -> float:
  """Mean over pixels of the std over images: 0 when all images are equal."""
  x_NHWC = np.asarray(x_NHWC, np.float64)
  if len(x_NHWC) < 2:
    raise ValueError(f"pixel spread needs >= 2 images, got {len(x_NHWC)}")
  return float(x_NHWC.std(axis=0).mean())


@dataclasses.dataclass
class QualityProbe:
  """Scores generated images against held-out real ones.

  classifier: a `sca_jax.evaluation.EvalClassifier` (or anything with
    `features` and `logits` on [0, 1] NHWC images of the target's shape).
  held_out_x: real auxiliary images never trained on, [0, 1] NHWC.
  """

  classifier: Any
  held_out_x: np.ndarray
  num_classes: int

  def __post_init__(self):
    self.real_features = self.classifier.features(self.held_out_x)

  def reference(self) -> dict[str, Any]:
    """The floor: FID between the two halves of the held-out images, and the
    held-out images' own coverage."""
    half = len(self.real_features) // 2
    return dict(
        fid_real_halves=metrics.fid_from_features(
            self.real_features[:half], self.real_features[half:]),
        coverage_real=class_coverage(
            self.classifier.logits(self.held_out_x).argmax(-1),
            self.num_classes),
        pixel_spread_real=pixel_spread(self.held_out_x))

  def measure(self, fake_x: np.ndarray) -> dict[str, Any]:
    """FID and coverage of generated images ([0, 1], the target's shape)."""
    fid = metrics.fid_from_features(self.classifier.features(fake_x),
                                    self.real_features)
    labels = self.classifier.logits(fake_x).argmax(-1)
    return dict(fid=fid, num_fake=len(fake_x), num_real=len(self.held_out_x),
                coverage=class_coverage(labels, self.num_classes),
                pixel_spread=pixel_spread(fake_x))
