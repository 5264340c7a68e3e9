"""Data sources by name: every image of a data set, pooled, as uint8 arrays.

`load_source(name, data_dir)` reads `<data_dir>/<name>/` in the format the
data set is published in; with no data dir it downloads the publisher's
files (checksummed, `published.py`) and reads them the same way; CelebA,
which has no direct download, comes from TFDS; `data_dir="tfds"` reads any
of them through TFDS. `name="folder"` / `"npz"` read the user's own data
(`own.py`). Official train and test parts are pooled, train first, because
the project re-splits 70/30 itself.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
import scipy.io
from PIL import Image

from sca_jax.data import own
from sca_jax.data import published
from sca_jax.data import readers
from sca_jax.data import remote
from sca_jax.registry import Registry

DATA_DIR_ENV = "SCA_JAX_DATA_DIR"
TFDS = "tfds"  # config.data.data_dir value: read through TFDS data sources

MNIST_CLASSES = tuple(str(d) for d in range(10))
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog",
                   "frog", "horse", "ship", "truck")
PNEUMONIA_CLASSES = ("normal", "pneumonia")
# CelebA label: which of these hair colours is set (images with none or
# several set are skipped). Images are center-cropped and resized to this.
CELEBA_HAIR = ("Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair")
CELEBA_SIZE = 64
# Splits each data set has in TFDS (data_dir="tfds").
TFDS_SPLITS = {"mnist": ("train", "test"), "fashion_mnist": ("train", "test"),
               "cifar10": ("train", "test"),
               "celeb_a": ("train", "validation", "test")}


@dataclasses.dataclass(frozen=True, eq=False)
class RawData:
  """A whole data set: uint8 NHWC images (C=1 for grey) and int32 labels."""
  images: np.ndarray
  labels: np.ndarray
  num_classes: int
  class_names: tuple[str, ...] | None
  origin: str

  def __post_init__(self):
    if self.images.dtype != np.uint8 or self.images.ndim != 4:
      raise ValueError(f"images must be uint8 NHWC, got {self.images.dtype} "
                       f"{self.images.shape} from {self.origin}")
    if self.labels.dtype != np.int32 or self.labels.shape != (
        len(self.images),):
      raise ValueError(f"labels must be int32 of shape ({len(self.images)},),"
                       f" got {self.labels.dtype} {self.labels.shape}")
    if len(self.labels) and (self.labels.min() < 0 or
                             self.labels.max() >= self.num_classes):
      raise ValueError(f"labels of {self.origin} fall outside "
                       f"[0, {self.num_classes})")
    if self.class_names is not None and len(
        self.class_names) != self.num_classes:
      raise ValueError(f"{len(self.class_names)} class names for "
                       f"{self.num_classes} classes")

  def __len__(self) -> int:
    return len(self.images)


# Published sets: loader(<data_dir>/<name> or None to download); own data
# (own.OWN_SOURCES): loader(path, image_size, channels).
Loader = Callable[..., RawData]
SOURCES: Registry[Loader] = Registry("data source")


def resolve_data_dir(data_dir: str | os.PathLike | None) -> str | None:
  """`data_dir` if given, else `$SCA_JAX_DATA_DIR`, else None (download)."""
  if data_dir:
    return os.fspath(data_dir)
  return os.environ.get(DATA_DIR_ENV) or None


def load_source(name: str, data_dir: str | os.PathLike | None = None,
                path: str | os.PathLike | None = None,
                image_size: int | None = None,
                channels: int | None = None) -> RawData:
  """Loads data source `name`, pooled over its official splits.

  Args:
    name: a registered source (`SOURCES.names()`).
    data_dir: the folder holding `<name>/` (else `$SCA_JAX_DATA_DIR`, else
      download); "tfds" reads TFDS data sources instead.
    path: the folder or .npz of `name="folder"` / `"npz"`.
    image_size: if set, every image is center-cropped to a square and
      resized to image_size x image_size.
    channels: if set, images are converted to 1 (grey) or 3 (RGB) channels.

  Raises:
    ValueError: unknown name (the message lists the allowed ones), or a file
      that is corrupt or not in the expected format.
    FileNotFoundError: a data dir is set but lacks a needed file.
  """
  loader = SOURCES.get(name, field="data.name")
  if name in own.OWN_SOURCES:
    raw = loader(own.require_path(name, path), image_size, channels)
  else:
    root = resolve_data_dir(data_dir)
    if root == TFDS:
      if name not in TFDS_SPLITS:
        raise ValueError(f"config.data.data_dir='tfds' reads "
                         f"{sorted(TFDS_SPLITS)}, not {name!r}")
      raw = _tfds_source(name)
    else:
      raw = loader(Path(root).expanduser() / name if root else None)
  own.check_classes(raw.labels, raw.origin)
  if channels is not None:
    raw = dataclasses.replace(raw, images=readers.convert_channels(
        raw.images, channels, "config.data.channels"))
  if image_size is not None:
    raw = dataclasses.replace(raw, images=readers.resize_images(
        raw.images, image_size))
  return raw


def _tfds_source(name: str) -> RawData:
  if name == "celeb_a":
    # Decoding ~200k full-size JPEGs takes minutes: cache the 64x64 result.
    arrays = remote.cached_arrays(
        "celeb_a-tfds", f"tfds:celeb_a:{os.environ.get('TFDS_DATA_DIR')}",
        lambda: _celeba_arrays(_from_tfds(
            "celeb_a", TFDS_SPLITS[name], CELEBA_HAIR, _celeba_example)))
    return _from_cache(arrays, "tfds:celeb_a (train+validation+test)")
  classes = {"mnist": MNIST_CLASSES, "fashion_mnist": FASHION_MNIST_CLASSES,
             "cifar10": CIFAR10_CLASSES}[name]
  return _from_tfds(name, TFDS_SPLITS[name], classes)


def _require(path: Path, name: str, what: str, can_download: bool = True
             ) -> Path:
  if not path.exists():
    fallback = (" or leave both unset to download it" if can_download
                else " (docs/data.md says where to get it)")
    raise FileNotFoundError(
        f"{path} not found (expected {what}). Point config.data.data_dir or "
        f"the {DATA_DIR_ENV} environment variable at the folder that holds "
        f"{name}/{fallback}.")
  return path


def _raw(images, labels, class_names, origin: str) -> RawData:
  names = None if class_names is None else tuple(str(c) for c in class_names)
  return RawData(np.ascontiguousarray(images, np.uint8),
                 np.asarray(labels).astype(np.int32).reshape(-1),
                 len(names) if names else int(np.max(labels)) + 1, names,
                 origin)


def _from_tfds(name: str, splits: tuple[str, ...], class_names,
               convert: Callable[[dict[str, Any]], Any] | None = None
               ) -> RawData:
  convert = convert or (lambda ex: (np.asarray(ex["image"], np.uint8),
                                    int(ex["label"])))
  parts = remote.tfds_examples(name, splits, convert)
  pairs = [p for part in parts for p in part if p is not None]
  if not pairs:
    raise ValueError(f"tfds {name} {splits} holds no usable examples")
  return _raw(np.stack([p[0] for p in pairs]), [p[1] for p in pairs],
              class_names, f"tfds:{name} ({'+'.join(splits)})")


def _from_cache(arrays: dict[str, np.ndarray], origin: str) -> RawData:
  return _raw(arrays["images"], arrays["labels"], arrays["class_names"],
              origin)


def _idx_file(folder: Path, stem: str) -> Path:
  gz = folder / f"{stem}.gz"
  # The published files are gzipped; accept an unpacked copy too.
  if not gz.exists() and (folder / stem).exists():
    return folder / stem
  return _require(gz, folder.name, "the IDX .gz files as published")


def _idx_source(name: str, folder: Path | None, class_names) -> RawData:
  folder = folder or published.fetch(name)
  images, labels, files = [], [], []
  for split in ("train", "t10k"):
    x_path = _idx_file(folder, f"{split}-images-idx3-ubyte")
    y_path = _idx_file(folder, f"{split}-labels-idx1-ubyte")
    x, y = readers.read_idx(x_path, 3), readers.read_idx(y_path, 1)
    if len(x) != len(y):
      raise ValueError(f"{x_path} has {len(x)} images but {y_path} has "
                       f"{len(y)} labels")
    images.append(x[..., None])
    labels.append(y)
    files += [str(x_path), str(y_path)]
  return _raw(np.concatenate(images), np.concatenate(labels), class_names,
              ", ".join(files))


@SOURCES.register("mnist")
def _mnist(folder: Path | None) -> RawData:
  return _idx_source("mnist", folder, MNIST_CLASSES)


@SOURCES.register("fashion_mnist")
def _fashion_mnist(folder: Path | None) -> RawData:
  return _idx_source("fashion_mnist", folder, FASHION_MNIST_CLASSES)


@SOURCES.register("cifar10")
def _cifar10(folder: Path | None) -> RawData:
  folder = folder or published.fetch("cifar10")
  official = folder / "cifar-10-python.tar.gz"
  if official.exists():
    images, labels = readers.read_cifar10_python_tar(official)
    return _raw(images, labels, CIFAR10_CLASSES, str(official))
  path = _require(folder / "cifar10-jpeg.tar.gz", "cifar10",
                  "the official cifar-10-python.tar.gz, or a tar of "
                  "cifar10/{train,test}/<class>/*.jpg")

  def build():
    images, labels, names = readers.read_image_tar(path, mode="RGB")
    return {"images": images, "labels": labels, "class_names": np.array(names)}

  # Decoding 60k JPEGs takes ~20 s; the arrays load from the cache in <1 s.
  arrays = remote.cached_arrays(
      "cifar10", f"tar:{remote.file_fingerprint(path)}", build)
  return _from_cache(arrays, str(path))


@SOURCES.register("olivetti_faces")
def _olivetti_faces(folder: Path | None) -> RawData:
  folder = folder or published.fetch("olivetti_faces")
  path = _require(folder / "olivettifaces.mat", "olivetti_faces",
                  "the .mat file scikit-learn reads")
  faces = scipy.io.loadmat(path).get("faces")
  if faces is None or faces.dtype != np.uint8 or faces.shape[0] != 64 * 64:
    raise ValueError(f"{path} has no uint8 'faces' array of 4096 x N")
  # Column i, reshaped to 64x64 and transposed, is image i.
  images = faces.T.reshape(-1, 64, 64).transpose(0, 2, 1)[..., None]
  # Ten consecutive images per person: images 10k..10k+9 are person k.
  return _raw(images, np.arange(len(images)) // 10, None, str(path))


@SOURCES.register("pneumoniamnist")
def _pneumoniamnist(folder: Path | None) -> RawData:
  folder = folder or published.fetch("pneumoniamnist")
  path = _require(folder / "pneumoniamnist.npz", "pneumoniamnist",
                  "a MedMNIST .npz with {train,val,test}_{images,labels}")
  images, labels = [], []
  with np.load(path, allow_pickle=False) as npz:
    for split in ("train", "val", "test"):
      for part in ("images", "labels"):
        if f"{split}_{part}" not in npz.files:
          raise ValueError(f"{path} lacks {split}_{part}; has {npz.files}")
      x = npz[f"{split}_images"]
      images.append(x[..., None] if x.ndim == 3 else x)
      labels.append(npz[f"{split}_labels"].reshape(-1))
  return _raw(np.concatenate(images), np.concatenate(labels),
              PNEUMONIA_CLASSES, str(path))


def _image_folder(folder: Path, stem: str, size: int | None,
                  mode: str | None) -> RawData:
  """`<folder>/<class>/<image>` (>= 2 classes), decoded once, then cached."""
  files, labels, names = own.list_folder(folder)

  def build():
    images = readers.read_images(files, folder, size=size, mode=mode)
    return {"images": images, "labels": labels, "class_names": np.array(names)}

  key = f"folder:{size}:{mode}:{remote.files_fingerprint(files, folder)}"
  return _from_cache(remote.cached_arrays(stem, key, build), str(folder))


@SOURCES.register("medical_mnist")
def _medical_mnist(folder: Path | None) -> RawData:
  if folder is None:
    raise FileNotFoundError(
        "medical_mnist has no automatic download: get the Kaggle 'Medical "
        "MNIST' data set, unpack it as <data_dir>/medical_mnist/<class>/"
        f"*.jpeg and set config.data.data_dir or {DATA_DIR_ENV}.")
  _require(folder, "medical_mnist", "a folder <class>/<image> per class",
           can_download=False)
  return _image_folder(folder, "medical_mnist", size=None, mode=None)


def _celeba_example(example: dict[str, Any]) -> tuple[np.ndarray, int] | None:
  hits = [i for i, a in enumerate(CELEBA_HAIR) if example["attributes"][a]]
  if len(hits) != 1:
    return None
  image = readers.center_crop_resize(Image.fromarray(example["image"]),
                                     CELEBA_SIZE)
  return np.asarray(image, np.uint8), hits[0]


@SOURCES.register("celeb_a")
def _celeb_a(folder: Path | None) -> RawData:
  if folder is None:
    # No direct download (the publisher shares it through Google Drive):
    # TFDS prepares it (needs the [tfds-prepare] extra) or reads a prepared
    # copy; the Kaggle files are the offline route.
    return _tfds_source("celeb_a")
  attr = folder / "list_attr_celeba.txt"
  if not attr.exists() and (folder / "list_attr_celeba.csv").exists():
    attr = folder / "list_attr_celeba.csv"  # Kaggle's copy.
  if attr.exists():
    img_dir = folder / "img_align_celeba"
    if (img_dir / "img_align_celeba").is_dir():  # Kaggle's zip nests it.
      img_dir = img_dir / "img_align_celeba"
    names, labels = readers.read_celeba_attributes(attr, CELEBA_HAIR)
    files = [img_dir / n for n in names]
    for f in files:
      _require(f, "celeb_a", f"an image listed in {attr.name}",
               can_download=False)

    def build():
      images = readers.read_images(files, img_dir, CELEBA_SIZE, "RGB")
      return {"images": images, "labels": labels,
              "class_names": np.array(CELEBA_HAIR)}

    key = (f"attr:{remote.file_fingerprint(attr)}:"
           f"{remote.files_fingerprint(files, folder)}")
    return _from_cache(remote.cached_arrays("celeb_a", key, build),
                       f"{attr}, {img_dir}")
  if not folder.is_dir() or not readers.list_image_folder(folder)[2]:
    raise FileNotFoundError(
        f"{attr} not found, and {folder} has no <class>/<image> folders: "
        f"celeb_a reads either the official layout (list_attr_celeba.txt + "
        f"img_align_celeba/) or one folder per class. Point "
        f"config.data.data_dir or {DATA_DIR_ENV} at the folder holding "
        f"celeb_a/, or leave both unset to use TFDS.")
  return _image_folder(folder, "celeb_a", CELEBA_SIZE, "RGB")


def _celeba_arrays(raw: RawData) -> dict[str, np.ndarray]:
  return {"images": raw.images, "labels": raw.labels,
          "class_names": np.array(raw.class_names)}


@SOURCES.register("folder")
def _own_folder(path: Path, image_size: int | None,
                channels: int | None) -> RawData:
  mode = {None: None, 1: "L", 3: "RGB", 4: "RGBA"}.get(channels)
  if channels is not None and mode is None:
    raise ValueError(f"config.data.channels={channels}: an image folder "
                     f"converts to 1 (grey), 3 (RGB) or 4 (RGBA)")
  return _image_folder(path, "folder", image_size, mode)


@SOURCES.register("npz")
def _own_npz(path: Path, image_size: int | None,
             channels: int | None) -> RawData:
  del image_size, channels  # load_source applies them to every source.
  images, labels, names = own.read_npz(path)
  return _raw(images, labels, names, str(path))
