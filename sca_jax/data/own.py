"""Bring your own data: an image folder or an .npz, checked before use.

`config.data.name = "folder"` reads `<config.data.path>/<class>/<image>`;
`"npz"` reads an .npz with `images` (N, H, W) or (N, H, W, C) and `labels`
(N,). Any size and channel count; `config.data.image_size` and
`config.data.channels` resize and convert (see `sources.load_source`).
Every problem is a ValueError (or FileNotFoundError) naming the field, the
file and what is allowed.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from sca_jax.data import readers

OWN_SOURCES = ("folder", "npz")


def require_path(name: str, path) -> Path:
  """`config.data.path` for source `name`, which must exist."""
  if not path:
    what = ("a folder <class>/<image>" if name == "folder" else
            "an .npz with 'images' and 'labels'")
    raise ValueError(f"config.data.path must be set for config.data.name="
                     f"{name!r}: {what}")
  path = Path(path).expanduser()
  if not path.exists():
    raise FileNotFoundError(f"config.data.path={str(path)!r} does not exist")
  return path


def check_classes(labels: np.ndarray, where) -> None:
  found = np.unique(labels)
  if len(found) < 2:
    raise ValueError(f"{where} holds {len(found)} class(es) "
                     f"{found.tolist()}: a classifier needs at least 2")


def list_folder(path: Path) -> tuple[list[Path], np.ndarray, tuple[str, ...]]:
  """The images of `<path>/<class>/<image>`, checked: >= 2 non-empty classes."""
  if not path.is_dir():
    raise ValueError(f"{path} is not a folder of <class>/<image> files")
  files, labels, names = readers.list_image_folder(path)
  if not names:
    raise ValueError(f"{path} is empty: no class folders <class>/<image>")
  empty = [n for i, n in enumerate(names) if not np.any(labels == i)]
  if empty:
    raise ValueError(
        f"class folder(s) {empty} under {path} hold no images "
        f"({', '.join(readers.IMAGE_SUFFIXES)}): remove them or add images")
  if len(names) < 2:
    raise ValueError(f"{path} has one class folder only ({names[0]!r}): a "
                     f"classifier needs at least 2")
  return files, labels, names


def read_npz(path: Path) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
  """uint8 NHWC images, int32 labels 0..K-1 and class names of an .npz.

  Images may be uint8, another integer type within 0..255, or floats in
  [0, 1]; labels any integers (their sorted distinct values become classes
  0..K-1, named by the original values).
  """
  if not zipfile.is_zipfile(path):
    raise ValueError(f"{path} is not a readable .npz (np.savez writes a zip "
                     f"archive of arrays)")
  try:
    with np.load(path, allow_pickle=False) as npz:
      missing = [k for k in ("images", "labels") if k not in npz.files]
      if missing:
        raise ValueError(f"{path} lacks {missing}; it has {npz.files} "
                         f"(data.name='npz' needs 'images' and 'labels')")
      images, labels = npz["images"], npz["labels"]
  except (OSError, zipfile.BadZipFile, EOFError) as e:
    raise ValueError(f"{path} is not a readable .npz: {e}") from e
  except ValueError as e:
    if "allow_pickle" in str(e):  # Object arrays need pickle: refused.
      raise ValueError(f"{path} holds object arrays; save numeric arrays "
                       f"(np.savez(path, images=..., labels=...))") from e
    raise
  if images.ndim == 3:
    images = images[..., None]
  if images.ndim != 4:
    raise ValueError(f"{path}: images have shape {images.shape}; expected "
                     f"(N, H, W) or (N, H, W, C)")
  if images.shape[1] in (1, 3) and images.shape[-1] > 4:
    raise ValueError(f"{path}: images of shape {images.shape} look like "
                     f"NCHW; save them as NHWC (np.moveaxis(x, 1, -1))")
  labels = labels.reshape(-1) if labels.ndim == 2 and labels.shape[1] == 1 \
      else labels
  if labels.ndim != 1 or len(labels) != len(images):
    raise ValueError(f"{path}: {len(images)} images but labels of shape "
                     f"{labels.shape}; expected ({len(images)},)")
  if not np.issubdtype(labels.dtype, np.integer):
    raise ValueError(f"{path}: labels have dtype {labels.dtype}; expected "
                     f"integers")
  return _to_uint8(images, path), *_dense_labels(labels, path)


def _to_uint8(images: np.ndarray, path) -> np.ndarray:
  if images.dtype == np.uint8:
    return images
  if np.issubdtype(images.dtype, np.floating):
    if images.size and (not np.isfinite(images).all() or images.min() < 0 or
                        images.max() > 1):
      raise ValueError(f"{path}: float images must lie in [0, 1], got "
                       f"[{images.min()}, {images.max()}]")
    return np.round(images * 255).astype(np.uint8)
  if np.issubdtype(images.dtype, np.integer):
    if images.size and (images.min() < 0 or images.max() > 255):
      raise ValueError(f"{path}: integer images must lie in 0..255, got "
                       f"{images.min()}..{images.max()}")
    return images.astype(np.uint8)
  raise ValueError(f"{path}: images have dtype {images.dtype}; expected "
                   f"uint8, integers in 0..255 or floats in [0, 1]")


def _dense_labels(labels: np.ndarray, path
                  ) -> tuple[np.ndarray, tuple[str, ...]]:
  values, dense = np.unique(labels, return_inverse=True)
  check_classes(labels, path)
  return dense.astype(np.int32), tuple(str(v) for v in values)
