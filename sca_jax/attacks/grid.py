"""Picture of an attack: originals above reconstructions, chosen by PSNR.

To avoid cherry-picking (as the paper's Fig. 3 does), the grid shows the
images with the highest, the median and the lowest reconstruction PSNR.
Drawn with matplotlib's object API (no pyplot), so no global backend state
is touched and it works headless.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def pick_by_psnr(psnr_B: np.ndarray, per_group: int
                 ) -> dict[str, list[int]]:
  """Indices of the highest-, median- and lowest-PSNR images.

  Groups have `per_group` images each (fewer if there are not enough images
  for three disjoint groups); +inf PSNR counts as highest.
  """
  psnr_B = np.asarray(psnr_B, dtype=np.float64)
  n = len(psnr_B)
  k = max(1, min(int(per_group), n // 3))
  order = np.argsort(-psnr_B, kind="stable")  # descending
  mid = max(0, min(n // 2 - k // 2, n - k))
  return {"highest": order[:k].tolist(),
          "median": order[mid:mid + k].tolist(),
          "lowest": order[n - k:].tolist()}


def save_grid(path: str | os.PathLike, originals_BHWC: np.ndarray,
              recons_BHWC: np.ndarray, psnr_B: np.ndarray, per_group: int = 4,
              title: str = "") -> dict[str, list[int]]:
  """Writes the PNG grid to `path` atomically; returns the indices shown."""
  groups = pick_by_psnr(psnr_B, per_group)
  cols = [(g, i) for g, idx in groups.items() for i in idx]
  grey = originals_BHWC.shape[-1] == 1
  # Imported here: importing the attacks (for their defaults) stays cheap.
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=g-import-not-at-top
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  fig = Figure(figsize=(1.1 * len(cols), 2.9))
  FigureCanvasAgg(fig)
  axes = fig.subplots(2, len(cols), squeeze=False)
  prev = None
  for j, (group, i) in enumerate(cols):
    for row, images in enumerate((originals_BHWC, recons_BHWC)):
      ax = axes[row, j]
      img = np.clip(np.asarray(images[i], np.float32), 0.0, 1.0)
      ax.imshow(img[..., 0] if grey else img, cmap="gray" if grey else None,
                vmin=0.0, vmax=1.0, interpolation="nearest")
      ax.set_xticks([])
      ax.set_yticks([])
    axes[1, j].set_xlabel(f"{psnr_B[i]:.1f} dB", fontsize=8)
    if group != prev:
      axes[0, j].set_title(f"{group} PSNR", fontsize=8, loc="left")
      prev = group
  axes[0, 0].set_ylabel("original", fontsize=8)
  axes[1, 0].set_ylabel("reconstruction", fontsize=8)
  if title:
    fig.suptitle(title, fontsize=9)
  fig.tight_layout()
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(path.stem + f".{os.getpid()}.tmp.png")
  fig.savefig(tmp, dpi=100)
  os.replace(tmp, path)
  return groups
