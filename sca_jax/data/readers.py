"""Readers for the on-disk formats data sets are published in.

Pure functions from files to uint8 NHWC arrays and int labels; they know
nothing about configs, caches or downloads (see `sources.py`, `remote.py`).
"""

from __future__ import annotations

import codecs
import gzip
import io
import os
import pickle
import struct
import tarfile
import zlib
from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff",
                  ".webp")
# Pooled order of split folders inside an archive: train first, then test.
_SPLIT_ORDER = {"train": 0, "val": 1, "validation": 1, "test": 2}
_GREY_MODES = ("1", "L", "LA", "I", "I;16", "F")


def read_idx(path: Path, ndim: int) -> np.ndarray:
  """Reads an IDX file of unsigned bytes (gzipped if its name ends in .gz).

  Raises:
    ValueError: if the file is corrupt, truncated or not a ubyte IDX file of
      `ndim` dimensions.
  """
  path = Path(path)
  try:
    if path.suffix == ".gz":
      with gzip.open(path, "rb") as f:
        data = f.read()
    else:
      data = path.read_bytes()
  except (EOFError, gzip.BadGzipFile, zlib.error) as e:
    raise ValueError(f"{path} is corrupt or truncated: {e}") from e
  if len(data) < 4:
    raise ValueError(f"{path} is truncated: {len(data)} bytes, no IDX header")
  zero, dtype_code, file_ndim = struct.unpack(">HBB", data[:4])
  # 0x08 = unsigned byte, the only type MNIST-style files use.
  if zero != 0 or dtype_code != 0x08 or file_ndim != ndim:
    raise ValueError(
        f"{path} is not a ubyte IDX file with {ndim} dimensions: magic number "
        f"{data[:4].hex()}, expected 000008{ndim:02x}")
  header = 4 + 4 * ndim
  if len(data) < header:
    raise ValueError(f"{path} is truncated inside its header")
  shape = struct.unpack(f">{ndim}I", data[4:header])
  expected = int(np.prod(shape))
  if len(data) - header != expected:
    raise ValueError(
        f"{path} is truncated or padded: header says shape {shape} "
        f"({expected} bytes), file has {len(data) - header} bytes of data")
  return np.frombuffer(data, np.uint8, offset=header).reshape(shape)


class _CifarUnpickler(pickle.Unpickler):
  """Resolves only what CIFAR's batch pickles hold: NumPy arrays."""
  _ALLOWED = {("numpy.core.multiarray", "_reconstruct"),
              ("numpy._core.multiarray", "_reconstruct"),
              ("numpy", "ndarray"), ("numpy", "dtype"),
              # Python 3 writes protocol-2 bytes as _codecs.encode(str).
              ("_codecs", "encode")}

  def find_class(self, module: str, name: str):
    if (module, name) not in self._ALLOWED:
      raise pickle.UnpicklingError(f"{module}.{name} is not allowed")
    if module == "_codecs":
      return codecs.encode
    if name == "_reconstruct":
      return np.ndarray.__reduce__(np.zeros(0))[0]  # NumPy's _reconstruct.
    return getattr(np, name)


def read_cifar10_python_tar(path: Path) -> tuple[np.ndarray, np.ndarray]:
  """Reads the official `cifar-10-python.tar.gz` without extracting it.

  Returns uint8 NHWC images and labels, data_batch_1..5 then test_batch (the
  official order). The batch pickles are read by an unpickler that builds
  NumPy arrays only, so a tampered file cannot run code.
  """
  path = Path(path)
  batches: dict[str, dict] = {}
  wanted = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
  try:
    with tarfile.open(path, "r|*") as tar:
      for member in tar:
        base = member.name.rsplit("/", 1)[-1]
        if member.isfile() and base in wanted:
          raw = tar.extractfile(member).read()
          batches[base] = _CifarUnpickler(io.BytesIO(raw),
                                          encoding="bytes").load()
  except (tarfile.TarError, EOFError, zlib.error,
          pickle.UnpicklingError) as e:
    raise ValueError(f"{path} is corrupt or not the CIFAR-10 python "
                     f"archive: {e}") from e
  missing = [b for b in wanted if b not in batches]
  if missing:
    raise ValueError(f"{path} lacks {missing} (cifar-10-batches-py/...)")
  images, labels = [], []
  for b in wanted:
    data = np.asarray(batches[b][b"data"], np.uint8)
    # Rows are 3072 bytes: the red, green, then blue 32x32 planes.
    images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    labels.append(np.asarray(batches[b][b"labels"], np.int32))
  return np.concatenate(images), np.concatenate(labels)


