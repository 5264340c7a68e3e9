"""Evaluation classifier: config merging, batching, accuracy and the cache;
the judge never trains on the target's training images."""

import dataclasses

import ml_collections
import numpy as np
import pytest

from sca_jax import evaluation


@pytest.fixture(scope="module")
def mnist(mnist_splits):
  # The judge trains on the first 80% of the test split (2000 images).
  return mnist_splits(500, 2500, 500)


def test_with_defaults_overrides_and_rejects_unknown_fields():
  cfg = evaluation.with_defaults(evaluation.DEFAULTS, {"epochs": 7}, "ev")
  assert cfg.epochs == 7 and cfg.batch_size == evaluation.DEFAULTS["batch_size"]
  with pytest.raises(ValueError, match=r"config\.ev\.epoch\b.*allowed:.*"
                     r"'epochs'"):
    evaluation.with_defaults(evaluation.DEFAULTS, {"epoch": 7}, "ev")
  with pytest.raises(ValueError, match=r"config\.eval_classifier\.epochs"):
    evaluation.check_config(evaluation.with_defaults(
        evaluation.DEFAULTS, {"epochs": 0}, "eval_classifier"))


def test_batched_pads_last_batch_and_compiles_once():
  shapes = []

  def fn(a, b):
    shapes.append(a.shape)
    return a * 2, b.sum(axis=1)

  a = np.arange(10, dtype=np.float32)[:, None]
  b = np.ones((10, 3), np.float32)
  out_a, out_b = evaluation.batched(fn, 4, a, b)
  np.testing.assert_array_equal(out_a, a * 2)
  np.testing.assert_array_equal(out_b, np.full(10, 3.0))
  assert set(shapes) == {(4, 1)}
  with pytest.raises(ValueError, match="equal length"):
    evaluation.batched(fn, 4, a, b[:5])


def test_eval_classifier_accuracy_features_and_cache(mnist, tmp_path,
                                                     monkeypatch):
  monkeypatch.setenv(evaluation.CACHE_ENV, str(tmp_path))
  cfg = {"max_train": 2000}
  clf = evaluation.get_eval_classifier(mnist, cfg)
  assert not clf.cached
  assert clf.name.startswith("eval_cnn:mnist:seed0:")
  # 2000 images x 3 epochs gives ~0.915 here; the same net reaches ~0.977
  # on 10k images (the default cap). Chance is 0.1.
  assert clf.test_accuracy > 0.85, clf.test_accuracy
  feats = clf.features(mnist.test_x[:7])
  assert feats.shape == (7, 128) and np.all(feats >= 0)
  assert clf.logits(mnist.test_x[:7]).shape == (7, 10)
  n = len(mnist.test_x)  # 2500 with the published files
  n_held = round(0.2 * n)
  assert clf.info()["trained_on"] == dict(
      train=f"target test split [0, {min(n - n_held, 2000)})",
      accuracy_on=f"target test split [{n - n_held}, {n})",
      disjoint_from_target_training=True)
  saved = list(tmp_path.glob("eval_classifiers/mnist-*/params.npz"))
  assert len(saved) == 1

  again = evaluation.get_eval_classifier(mnist, cfg)
  assert again.cached and again.name == clf.name
  np.testing.assert_array_equal(again.logits(mnist.test_x[:50]),
                                clf.logits(mnist.test_x[:50]))
  assert again.test_accuracy == clf.test_accuracy


def test_cache_key_depends_on_data_and_config(mnist):
  cfg = evaluation.with_defaults(evaluation.DEFAULTS, None, "eval_classifier")
  key = evaluation._fingerprint(mnist, cfg, 100)
  assert key == evaluation._fingerprint(mnist, cfg, 100)
  assert key != evaluation._fingerprint(mnist, cfg, 99)
  other = evaluation.with_defaults(evaluation.DEFAULTS, {"seed": 1},
                                   "eval_classifier")
  assert key != evaluation._fingerprint(mnist, other, 100)
  # The judge's weights depend on the test split, never on the target's
  # training images (which are what gets reconstructed).
  flipped = lambda a: a[::-1].copy()
  moved_train = dataclasses.replace(mnist, train_x=flipped(mnist.train_x),
                                    train_y=flipped(mnist.train_y))
  assert key == evaluation._fingerprint(moved_train, cfg, 100)
  moved_test = dataclasses.replace(mnist, test_x=flipped(mnist.test_x))
  assert key != evaluation._fingerprint(moved_test, cfg, 100)


def test_too_small_test_split_or_bad_holdout_is_refused(mnist):
  with pytest.raises(ValueError, match=r"holdout_fraction"):
    evaluation.get_eval_classifier(mnist, {"holdout_fraction": 1.0})
  tiny = dataclasses.replace(mnist, test_x=mnist.test_x[:1],
                             test_y=mnist.test_y[:1])
  with pytest.raises(ValueError, match=r"max_test"):
    evaluation.get_eval_classifier(tiny, {"cache": False})
