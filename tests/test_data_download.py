"""Tests for sca_jax.data.published and remote.download, without internet.

Small files in the published formats are served from a local HTTP server on
127.0.0.1 (`$SCA_JAX_DOWNLOAD_URL` points the downloads at it), so the whole
download, verify and read path runs as it does against the publishers.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.server
import io
import threading
from pathlib import Path

import numpy as np
import pytest

from sca_jax import data
from sca_jax.data import published
from sca_jax.data import remote
from sca_jax.data import sources

from conftest import cifar10_python_tar, digit_images, write_idx


class _Handler(http.server.SimpleHTTPRequestHandler):
  """Serves the folder; `cut_at` bytes of a file, then drops the link."""
  cut_at: int | None = None

  def log_message(self, *args):  # Keep the test output clean.
    pass

  def copyfile(self, source, outputfile):
    if self.cut_at is None:
      return super().copyfile(source, outputfile)
    outputfile.write(source.read(self.cut_at))  # Content-Length says more.
    self.close_connection = True


@pytest.fixture
def server(tmp_path, monkeypatch):
  """(root folder served, handler class) with downloads pointed at it."""
  root = tmp_path / "mirror"
  root.mkdir()
  handler = type("Handler", (_Handler,), {})
  httpd = http.server.ThreadingHTTPServer(
      ("127.0.0.1", 0), functools.partial(handler, directory=str(root)))
  thread = threading.Thread(target=httpd.serve_forever, daemon=True)
  thread.start()
  monkeypatch.setenv(remote.DOWNLOAD_URL_ENV,
                     f"http://127.0.0.1:{httpd.server_address[1]}")
  monkeypatch.setenv(remote.CACHE_ENV, str(tmp_path / "cache"))
  monkeypatch.delenv(sources.DATA_DIR_ENV, raising=False)
  yield root, handler
  httpd.shutdown()
  httpd.server_close()


def _publish(monkeypatch, name: str, folder: Path) -> None:
  """Makes the served files of `name` its published ones (their MD5s)."""
  pub = published.PUBLISHED[name]
  files = tuple(dataclasses.replace(
      f, md5=hashlib.md5((folder / f.name).read_bytes()).hexdigest(),
      sha256=None) for f in pub.files)
  monkeypatch.setitem(published.PUBLISHED, name,
                      dataclasses.replace(pub, files=files))


def _mnist_files(folder: Path, n_train: int = 100, n_test: int = 20):
  folder.mkdir(parents=True)
  arrays = []
  for split, n, seed in (("train", n_train, 0), ("t10k", n_test, 1)):
    x, y = digit_images(n, seed)
    write_idx(folder / f"{split}-images-idx3-ubyte.gz", x)
    write_idx(folder / f"{split}-labels-idx1-ubyte.gz", y)
    arrays.append((x, y))
  return arrays


def test_publisher_urls_and_override(monkeypatch):
  monkeypatch.delenv(remote.DOWNLOAD_URL_ENV, raising=False)
  (train_images,) = [f for f in published.PUBLISHED["mnist"].files
                     if f.name.startswith("train-images")]
  assert published.urls("mnist", train_images)[0] == (
      "https://ossci-datasets.s3.amazonaws.com/mnist/"
      "train-images-idx3-ubyte.gz")
  (npz,) = published.PUBLISHED["pneumoniamnist"].files
  assert published.urls("pneumoniamnist", npz) == [
      "https://zenodo.org/records/10519652/files/pneumoniamnist.npz"
      "?download=1"]
  monkeypatch.setenv(remote.DOWNLOAD_URL_ENV, "http://mirror.local/data/")
  assert published.urls("pneumoniamnist", npz) == [
      "http://mirror.local/data/pneumoniamnist/pneumoniamnist.npz"]
  for name, pub in published.PUBLISHED.items():
    assert name in data.SOURCES and pub.licence
    for f in pub.files:  # Hex digests of the right length, nothing else.
      digest = f.md5 or f.sha256
      assert len(digest) == (32 if f.md5 else 64)
      int(digest, 16)


def test_mnist_downloads_verifies_and_reads(server, monkeypatch, tmp_path,
                                            capfd):
  root, _ = server
  (x_train, y_train), (x_test, y_test) = _mnist_files(root / "mnist")
  _publish(monkeypatch, "mnist", root / "mnist")
  raw = data.load_source("mnist", None)
  np.testing.assert_array_equal(raw.images[..., 0],
                                np.concatenate([x_train, x_test]))
  np.testing.assert_array_equal(raw.labels, np.r_[y_train, y_test])
  assert "downloading http://127.0.0.1" in capfd.readouterr().err
  cached = tmp_path / "cache" / "downloads" / "mnist"
  assert sorted(p.name for p in cached.iterdir()) == sorted(
      p.name for p in (root / "mnist").iterdir())  # No partial files left.
  for p in (root / "mnist").iterdir():
    p.unlink()  # The mirror is gone: a second load reads the cache only.
  assert len(data.load_source("mnist", None)) == 120


def test_checksum_mismatch_is_an_error_and_keeps_nothing(server, monkeypatch,
                                                         tmp_path):
  root, _ = server
  _mnist_files(root / "mnist")
  _publish(monkeypatch, "mnist", root / "mnist")
  write_idx(root / "mnist" / "train-labels-idx1-ubyte.gz",
            np.zeros(100, np.uint8))  # Not the published file any more.
  with pytest.raises(ValueError, match="train-labels.*expected"):
    data.load_source("mnist", None)
  cached = tmp_path / "cache" / "downloads" / "mnist"
  assert not (cached / "train-labels-idx1-ubyte.gz").exists()
  assert not list(cached.glob("*.part-*"))


def test_interrupted_download_leaves_no_file(server, monkeypatch, tmp_path):
  root, handler = server
  (root / "pneumoniamnist").mkdir()
  buf = io.BytesIO()
  sizes = {"train": 30, "val": 5, "test": 10}
  np.savez(buf, **{f"{s}_images": np.full((n, 28, 28), i, np.uint8)
                   for i, (s, n) in enumerate(sizes.items())},
           **{f"{s}_labels": (np.arange(n) % 2)[:, None]
              for s, n in sizes.items()})
  (root / "pneumoniamnist" / "pneumoniamnist.npz").write_bytes(buf.getvalue())
  _publish(monkeypatch, "pneumoniamnist", root / "pneumoniamnist")
  handler.cut_at = 1000
  with pytest.raises(ConnectionError, match="SCA_JAX_DATA_DIR"):
    data.load_source("pneumoniamnist", None)
  assert not list((tmp_path / "cache").rglob("pneumoniamnist.npz*"))
  handler.cut_at = None  # The link is back: the download completes.
  raw = data.load_source("pneumoniamnist", None)
  assert raw.images.shape == (45, 28, 28, 1)
  assert raw.class_names == ("normal", "pneumonia")


def test_cifar10_official_tarball_download(server, monkeypatch):
  root, _ = server
  (root / "cifar10").mkdir()
  images = cifar10_python_tar(root / "cifar10" / "cifar-10-python.tar.gz")
  _publish(monkeypatch, "cifar10", root / "cifar10")
  raw = data.load_source("cifar10", None, image_size=16, channels=1)
  assert raw.images.shape == (12, 16, 16, 1)
  full = data.load_source("cifar10", None)
  np.testing.assert_array_equal(full.images, images)


def test_offline_names_where_to_put_files(monkeypatch):
  monkeypatch.delenv(sources.DATA_DIR_ENV, raising=False)
  # conftest points downloads at a closed local port.
  with pytest.raises(ConnectionError, match="olivettifaces.mat.*data_dir"):
    data.load_source("olivetti_faces", None)
