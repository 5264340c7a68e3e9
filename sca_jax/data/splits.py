"""The paper's splits: target train / target test / attacker auxiliary set.

The pooled data is permuted with `np.random.default_rng(seed)`; the first
`train_fraction` trains the target model, the rest is held out. The target's
test set is taken from the start of the held-out part and the attacker's
auxiliary set from its end, so the attacker never sees a training image and
the two only overlap when `max_test + max_aux` exceeds the held-out size (or
either is uncut).
"""

from __future__ import annotations

import dataclasses
import numbers

import numpy as np

from sca_jax.data.sources import SOURCES, load_source


@dataclasses.dataclass(frozen=True, eq=False)
class Splits:
  """Float32 NHWC images in [0, 1] and int32 labels for each role.

  `*_index` are the rows of the pooled data (`load_source`) each image came
  from, so disjointness and provenance can be checked.
  """
  train_x: np.ndarray
  train_y: np.ndarray
  test_x: np.ndarray
  test_y: np.ndarray
  aux_x: np.ndarray
  aux_y: np.ndarray
  num_classes: int
  name: str
  train_index: np.ndarray
  test_index: np.ndarray
  aux_index: np.ndarray
  class_names: tuple[str, ...] | None = None

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return tuple(self.train_x.shape[1:])


def _field(data_cfg, key: str, default=None):
  return data_cfg.get(key, default) if hasattr(data_cfg, "get") else getattr(
      data_cfg, key, default)


def _check_cut(data_cfg, key: str) -> int | None:
  value = _field(data_cfg, key)
  if value is None:
    return None
  if (isinstance(value, bool) or not isinstance(value, numbers.Integral) or
      value < 0):
    raise ValueError(
        f"config.data.{key} must be a non-negative int or None (0 or None = "
        f"no cut), got {value!r}")
  return int(value) or None


def validate(data_cfg) -> tuple[str, float, int | None, int | None,
                                int | None]:
  """Checks the data config; returns (name, fraction, max_train/test/aux)."""
  name = _field(data_cfg, "name")
  SOURCES.get(name, field="data.name")
  fraction = _field(data_cfg, "train_fraction", 0.7)
  if (isinstance(fraction, bool) or not isinstance(fraction, numbers.Real) or
      not 0 < fraction < 1):
    raise ValueError(
        f"config.data.train_fraction must be in (0, 1), got {fraction!r}")
  cuts = tuple(_check_cut(data_cfg, k)
               for k in ("max_train", "max_test", "max_aux"))
  return (name, float(fraction)) + cuts


def make_splits(data_cfg, seed: int) -> Splits:
  """Loads `data_cfg.name` and splits it for one run.

  Args:
    data_cfg: `config.data`, with `name`, `data_dir`, `train_fraction`
      (default 0.7) and `max_train`, `max_test`, `max_aux` (None or 0 keeps
      everything).
    seed: seeds the permutation; the same seed gives the same splits.

  Raises:
    ValueError: a bad config field (named in the message), checked before
      any data is read.
  """
  name, fraction, max_train, max_test, max_aux = validate(data_cfg)
  raw = load_source(name, _field(data_cfg, "data_dir"))
  n = len(raw)
  n_train = int(round(fraction * n))
  if not 0 < n_train < n:
    raise ValueError(f"{name} has {n} images: too few for train_fraction "
                     f"{fraction} to leave both a train and a held-out part")
  perm = np.random.default_rng(seed).permutation(n)
  train_index, held = perm[:n_train][:max_train], perm[n_train:]
  test_index = held[:max_test]
  aux_index = held[max(len(held) - max_aux, 0):] if max_aux else held

  def images(index: np.ndarray) -> np.ndarray:
    # Cut first, then convert: float32 is 4x the memory of uint8.
    return raw.images[index].astype(np.float32) / np.float32(255)

  return Splits(
      train_x=images(train_index), train_y=raw.labels[train_index],
      test_x=images(test_index), test_y=raw.labels[test_index],
      aux_x=images(aux_index), aux_y=raw.labels[aux_index],
      num_classes=raw.num_classes, name=name, train_index=train_index,
      test_index=test_index, aux_index=aux_index,
      class_names=raw.class_names)
