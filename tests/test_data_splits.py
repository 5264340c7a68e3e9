"""Tests for sca_jax.data.splits: sizes, determinism, disjointness, info."""

from __future__ import annotations

import ml_collections
import numpy as np
import pytest

from sca_jax import data


@pytest.fixture(scope="module")
def faces_npz(tmp_path_factory):
  """400 images of 40 classes, ten each, as Olivetti has: an .npz."""
  path = tmp_path_factory.mktemp("faces") / "faces.npz"
  rng = np.random.default_rng(0)
  np.savez(path, images=rng.integers(0, 256, (400, 8, 8), dtype=np.uint8),
           labels=np.arange(400) // 10)
  return str(path)


@pytest.fixture
def cfg(faces_npz):
  def make(**kw) -> ml_collections.ConfigDict:
    c = dict(name="npz", path=faces_npz, data_dir=None, train_fraction=0.7,
             max_train=None, max_test=None, max_aux=None)
    c.update(kw)
    return ml_collections.ConfigDict(c)
  return make


@pytest.mark.real_data
def test_mnist_sizes_and_values(real_data_dir):
  s = data.make_splits(ml_collections.ConfigDict(dict(
      name="mnist", data_dir=str(real_data_dir), train_fraction=0.7,
      max_train=None, max_test=None, max_aux=None)), seed=0)
  assert (len(s.train_x), len(s.test_x), len(s.aux_x)) == (49000, 21000, 21000)
  assert s.image_shape == (28, 28, 1) and s.num_classes == 10
  for x, y in ((s.train_x, s.train_y), (s.test_x, s.test_y),
               (s.aux_x, s.aux_y)):
    assert x.dtype == np.float32 and y.dtype == np.int32
    assert x.min() >= 0 and x.max() <= 1
  assert s.train_x.max() == 1.0
  assert s.info["test_aux_overlap"] == 21000  # The authors' protocol.


def test_deterministic_disjoint_and_traceable(cfg, faces_npz):
  raw = data.load_source("npz", path=faces_npz)
  a = data.make_splits(cfg(max_test=60), seed=3)
  b = data.make_splits(cfg(max_test=60), seed=3)
  c = data.make_splits(cfg(max_test=60), seed=4)
  np.testing.assert_array_equal(a.train_index, b.train_index)
  np.testing.assert_array_equal(a.train_x, b.train_x)
  assert not np.array_equal(a.train_index, c.train_index)
  assert (len(a.train_index), len(a.test_index), len(a.aux_index)) == (
      280, 60, 60)  # An uncut aux takes what the test set leaves.
  everything = np.concatenate([a.train_index, a.test_index, a.aux_index])
  assert sorted(everything) == list(range(400))  # Disjoint and complete.
  np.testing.assert_array_equal(a.test_y, raw.labels[a.test_index])
  np.testing.assert_array_equal(a.aux_x[5] * 255, raw.images[a.aux_index[5]])
  assert a.info["test_aux_overlap"] == 0
  assert a.info["num_pooled"] == 400 and a.info["num_classes"] == 40
  assert a.info["sha256"] == c.info["sha256"]  # Same data, other seed.


def test_cuts(cfg):
  s = data.make_splits(cfg(max_train=100, max_test=50, max_aux=30), seed=1)
  assert (len(s.train_x), len(s.test_x), len(s.aux_x)) == (100, 50, 30)
  assert not set(s.test_index) & set(s.aux_index)
  full = data.make_splits(cfg(max_train=0, max_test=50), seed=1)
  np.testing.assert_array_equal(s.train_index, full.train_index[:100])
  np.testing.assert_array_equal(s.test_index, full.test_index)
  np.testing.assert_array_equal(s.aux_index, full.aux_index[-30:])


def test_both_uncut_is_the_authors_overlap_and_is_recorded(cfg):
  s = data.make_splits(cfg(), seed=0)
  np.testing.assert_array_equal(s.test_index, s.aux_index)
  assert s.info["test_aux_overlap"] == 120


@pytest.mark.parametrize("cuts", [dict(max_test=100, max_aux=30),
                                  dict(max_aux=120), dict(max_test=500)])
def test_cuts_that_would_share_images_are_refused(cfg, cuts):
  with pytest.raises(ValueError, match="max_test.*max_aux.*train_fraction"):
    data.make_splits(cfg(**cuts), seed=0)


def test_one_class_in_train_is_refused(tmp_path):
  path = tmp_path / "two.npz"
  np.savez(path, images=np.zeros((100, 4, 4), np.uint8),
           labels=np.r_[np.zeros(99, int), 1])
  c = ml_collections.ConfigDict(dict(name="npz", path=str(path),
                                     train_fraction=0.5, max_train=3,
                                     max_test=10, max_aux=10))
  with pytest.raises(ValueError, match="one class.*max_train"):
    data.make_splits(c, seed=0)


@pytest.mark.parametrize("field,value", [
    ("train_fraction", 1.5), ("train_fraction", 0), ("train_fraction", "0.7"),
    ("max_train", -1), ("max_test", 2.5), ("max_aux", True),
    ("image_size", 0), ("channels", 2), ("path", None)])
def test_bad_config_fails_before_loading(cfg, field, value):
  # With this path loading would raise FileNotFoundError, not ValueError.
  kw = {"path": "/no/such/file.npz", field: value}
  with pytest.raises(ValueError, match=f"config.data.{field}"):
    data.make_splits(cfg(**kw), seed=0)


def test_unknown_name_in_splits(cfg):
  with pytest.raises(ValueError, match="allowed"):
    data.make_splits(cfg(name="svhn", data_dir="/no/such/dir"), seed=0)
