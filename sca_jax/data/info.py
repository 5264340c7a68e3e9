"""What each data source holds, known before any file is read.

`describe(data_cfg)` gives the image shape and class count of a source, so the
target model (and every attack's leak layer) can be checked against the data
before loading it. Sources whose shape is only known from their files return
None; their model checks run right after loading instead.
"""

from __future__ import annotations

from typing import NamedTuple


class DataInfo(NamedTuple):
  image_shape: tuple[int, int, int]  # H, W, C as `Splits.image_shape`
  num_classes: int


# Fixed by the published data sets (and the 64x64 CelebA crop in sources.py).
_KNOWN = {
    "mnist": DataInfo((28, 28, 1), 10),
    "fashion_mnist": DataInfo((28, 28, 1), 10),
    "cifar10": DataInfo((32, 32, 3), 10),
    "olivetti_faces": DataInfo((64, 64, 1), 40),
    "pneumoniamnist": DataInfo((28, 28, 1), 2),
    "celeb_a": DataInfo((64, 64, 3), 4),
    "medical_mnist": DataInfo((64, 64, 1), 6),  # Kaggle's 64x64 JPEGs
}


def describe(data_cfg) -> DataInfo | None:
  """(image_shape, num_classes) of `data_cfg.name`, or None if only the files
  tell (the user's own `folder` or `npz`).

  Honours `data_cfg.image_size` (square resize) and `data_cfg.channels` when
  the config has them.
  """
  get = data_cfg.get if hasattr(data_cfg, "get") else (
      lambda k, d=None: getattr(data_cfg, k, d))
  info = _KNOWN.get(get("name"))
  if info is None:
    return None
  h, w, c = info.image_shape
  size, channels = get("image_size", None), get("channels", None)
  return DataInfo((size or h, size or w, channels or c), info.num_classes)