def convert_channels(images: np.ndarray, channels: int, field: str
                     ) -> np.ndarray:
  """uint8 NHWC to `channels`: grey <-> RGB, RGBA -> RGB, or unchanged."""
  have = images.shape[-1]
  if have == channels:
    return images
  if have == 1 and channels == 3:
    return np.repeat(images, 3, axis=-1)
  if have in (3, 4) and channels == 3:
    return images[..., :3]
  if have in (3, 4) and channels == 1:
    # ITU-R 601-2 luma, as PIL's convert("L").
    rgb = images[..., :3].astype(np.float32)
    luma = rgb @ np.array([0.299, 0.587, 0.114], np.float32)
    return np.clip(np.round(luma), 0, 255).astype(np.uint8)[..., None]
  raise ValueError(f"{field}={channels}: cannot convert images with {have} "
                   f"channels; allowed: 1 (grey) or 3 (RGB) from 1, 3 or 4")


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
  """Center-crops each uint8 NHWC image to a square, resizes to size x size.

  Channels are resized one at a time, so any channel count works.
  """
  n, h, w, c = images.shape
  if (h, w) == (size, size):
    return images
  out = np.empty((n, size, size, c), np.uint8)
  for i in range(n):
    for k in range(c):
      out[i, :, :, k] = np.asarray(center_crop_resize(
          Image.fromarray(images[i, :, :, k]), size))
  return out


def center_crop_resize(image: Image.Image, size: int) -> Image.Image:
  """Crops the central square of `image` and resizes it to size x size."""
  w, h = image.size
  side = min(w, h)
  left, top = (w - side) // 2, (h - side) // 2
  image = image.crop((left, top, left + side, top + side))
  if side != size:
    image = image.resize((size, size), Image.Resampling.BICUBIC)
  return image


def decode_image(source, mode: str, size: int | None = None) -> np.ndarray:
  """Decodes an image (path or bytes) to an HxWxC uint8 array in `mode`."""
  if isinstance(source, bytes):
    source = io.BytesIO(source)
  with Image.open(source) as image:
    if image.mode != mode:
      image = image.convert(mode)
    if size is not None:
      image = center_crop_resize(image, size)
    array = np.asarray(image, dtype=np.uint8)
  return array[..., None] if array.ndim == 2 else array


def _mode_of(source) -> str:
  """'L' for grey images, 'RGBA' for colour with alpha, 'RGB' otherwise;
  decided by one image of a set."""
  if isinstance(source, bytes):
    source = io.BytesIO(source)
  with Image.open(source) as image:
    if image.mode in _GREY_MODES:
      return "L"
    return "RGBA" if image.mode in ("RGBA", "PA") else "RGB"


def _stack(arrays: list[np.ndarray], names: list[str], where) -> np.ndarray:
  shapes = {a.shape for a in arrays}
  if len(shapes) > 1:
    first = arrays[0].shape
    odd = next(n for n, a in zip(names, arrays) if a.shape != first)
    raise ValueError(
        f"images in {where} differ in size: {names[0]} is {first}, {odd} is "
        f"not; set config.data.image_size to resize them all")
  return np.stack(arrays)


def _is_image(name: str) -> bool:
  return name.lower().endswith(IMAGE_SUFFIXES) and not os.path.basename(
      name).startswith(".")


