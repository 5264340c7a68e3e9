"""The paper's splits: target train / target test / attacker auxiliary set.

The pooled data is permuted with `np.random.default_rng(seed)`; the first
`train_fraction` trains the target model, the rest is held out. The target's
test set is taken from the start of the held-out part and the attacker's
auxiliary set from its end, so the attacker never sees a training image and
test and aux are disjoint by construction: an uncut one takes what the other
leaves, and cuts that do not fit in the held-out part are an error naming
the fields. Only with both uncut (the authors' protocol: their attacker
trains on the held-out test split) do test and aux coincide; `Splits.info`
then records the overlap, for results.json.
"""

from __future__ import annotations

import dataclasses
import hashlib
import numbers

import numpy as np

from sca_jax.data.own import OWN_SOURCES
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
  # Provenance for results.json: sizes, test/aux overlap, origin, checksum.
  info: dict = dataclasses.field(default_factory=dict)

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


def _check_positive(data_cfg, key: str, allowed: str) -> int | None:
  value = _field(data_cfg, key)
  if value is None:
    return None
  if (isinstance(value, bool) or not isinstance(value, numbers.Integral) or
      value < 1):
    raise ValueError(f"config.data.{key} must be {allowed} or None (keep as "
                     f"loaded), got {value!r}")
  return int(value)


def validate(data_cfg) -> tuple[str, float, int | None, int | None,
                                int | None]:
  """Checks the data config; returns (name, fraction, max_train/test/aux)."""
  name = _field(data_cfg, "name")
  SOURCES.get(name, field="data.name")
  if name in OWN_SOURCES and not _field(data_cfg, "path"):
    raise ValueError(f"config.data.path must be set for config.data.name="
                     f"{name!r}")
  if name not in OWN_SOURCES and _field(data_cfg, "path") is not None:
    raise ValueError(f"config.data.path={_field(data_cfg, 'path')!r} is read "
                     f"only for config.data.name in {OWN_SOURCES}; {name!r} "
                     f"is found through config.data.data_dir")
  _check_positive(data_cfg, "image_size", "a positive int")
  channels = _check_positive(data_cfg, "channels", "1 or 3")
  if channels not in (None, 1, 3, 4):
    raise ValueError(f"config.data.channels must be 1 (grey), 3 (RGB), 4 "
                     f"(RGBA, folders only) or None, got {channels!r}")
  fraction = _field(data_cfg, "train_fraction", 0.7)
  if (isinstance(fraction, bool) or not isinstance(fraction, numbers.Real) or
      not 0 < fraction < 1):
    raise ValueError(
        f"config.data.train_fraction must be in (0, 1), got {fraction!r}")
  cuts = tuple(_check_cut(data_cfg, k)
               for k in ("max_train", "max_test", "max_aux"))
  return (name, float(fraction)) + cuts


def _test_aux(held: np.ndarray, max_test: int | None, max_aux: int | None,
              name: str, n: int, fraction: float
              ) -> tuple[np.ndarray, np.ndarray]:
  """Test from the start of `held`, aux from its end; disjoint unless both
  are uncut."""
  if max_test is None and max_aux is None:
    return held, held
  n_test = max_test if max_test is not None else len(held) - max_aux
  n_aux = max_aux if max_aux is not None else len(held) - max_test
  if n_test < 1 or n_aux < 1 or n_test + n_aux > len(held):
    raise ValueError(
        f"{name} has {n} images, {len(held)} held out by "
        f"config.data.train_fraction={fraction}: too few for "
        f"config.data.max_test={max_test} and config.data.max_aux={max_aux} "
        f"without sharing images; lower max_test/max_aux or train_fraction")
  return held[:n_test], held[len(held) - n_aux:]


def _checksum(raw) -> str:
  h = hashlib.sha256()
  h.update(str(raw.images.shape).encode())
  h.update(np.ascontiguousarray(raw.images).tobytes())
  h.update(np.ascontiguousarray(raw.labels).tobytes())
  return h.hexdigest()


def make_splits(data_cfg, seed: int) -> Splits:
  """Loads `data_cfg.name` and splits it for one run.

  Args:
    data_cfg: `config.data`, with `name`, `data_dir`, `train_fraction`
      (default 0.7), `max_train`, `max_test`, `max_aux` (None or 0 keeps
      everything) and optionally `path`, `image_size`, `channels`
      (`load_source`).
    seed: seeds the permutation; the same seed gives the same splits.

  Raises:
    ValueError: a bad config field (named in the message), checked before
      any data is read; too few images or classes for the splits.
  """
  name, fraction, max_train, max_test, max_aux = validate(data_cfg)
  raw = load_source(name, _field(data_cfg, "data_dir"),
                    path=_field(data_cfg, "path"),
                    image_size=_field(data_cfg, "image_size"),
                    channels=_field(data_cfg, "channels"))
  n = len(raw)
  n_train = int(round(fraction * n))
  if not 0 < n_train < n:
    raise ValueError(f"{name} has {n} images: too few for "
                     f"config.data.train_fraction={fraction} to leave both a "
                     f"train and a held-out part")
  perm = np.random.default_rng(seed).permutation(n)
  train_index, held = perm[:n_train][:max_train], perm[n_train:]
  test_index, aux_index = _test_aux(held, max_test, max_aux, name, n, fraction)
  if len(np.unique(raw.labels[train_index])) < 2:
    raise ValueError(f"the train split of {name} ({len(train_index)} images)"
                     f" holds one class; raise config.data.max_train")

  def images(index: np.ndarray) -> np.ndarray:
    # Cut first, then convert: float32 is 4x the memory of uint8.
    return raw.images[index].astype(np.float32) / np.float32(255)

  info = dict(
      source=name, origin=raw.origin, num_pooled=n,
      num_train=len(train_index), num_test=len(test_index),
      num_aux=len(aux_index), image_shape=list(raw.images.shape[1:]),
      num_classes=raw.num_classes, seed=int(seed),
      test_aux_overlap=len(np.intersect1d(test_index, aux_index)),
      train_heldout_overlap=0,  # disjoint by construction (perm slices)
      sha256=_checksum(raw))
  return Splits(
      train_x=images(train_index), train_y=raw.labels[train_index],
      test_x=images(test_index), test_y=raw.labels[test_index],
      aux_x=images(aux_index), aux_y=raw.labels[aux_index],
      num_classes=raw.num_classes, name=name, train_index=train_index,
      test_index=test_index, aux_index=aux_index,
      class_names=raw.class_names, info=info)
