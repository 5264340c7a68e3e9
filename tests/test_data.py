"""Tests for sca_jax.data.sources and readers: the published files, tiny fakes.

Downloads: test_data_download.py; own data: test_data_own.py; splits:
test_data_splits.py.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import struct
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sca_jax import data
from sca_jax.data import readers
from sca_jax.data import remote
from sca_jax.data import sources

from conftest import cifar10_python_tar

ALL_SOURCES = ["celeb_a", "cifar10", "fashion_mnist", "folder",
               "medical_mnist", "mnist", "npz", "olivetti_faces",
               "pneumoniamnist"]
real_data = pytest.mark.real_data


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
  # A fresh cache per test, so a test never answers from another's.
  monkeypatch.setenv(remote.CACHE_ENV, str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def mnist(real_data_dir):
  return data.load_source("mnist", str(real_data_dir))


# --- directory resolution and errors -------------------------------------


def test_resolve_data_dir(monkeypatch):
  monkeypatch.setenv(sources.DATA_DIR_ENV, "/from/env")
  assert data.resolve_data_dir("/given") == "/given"
  assert data.resolve_data_dir(None) == "/from/env"
  assert data.resolve_data_dir("") == "/from/env"
  monkeypatch.delenv(sources.DATA_DIR_ENV)
  assert data.resolve_data_dir(None) is None


def test_registry_has_every_source():
  assert data.SOURCES.names() == ALL_SOURCES


def test_unknown_name_lists_allowed():
  with pytest.raises(ValueError, match="data.name") as e:
    data.load_source("mnsit", "/nowhere")
  for name in ALL_SOURCES:
    assert name in str(e.value)


@pytest.mark.parametrize("name,file", [
    ("mnist", "train-images-idx3-ubyte.gz"),
    ("cifar10", "cifar10-jpeg.tar.gz"),
    ("olivetti_faces", "olivettifaces.mat"),
    ("pneumoniamnist", "pneumoniamnist.npz"),
])
def test_missing_file_names_path_and_settings(tmp_path, name, file):
  with pytest.raises(FileNotFoundError) as e:
    data.load_source(name, str(tmp_path))
  message = str(e.value)
  assert str(tmp_path / name / file) in message
  assert "config.data.data_dir" in message
  assert sources.DATA_DIR_ENV in message


def _write_idx(path: Path, array: np.ndarray, claim_shape=None):
  shape = claim_shape or array.shape
  header = struct.pack(">HBB", 0, 8, len(shape)) + struct.pack(
      f">{len(shape)}I", *shape)
  with gzip.open(path, "wb") as f:
    f.write(header + array.astype(np.uint8).tobytes())


def test_idx_roundtrip_and_corrupt_files(tmp_path):
  x = np.arange(5 * 28 * 28).reshape(5, 28, 28) % 256
  good = tmp_path / "good-idx3-ubyte.gz"
  _write_idx(good, x)
  np.testing.assert_array_equal(readers.read_idx(good, 3), x)
  with pytest.raises(ValueError, match="dimensions"):
    readers.read_idx(good, 1)  # Wrong magic number for a label file.
  short = tmp_path / "short.gz"
  _write_idx(short, x, claim_shape=(10, 28, 28))
  with pytest.raises(ValueError, match="truncated"):
    readers.read_idx(short, 3)
  cut = tmp_path / "cut.gz"
  cut.write_bytes(good.read_bytes()[:-40])  # A download stopped midway.
  with pytest.raises(ValueError, match="corrupt or truncated"):
    readers.read_idx(cut, 3)


def test_corrupt_idx_through_load_source(tmp_path):
  folder = tmp_path / "mnist"
  folder.mkdir()
  _write_idx(folder / "train-images-idx3-ubyte.gz", np.zeros((3, 28, 28)),
             claim_shape=(4, 28, 28))
  _write_idx(folder / "train-labels-idx1-ubyte.gz", np.zeros(3))
  with pytest.raises(ValueError, match="train-images-idx3-ubyte.gz"):
    data.load_source("mnist", str(tmp_path))


# --- real data -------------------------------------------------------------


@real_data
def test_shared_files_match_sha256sums(real_data_dir):
  sums = real_data_dir / "SHA256SUMS"
  assert sums.exists(), f"{sums} lists the shared files' checksums"
  for line in sums.read_text().splitlines():
    digest, name = line.split()
    actual = hashlib.sha256((real_data_dir / name).read_bytes()).hexdigest()
    assert actual == digest, f"{name} does not match {sums}"


@real_data
def test_mnist(mnist):
  assert mnist.images.shape == (70000, 28, 28, 1)
  assert mnist.images.dtype == np.uint8 and mnist.labels.dtype == np.int32
  assert set(np.unique(mnist.labels)) == set(range(10))
  assert mnist.num_classes == 10
  assert mnist.labels[0] == 5  # First train label.
  assert mnist.labels[60000] == 7  # First t10k label: pooled train, then test.
  assert "t10k-images-idx3-ubyte.gz" in mnist.origin


@real_data
def test_fashion_mnist(real_data_dir):
  raw = data.load_source("fashion_mnist", str(real_data_dir))
  assert raw.images.shape == (70000, 28, 28, 1)
  assert raw.num_classes == 10 and len(raw.class_names) == 10
  np.testing.assert_array_equal(np.bincount(raw.labels), [7000] * 10)


@real_data
def test_olivetti_faces(real_data_dir):
  raw = data.load_source("olivetti_faces", str(real_data_dir))
  assert raw.images.shape == (400, 64, 64, 1)
  assert raw.num_classes == 40
  np.testing.assert_array_equal(np.bincount(raw.labels), [10] * 40)
  for k in (0, 17, 39):
    np.testing.assert_array_equal(raw.labels[10 * k:10 * k + 10], k)
  import scipy.io  # pylint: disable=g-import-not-at-top
  faces = scipy.io.loadmat(
      real_data_dir / "olivetti_faces" / "olivettifaces.mat")
  np.testing.assert_array_equal(raw.images[123, :, :, 0],
                                faces["faces"][:, 123].reshape(64, 64).T)


@real_data
def test_pneumoniamnist(real_data_dir):
  raw = data.load_source("pneumoniamnist", str(real_data_dir))
  assert raw.images.shape == (3882 + 524 + 624, 28, 28, 1)
  assert raw.num_classes == 2 and raw.class_names == ("normal", "pneumonia")
  with np.load(real_data_dir / "pneumoniamnist" / "pneumoniamnist.npz") as npz:
    np.testing.assert_array_equal(raw.images[0, ..., 0], npz["train_images"][0])
    np.testing.assert_array_equal(raw.labels[-624:], npz["test_labels"][:, 0])


@real_data
def test_cifar10_full_and_cached(real_data_dir):
  start = time.perf_counter()
  raw = data.load_source("cifar10", str(real_data_dir))
  decode_s = time.perf_counter() - start
  assert raw.images.shape == (60000, 32, 32, 3)
  assert raw.class_names == sources.CIFAR10_CLASSES  # Sorted = official.
  np.testing.assert_array_equal(np.bincount(raw.labels[:50000]), [5000] * 10)
  np.testing.assert_array_equal(np.bincount(raw.labels[50000:]), [1000] * 10)
  start = time.perf_counter()
  again = data.load_source("cifar10", str(real_data_dir))
  assert time.perf_counter() - start < decode_s / 3  # Came from the cache.
  np.testing.assert_array_equal(again.images, raw.images)
  np.testing.assert_array_equal(again.labels, raw.labels)


# --- small fakes ------------------------------------------------------------


def test_cifar10_official_python_tarball(tmp_path):
  (tmp_path / "cifar10").mkdir()
  images = cifar10_python_tar(tmp_path / "cifar10" / "cifar-10-python.tar.gz")
  raw = data.load_source("cifar10", str(tmp_path))
  np.testing.assert_array_equal(raw.images, images)
  assert raw.class_names == sources.CIFAR10_CLASSES and len(raw) == 12
  evil = tmp_path / "evil" / "cifar10"
  evil.mkdir(parents=True)
  with tarfile.open(evil / "cifar-10-python.tar.gz", "w:gz") as tar:
    payload = pickle.dumps(os.system, protocol=2)  # Must never be resolved.
    info = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
    info.size = len(payload)
    tar.addfile(info, io.BytesIO(payload))
  with pytest.raises(ValueError, match="system is not allowed"):
    data.load_source("cifar10", str(tmp_path / "evil"))


def _png(path: Path, value, size=(6, 5), mode="L"):
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.new(mode, size, value).save(path)


def test_image_tar_order_and_cache(tmp_path):
  folder = tmp_path / "cifar10"
  folder.mkdir()
  tar_path = folder / "cifar10-jpeg.tar.gz"

  def write(values):
    with tarfile.open(tar_path, "w:gz") as tar:
      # Stored test first and classes unsorted, as the real archive has it.
      for split, cls, i, value in values:
        buf = io.BytesIO()
        mode = "L" if cls == "bird" else "RGB"  # A grey JPEG must become RGB.
        Image.new(mode, (32, 32), value).save(buf, "PNG")
        info = tarfile.TarInfo(f"cifar10/{split}/{cls}/{i:04d}.jpg")
        info.size = len(buf.getvalue())
        tar.addfile(info, io.BytesIO(buf.getvalue()))

  values = [("test", "cat", 0, (9, 9, 9)), ("train", "cat", 1, (3, 3, 3)),
            ("train", "bird", 0, 1), ("train", "cat", 0, (2, 2, 2))]
  write(values)
  raw = data.load_source("cifar10", str(tmp_path))
  assert raw.class_names == ("bird", "cat")
  np.testing.assert_array_equal(raw.labels, [0, 1, 1, 1])
  np.testing.assert_array_equal(raw.images[:, 0, 0], [[1, 1, 1], [2, 2, 2],
                                                      [3, 3, 3], [9, 9, 9]])
  write(values[:-1])  # New content: the cache must not answer for it.
  assert len(data.load_source("cifar10", str(tmp_path))) == 3


def test_medical_mnist_image_folder(tmp_path):
  root = tmp_path / "medical_mnist"
  for c, cls in enumerate(["HeadCT", "Hand"]):
    for i in range(3):
      _png(root / cls / f"{i:06d}.png", 10 * c + i)
  (root / "Hand" / "notes.txt").write_text("not an image")
  raw = data.load_source("medical_mnist", str(tmp_path))
  assert raw.class_names == ("Hand", "HeadCT")
  assert raw.images.shape == (6, 5, 6, 1)
  np.testing.assert_array_equal(raw.labels, [0, 0, 0, 1, 1, 1])
  np.testing.assert_array_equal(raw.images[:, 0, 0, 0], [10, 11, 12, 0, 1, 2])
  with pytest.raises(FileNotFoundError, match="medical_mnist"):
    data.load_source("medical_mnist", str(tmp_path / "empty"))


def test_celeb_a_class_folders_resized(tmp_path):
  for c, cls in enumerate(["Blond_Hair", "Black_Hair"]):
    for i in range(3):
      _png(tmp_path / "celeb_a" / cls / f"{i}.png", (c, i, 7), (80, 100),
           "RGB")
  raw = data.load_source("celeb_a", str(tmp_path))
  assert raw.images.shape == (6, 64, 64, 3)
  assert raw.class_names == ("Black_Hair", "Blond_Hair")
  np.testing.assert_array_equal(raw.images[4, 10, 10], (0, 1, 7))


@pytest.mark.parametrize("layout", ["official", "kaggle"])
def test_celeb_a_attribute_layout(tmp_path, layout):
  root = tmp_path / "celeb_a"
  attrs = ["Bald", "Black_Hair", "Blond_Hair", "Brown_Hair", "Eyeglasses",
           "Gray_Hair"]
  rows = {"000001.jpg": "-1  1 -1 -1  1 -1",  # Black.
          "000002.jpg": "-1 -1  1  1 -1 -1",  # Blond and brown: skipped.
          "000003.jpg": " 1 -1 -1 -1 -1 -1",  # Bald, no colour: skipped.
          "000004.jpg": "-1 -1 -1 -1 -1  1",  # Gray.
          "000005.jpg": "-1 -1 -1  1 -1 -1"}  # Brown.
  root.mkdir()
  img_dir = root / "img_align_celeba"
  if layout == "official":
    lines = [str(len(rows)), " ".join(attrs)] + [
        f"{k} {v}" for k, v in rows.items()]
    (root / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
  else:  # Kaggle: a CSV, and the zip nests the image folder.
    lines = [",".join(["image_id"] + attrs)] + [
        ",".join([k] + v.split()) for k, v in rows.items()]
    (root / "list_attr_celeba.csv").write_text("\n".join(lines) + "\n")
    img_dir = img_dir / "img_align_celeba"
  for k in rows:
    # 30 wide, 40 high: the central 30x30 square is green, the rest is not.
    image = np.zeros((40, 30, 3), np.uint8)
    image[:5], image[5:35], image[35:] = (255, 0, 0), (0, 200, 0), (0, 0, 255)
    path = img_dir / k
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, "PNG")  # PIL reads by content.
  raw = data.load_source("celeb_a", str(tmp_path))
  np.testing.assert_array_equal(raw.labels, [0, 3, 2])
  assert raw.class_names == sources.CELEBA_HAIR
  assert raw.images.shape == (3, 64, 64, 3)
  np.testing.assert_allclose(raw.images[:, [0, -1]].reshape(-1, 3).mean(0),
                             (0, 200, 0), atol=2)
  (img_dir / "000004.jpg").unlink()
  with pytest.raises(FileNotFoundError, match="000004.jpg"):
    data.load_source("celeb_a", str(tmp_path))


def test_cache_rebuilds_bad_files_and_never_unpickles(tmp_path):
  calls = []

  def build():
    calls.append(1)
    return {"x": np.arange(3)}

  assert remote.cached_arrays("t", "k", build)["x"].tolist() == [0, 1, 2]
  assert remote.cached_arrays("t", "k", build)["x"].tolist() == [0, 1, 2]
  assert len(calls) == 1
  (path,) = (tmp_path / "cache").glob("t-*.npz")
  with path.open("wb") as f:
    np.savez(f, x=np.array([{"evil": 1}], dtype=object))
  assert remote.cached_arrays("t", "k", build)["x"].tolist() == [0, 1, 2]
  path.write_bytes(b"garbage")
  assert remote.cached_arrays("t", "k", build)["x"].tolist() == [0, 1, 2]
  assert len(calls) == 3
  a, b = tmp_path / "a", tmp_path / "b"
  a.write_bytes(b"x" * 100)
  b.write_bytes(b"y" * 100)  # Same size, other content.
  assert remote.file_fingerprint(a) != remote.file_fingerprint(b)


# --- TFDS, with its data source replaced ---------------------------------


class _FakeSource(list):

  def __getitems__(self, keys):
    return [self[k] for k in keys]


def test_tfds_option_pools_train_then_test(monkeypatch):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  calls = []

  def fake_data_source(name, **kwargs):
    calls.append((name, kwargs))
    return [_FakeSource({"image": np.full((28, 28, 1), i, np.uint8),
                         "label": np.int64(i % 10)} for i in range(n))
            for n in (5, 3)]

  monkeypatch.setattr(tfds, "data_source", fake_data_source)
  raw = data.load_source("fashion_mnist", "tfds")
  name, kwargs = calls[0]
  assert name == "fashion_mnist" and kwargs["split"] == ["train", "test"]
  assert kwargs["download"] is True
  assert kwargs["builder_kwargs"] == {"file_format": "array_record"}
  assert raw.images.shape == (8, 28, 28, 1) and raw.num_classes == 10
  np.testing.assert_array_equal(raw.labels, [0, 1, 2, 3, 4, 0, 1, 2])
  with pytest.raises(ValueError, match="data_dir='tfds'.*olivetti_faces"):
    data.load_source("olivetti_faces", "tfds")


def test_tfds_celeb_a_labels(monkeypatch):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  def example(*hair):
    attributes = {a: a in hair for a in sources.CELEBA_HAIR + ("Bald",)}
    return {"image": np.zeros((218, 178, 3), np.uint8),
            "attributes": attributes}

  split = _FakeSource([example("Gray_Hair"), example(), example("Blond_Hair"),
                       example("Black_Hair", "Brown_Hair")])
  monkeypatch.delenv(sources.DATA_DIR_ENV, raising=False)
  monkeypatch.setattr(tfds, "data_source",
                      lambda name, **kw: [split, _FakeSource(), split])
  raw = data.load_source("celeb_a", None)
  assert raw.images.shape == (4, 64, 64, 3)
  np.testing.assert_array_equal(raw.labels, [3, 1, 3, 1])