def read_image_tar(
    path: Path, mode: str = "RGB"
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
  """Reads `<top>/<split>/<class>/<file>` images from a tar, not extracting.

  The archive is read once as a stream ("r|*": no seeking, faster than
  random access into a .tar.gz). Splits are pooled train, then val, then test;
  within a split images are ordered by class name, then file name. Class
  names are sorted alphabetically; labels index them.
  """
  path = Path(path)
  decoded: dict[tuple[int, str, str], np.ndarray] = {}
  try:
    with tarfile.open(path, "r|*") as tar:
      for member in tar:
        if not member.isfile() or not _is_image(member.name):
          continue
        parts = member.name.split("/")
        if len(parts) < 3 or parts[-3] not in _SPLIT_ORDER:
          raise ValueError(
              f"{path}: member {member.name!r} is not <split>/<class>/<file> "
              f"with split in {sorted(_SPLIT_ORDER)}")
        key = (_SPLIT_ORDER[parts[-3]], parts[-2], parts[-1])
        data = tar.extractfile(member).read()
        decoded[key] = decode_image(data, mode)
  except (tarfile.TarError, EOFError, zlib.error) as e:
    raise ValueError(f"{path} is corrupt or truncated: {e}") from e
  if not decoded:
    raise ValueError(f"{path} holds no images")
  keys = sorted(decoded)
  class_names = tuple(sorted({k[1] for k in keys}))
  index = {c: i for i, c in enumerate(class_names)}
  images = _stack([decoded.pop(k) for k in keys], ["/".join(map(str, k))
                                                   for k in keys], path)
  labels = np.array([index[k[1]] for k in keys], np.int32)
  return images, labels, class_names


def list_image_folder(root: Path) -> tuple[list[Path], np.ndarray,
                                           tuple[str, ...]]:
  """Lists `<root>/<class>/<image>` files sorted by class, then file name."""
  root = Path(root)
  class_names = tuple(sorted(
      d.name for d in root.iterdir() if d.is_dir() and
      not d.name.startswith(".")))
  files, labels = [], []
  for label, name in enumerate(class_names):
    found = sorted(f for f in (root / name).iterdir()
                   if f.is_file() and _is_image(f.name))
    files.extend(found)
    labels.extend([label] * len(found))
  return files, np.array(labels, np.int32), class_names


def read_images(files: Iterable[Path], where, size: int | None = None,
                mode: str | None = None) -> np.ndarray:
  """Decodes image files into one NHWC uint8 array.

  Args:
    files: image paths, in the order wanted.
    where: what to name in errors (a folder).
    size: if given, every image is center-cropped and resized to size x size.
    mode: 'L' or 'RGB'; by default grey if the first image is grey.
  """
  files = list(files)
  if not files:
    raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {where}")
  arrays, unreadable = [], []
  for f in files:
    try:
      mode = mode or _mode_of(f)
      arrays.append(decode_image(f, mode, size))
    except (OSError, SyntaxError, ValueError) as e:  # PIL's decode errors.
      unreadable.append(f"{f} ({type(e).__name__}: {e})")
  if unreadable:
    shown = "; ".join(unreadable[:5])
    more = f" and {len(unreadable) - 5} more" if len(unreadable) > 5 else ""
    raise ValueError(f"{len(unreadable)} unreadable image(s) in {where}: "
                     f"{shown}{more}")
  return _stack(arrays, [str(f) for f in files], where)


def read_celeba_attributes(attr_file: Path, hair_attributes: tuple[str, ...]
                           ) -> tuple[list[str], np.ndarray]:
  """Reads CelebA's attribute list; labels = which hair colour is set.

  Reads the official `list_attr_celeba.txt` (a count line, a line of
  attribute names, then "<file> 1 -1 ..." rows) or Kaggle's
  `list_attr_celeba.csv` ("image_id,<names>" header, comma-separated rows).
  Returns the image file names and labels (index into `hair_attributes`) of
  the images with exactly one of `hair_attributes` set; the others are
  skipped, since their class is ambiguous.
  """
  lines = Path(attr_file).read_text().splitlines()
  is_csv = Path(attr_file).suffix == ".csv"
  split = (lambda line: line.split(",")) if is_csv else str.split
  header = 0 if is_csv else 1
  if len(lines) <= header:
    raise ValueError(f"{attr_file} is truncated: no attribute-name line")
  names = split(lines[header])[1 if is_csv else 0:]
  missing = [a for a in hair_attributes if a not in names]
  if missing:
    raise ValueError(f"{attr_file} lacks attributes {missing}")
  columns = [names.index(a) for a in hair_attributes]
  files, labels = [], []
  for row_number, line in enumerate(lines[header + 1:], start=header + 2):
    row = split(line.strip())
    if not row or row == [""]:
      continue
    if len(row) != len(names) + 1:
      raise ValueError(
          f"{attr_file}:{row_number} has {len(row) - 1} values, expected "
          f"{len(names)}")
    hits = [i for i, c in enumerate(columns) if row[c + 1] == "1"]
    if len(hits) == 1:
      files.append(row[0])
      labels.append(hits[0])
  return files, np.array(labels, np.int32)
