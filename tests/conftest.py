"""Shared test fixtures: tiny configs and the local data directory."""

import os
from pathlib import Path

import ml_collections
import numpy as np
import pytest

from sca_jax import config_lib
from sca_jax import data

_DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def data_dir() -> str:
  path = os.environ.get("SCA_JAX_DATA_DIR") or str(_DEFAULT_DATA)
  if not (Path(path) / "mnist").is_dir():
    pytest.skip(f"no MNIST files under {path} (set SCA_JAX_DATA_DIR)")
  return path


def tiny_config(defense: str = "sca", data_dir: str | None = None
                ) -> ml_collections.ConfigDict:
  """A config that trains in seconds on 2 CPU cores."""
  c = config_lib.get_config(None, name=defense, dataset="mnist")
  c.data.data_dir = data_dir
  c.data.max_train, c.data.max_test, c.data.max_aux = 256, 128, 256
  c.defense.features = (4, 6)
  c.defense.hidden = (32,)
  c.defense.num_iters = 5
  c.train.epochs = 1
  c.train.batch_size = 32
  c.train.eval_batch_size = 128
  c.train.checkpoint_every = 4
  c.train.log_every = 2
  c.attacks = ()  # attack tests opt in (tests/test_experiment.py, test_attacks)
  return c


@pytest.fixture
def tiny(data_dir):
  return lambda defense="sca": tiny_config(defense, data_dir)


@pytest.fixture(scope="session")
def mnist_splits(data_dir):
  """`mnist_splits(max_train, max_test, max_aux)`: seed-0 splits of the local
  MNIST files, built once per size for the whole session."""
  cache = {}

  def make(max_train: int, max_test: int, max_aux: int) -> data.Splits:
    sizes = (max_train, max_test, max_aux)
    if sizes not in cache:
      cache[sizes] = data.make_splits(ml_collections.ConfigDict(dict(
          name="mnist", data_dir=data_dir, train_fraction=0.7,
          max_train=max_train, max_test=max_test, max_aux=max_aux)), seed=0)
    return cache[sizes]
  return make


def toy_labelled_images(n: int, class_probs: tuple[float, ...]
                        ) -> tuple[np.ndarray, np.ndarray]:
  """n binary 28x28x1 images, labels drawn with `class_probs`; the density of
  lit pixels grows with the label (0.1 up to 0.4), so classes differ."""
  rng = np.random.default_rng(0)
  k = len(class_probs)
  y = rng.choice(k, size=n, p=list(class_probs)).astype(np.int32)
  x = (rng.random((n, 28, 28, 1)) < 0.1 + 0.3 * y[:, None, None, None]
       / (k - 1)).astype(np.float32)
  return x, y
