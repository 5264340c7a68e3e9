"""Tests for sca_jax.data.own: the user's image folder or .npz."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sca_jax import data
from sca_jax import experiment

from conftest import tiny_config


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
  monkeypatch.setenv("SCA_JAX_CACHE_DIR", str(tmp_path / "cache"))


def _folder(root: Path, classes=("cat", "dog", "owl"), n: int = 4,
            sizes=((20, 12),), mode="RGB") -> Path:
  """<root>/<class>/<i>.png; class c has brightness 60 * (c + 1)."""
  rng = np.random.default_rng(0)
  for c, name in enumerate(classes):
    (root / name).mkdir(parents=True)
    for i in range(n):
      w, h = sizes[i % len(sizes)]
      channels = {"RGB": 3, "L": 1, "RGBA": 4}[mode]
      pixels = np.clip(60 * (c + 1) + rng.normal(0, 10, (h, w, channels)),
                       0, 255).astype(np.uint8)
      Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels,
                      mode).save(root / name / f"{i}.png")
  return root


def test_folder_any_size_resized_and_converted(tmp_path):
  root = _folder(tmp_path / "pets", sizes=((20, 12), (9, 15)))
  with pytest.raises(ValueError, match="differ in size.*image_size"):
    data.load_source("folder", path=root)
  raw = data.load_source("folder", path=root, image_size=8)
  assert raw.images.shape == (12, 8, 8, 3)
  assert raw.class_names == ("cat", "dog", "owl")
  np.testing.assert_array_equal(raw.labels, np.repeat([0, 1, 2], 4))
  means = raw.images.reshape(3, -1).mean(1)
  np.testing.assert_allclose(means, [60, 120, 180], atol=6)
  grey = data.load_source("folder", path=root, image_size=8, channels=1)
  assert grey.images.shape == (12, 8, 8, 1)
  rgba = _folder(tmp_path / "rgba", mode="RGBA")
  assert data.load_source("folder", path=rgba).images.shape[-1] == 4


def test_folder_errors_name_the_problem(tmp_path):
  with pytest.raises(ValueError, match="config.data.path must be set"):
    data.load_source("folder")
  with pytest.raises(FileNotFoundError, match="config.data.path"):
    data.load_source("folder", path=tmp_path / "nowhere")
  (tmp_path / "empty").mkdir()
  with pytest.raises(ValueError, match="empty"):
    data.load_source("folder", path=tmp_path / "empty")
  one = _folder(tmp_path / "one", classes=("cat",))
  with pytest.raises(ValueError, match="one class folder only.*'cat'"):
    data.load_source("folder", path=one)
  hollow = _folder(tmp_path / "hollow")
  (hollow / "emu").mkdir()
  with pytest.raises(ValueError, match=r"\['emu'\].*no images"):
    data.load_source("folder", path=hollow)
  bad = _folder(tmp_path / "bad")
  (bad / "dog" / "broken.jpg").write_bytes(b"not a jpeg at all")
  with pytest.raises(ValueError, match="unreadable.*dog/broken.jpg"):
    data.load_source("folder", path=bad)


def test_npz_dtypes_shapes_and_labels(tmp_path):
  path = tmp_path / "x.npz"
  images = np.random.default_rng(0).random((10, 6, 5, 2))  # Floats, C=2.
  np.savez(path, images=images, labels=np.array([7, 3] * 5))
  raw = data.load_source("npz", path=path)
  assert raw.images.shape == (10, 6, 5, 2) and raw.images.dtype == np.uint8
  np.testing.assert_array_equal(raw.images, np.round(images * 255))
  assert raw.class_names == ("3", "7")
  np.testing.assert_array_equal(raw.labels, [1, 0] * 5)
  assert data.load_source("npz", path=path, image_size=4).images.shape == (
      10, 4, 4, 2)
  with pytest.raises(ValueError, match="config.data.channels=3.*2 channels"):
    data.load_source("npz", path=path, channels=3)


@pytest.mark.parametrize("arrays,message", [
    (dict(images=np.zeros((4, 5, 5), np.uint8)), r"lacks \['labels'\]"),
    (dict(images=np.zeros((4, 5, 5), np.uint8), labels=np.arange(3)),
     "4 images but labels of shape"),
    (dict(images=np.zeros((4, 5), np.uint8), labels=np.arange(4)),
     r"expected \(N, H, W\)"),
    (dict(images=np.zeros((4, 3, 8, 8), np.uint8), labels=np.arange(4)),
     "NCHW"),
    (dict(images=np.full((4, 5, 5), 2.0), labels=np.arange(4)),
     r"float images must lie in \[0, 1\]"),
    (dict(images=np.full((4, 5, 5), 300), labels=np.arange(4)),
     "0..255"),
    (dict(images=np.zeros((4, 5, 5), np.uint8), labels=np.zeros(4)),
     "labels have dtype float64"),
    (dict(images=np.zeros((4, 5, 5), np.uint8), labels=np.zeros(4, int)),
     "1 class"),
    (dict(images=np.zeros((2, 5, 5), object), labels=np.arange(2)),
     "object arrays"),
])
def test_npz_errors(tmp_path, arrays, message):
  path = tmp_path / "bad.npz"
  np.savez(path, **arrays)
  with pytest.raises(ValueError, match=message):
    data.load_source("npz", path=path)


def test_not_an_npz(tmp_path):
  path = tmp_path / "x.npz"
  path.write_text("hello")
  with pytest.raises(ValueError, match="not a readable .npz"):
    data.load_source("npz", path=path)


def _experiment_config(arg: str):
  """The config of `--config=configs/experiment.py:<arg>`, the CLI's."""
  spec = importlib.util.spec_from_file_location(
      "experiment_config", Path(__file__).resolve().parents[1] / "configs" /
      "experiment.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


@pytest.mark.parametrize("kind,defense", [("folder", "sca"),
                                          ("npz", "no_defense")])
def test_tiny_experiment_on_own_data(tmp_path, kind, defense):
  if kind == "folder":
    path = _folder(tmp_path / "own", n=40, sizes=((30, 24), (24, 30)))
  else:
    x = np.random.default_rng(0).integers(0, 256, (120, 20, 20, 3), np.uint8)
    y = np.arange(120) % 3
    x[y == 1] //= 3  # Darker class 1: something to learn.
    path = tmp_path / "own.npz"
    np.savez(path, images=x, labels=y)
  c = _experiment_config(f"defense={defense},dataset={kind}")
  tiny = tiny_config(defense)
  c.defense, c.train = tiny.defense, tiny.train
  c.data.path = str(path)
  c.data.image_size, c.data.channels = 28, 1  # MNIST-shaped targets.
  c.data.max_train, c.data.max_test, c.data.max_aux = 0, 16, 16
  c.attacks = ("end_to_end",)
  c.attack.end_to_end.epochs, c.attack.end_to_end.num_images = 1, 16
  c.eval_classifier.epochs = 1
  # CPU time, not wall time: the machine may be shared.
  start = time.process_time()
  results = experiment.run(c, tmp_path / "w")
  assert results["dataset"] == kind and results["defense"] == defense
  assert results["num_train"] == 84 and results["num_test"] == 16
  assert np.isfinite(results["attacks"]["end_to_end"]["psnr"]["mean"])
  assert time.process_time() - start < 60
