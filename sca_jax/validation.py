"""Config checks: everything a run can know is wrong, before any compute.

`validate(config)` runs before any data is read or any step compiled:
  1. types: every field against the same defense's default config
     (`config_lib.get_config`), e.g. an int field given "3" or 3.5;
  2. ranges and names: seed, data, defense (kernel, strides, LCA settings),
     train (learning rate finite and > 0, with a warning outside
     `SANE_LEARNING_RATE`; num_devices no more than exist), attacks and the
     evaluation classifier (their own checkers);
  3. the model: built abstractly (`jax.eval_shape`, no arrays) on the data
     set's image shape (`data.info.describe`) and run once abstractly, so a
     kernel larger than the image, a model that cannot be built and every
     attack's leak layer (against `representation_names()`) fail here.
`check_data(config, splits)` runs right after loading, before training:
batch size vs training set, at least two classes, the model check again if
the real image shape was not known before, and the overlap of the test and
auxiliary sets (returned, for results.json, and printed).

Every user error is a `ConfigError` (a ValueError) whose message names the
field, the value and what is allowed; `sca_jax.main` prints it as one line
and exits 2.
"""

from __future__ import annotations

import functools
import json
import math
import numbers
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from sca_jax import config_lib
from sca_jax import lca
from sca_jax import train as train_lib
from sca_jax.data import splits as splits_lib
from sca_jax.data.info import describe
from sca_jax.defenses import DEFENSES, with_defaults
from sca_jax.models import ARCHS, MODELS, build_model
from sca_jax.registry import import_plugins

# Outside this range a learning rate is almost surely a typo (a warning).
SANE_LEARNING_RATE = (1e-6, 1.0)
SCHEDULES = ("constant", "cosine")
# Fields whose default is a number but that also accept None ("no cut").
_NULLABLE = {"data.max_train", "data.max_test", "data.max_aux", "defense.model",
             "eval_classifier.max_train"}


class ConfigError(ValueError):
  """A user error in the config or its data: fix the named field."""


def _fail(path: str, value: Any, allowed: str) -> None:
  raise ConfigError(f"config.{path}={value!r}: {allowed}")


def _type_name(t: type) -> str:
  return {bool: "a bool", int: "an int", float: "a number", str: "a string",
          tuple: "a tuple", dict: "a dict"}.get(t, t.__name__)


def _is(value: Any, want: type) -> bool:
  if want is bool:
    return isinstance(value, bool)
  if want is int:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)
  if want is float:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)
  if want in (tuple, list):
    return isinstance(value, (tuple, list))
  if want in (dict, ml_collections.ConfigDict):
    return isinstance(value, (dict, ml_collections.ConfigDict))
  return isinstance(value, want)


def _check_types(cfg: Any, ref: ml_collections.ConfigDict, path: str,
                 warn: Callable[[str], None]) -> None:
  """Each field of `cfg` has the type of the same field in `ref`."""
  if not _is(cfg, dict):
    _fail(path, cfg, "must be a section (ConfigDict)")
  for key in cfg.keys():
    sub, value = f"{path}.{key}".lstrip("."), cfg[key]
    if key not in ref:
      # Settings a model or data source reads with a default (checked there).
      if path in ("defense", "data"):
        warn(f"warning: config.{sub} is not a default field; passed on to "
             f"the {path} unchecked here")
        continue
      _fail(sub, value, f"unknown field; allowed: {sorted(ref.keys())}")
    ref_value = ref[key]
    if isinstance(ref_value, ml_collections.ConfigDict):
      _check_types(value, ref_value, sub, warn)
      continue
    try:
      want = ref.get_ref(key).get_type()
    except ValueError:  # a plain None default: any type
      continue
    if value is None:
      if ref_value is None or sub in _NULLABLE:
        continue
      _fail(sub, value, f"must be {_type_name(want)}, not None")
    if not _is(value, want):
      _fail(sub, value, f"must be {_type_name(want)}")
    if want in (tuple, list) and ref_value:
      elem = type(ref_value[0])
      if not all(_is(v, elem) for v in value):
        _fail(sub, value, f"must hold {_type_name(elem)} values")
    _check_number(sub, value)


def _check_number(path: str, value: Any) -> None:
  """Numbers are finite; attack and evaluation settings are never negative
  (their own checkers add tighter bounds)."""
  values = value if isinstance(value, (tuple, list)) else (value,)
  for v in values:
    if not _is(v, float):
      continue
    if not math.isfinite(v):
      _fail(path, value, "must be finite")
    if path.startswith(("attack.", "eval_classifier.")) and v < 0:
      _fail(path, value, "must be >= 0")


def _positive_ints(path: str, values: Any, allow_empty: bool = False) -> None:
  if (not values and not allow_empty) or any(int(v) < 1 for v in values):
    _fail(path, values, "must be a tuple of positive ints")


def _at_least(path: str, value: Any, low: float) -> None:
  if not (math.isfinite(value) and value >= low):
    _fail(path, value, f"must be a finite number >= {low:g}")


def _check_ranges(config: ml_collections.ConfigDict,
                  warn: Callable[[str], None]) -> None:
  if not 0 <= config.seed < 2**32:
    _fail("seed", config.seed, "must be an int in [0, 2**32)")
  eval_seed = (config.get("eval_classifier", None) or {}).get("seed", 0)
  if eval_seed < 0:
    _fail("eval_classifier.seed", eval_seed, "must be an int >= 0")
  data_dir = config.data.get("data_dir", None)
  if data_dir and not Path(data_dir).expanduser().is_dir():
    _fail("data.data_dir", data_dir, "must be an existing folder (or None: "
          "$SCA_JAX_DATA_DIR, else download)")
  d = config.defense
  if d.get("model", None) is not None:
    MODELS.get(d.model, field="defense.model")
  _positive_ints("defense.features", d.features)
  _positive_ints("defense.strides", d.strides)
  _positive_ints("defense.hidden", d.hidden, allow_empty=True)
  if d.get("arch", "mnist") not in ARCHS:
    _fail("defense.arch", d.arch, f"allowed: {ARCHS}")
  _positive_ints("defense.conv_features", d.get("conv_features", (1,)),
                 allow_empty=True)
  dropout = d.get("dropout", 0.0)
  if not (math.isfinite(dropout) and 0 <= dropout < 1):
    _fail("defense.dropout", dropout, "must be in [0, 1)")
  if len(d.strides) != len(d.features):
    _fail("defense.strides", d.strides, "needs one stride per entry of "
          f"config.defense.features {tuple(d.features)}")
  if d.kernel < 1:
    _fail("defense.kernel", d.kernel, "must be a positive int")
  _at_least("defense.lam", d.lam, 0)
  _at_least("defense.tau", d.tau, 1)
  _at_least("defense.num_iters", d.num_iters, 1)
  _at_least("defense.hebbian_lr", d.get("hebbian_lr", 0.0), 0)
  for field, allowed in (("solver", lca.SOLVERS),
                         ("threshold", lca.THRESHOLDS), ("conv", lca.CONVS)):
    if d.get(field, allowed[0]) not in allowed:
      _fail(f"defense.{field}", d[field], f"allowed: {allowed}")
  if d.get("conv") == "fft" and any(int(s) != 1 for s in d.strides):
    _fail("defense.conv", d.conv, f"'fft' needs stride 1 in every sparse "
          f"layer, but defense.strides={tuple(d.strides)}; 'auto' uses it "
          "where it applies")
  defense = DEFENSES.get(d.name, field="defense.name")
  if defense.check is not None:  # e.g. the LCA settings of sparse defenses
    defense.check(with_defaults(d))
  gap = config.get("solver_gap", None) or {}
  for field in ("reference_iters", "num_images"):
    _at_least(f"solver_gap.{field}", gap.get(field, 1), 1)
  max_gap = gap.get("max_relative_gap", 1.0)
  if not (math.isfinite(max_gap) and max_gap > 0):
    _fail("solver_gap.max_relative_gap", max_gap, "must be a finite number > 0")
  t = config.train
  if t.optimizer not in train_lib.OPTIMIZERS:
    _fail("train.optimizer", t.optimizer, f"allowed: {train_lib.OPTIMIZERS}")
  if t.get("schedule", "constant") not in SCHEDULES:
    _fail("train.schedule", t.schedule, f"allowed: {SCHEDULES}")
  lr = t.learning_rate
  if not (math.isfinite(lr) and lr > 0):
    _fail("train.learning_rate", lr, "must be a finite number > 0")
  low, high = SANE_LEARNING_RATE
  if not low <= lr <= high:
    warn(f"warning: config.train.learning_rate={lr!r} is outside the usual "
         f"range [{low:g}, {high:g}]")
  momentum = t.get("momentum", 0.0)
  if not (math.isfinite(momentum) and 0 <= momentum < 1):
    _fail("train.momentum", momentum, "must be in [0, 1)")
  _at_least("train.weight_decay", t.get("weight_decay", 0.0), 0)
  for field in ("epochs", "batch_size", "eval_batch_size", "checkpoint_every",
                "log_every", "keep"):
    if t[field] < 1:
      _fail(f"train.{field}", t[field], "must be an int >= 1")
  available = len(jax.devices())
  n = t.get("num_devices", None)
  if n is not None and not 1 <= n <= available:
    _fail("train.num_devices", n, f"must be in [1, {available}] (the devices "
          "that exist) or None for all")
  if t.batch_size % (n or available):
    _fail("train.batch_size", t.batch_size, f"must be a multiple of the "
          f"{n or available} devices it is split over")


@functools.lru_cache(maxsize=32)
def _representations(defense_json: str, image_shape: tuple[int, int, int],
                     num_classes: int) -> tuple[str, ...]:
  """Builds and runs the model abstractly; returns its representation names."""
  defense = ml_collections.ConfigDict(json.loads(defense_json))
  names: list[str] = []

  def forward():
    model = build_model(defense, image_shape, num_classes, jax.random.key(0))
    names.extend(model.representation_names())
    return model(jnp.zeros((1, *image_shape), jnp.float32), train=False)[0]

  jax.eval_shape(forward)
  return tuple(names)


def check_model(config: ml_collections.ConfigDict,
                image_shape: tuple[int, int, int], num_classes: int) -> None:
  """The target builds on these images and every attack's leak exists."""
  kernel = config.defense.kernel
  if kernel > min(image_shape[:2]):
    _fail("defense.kernel", kernel, f"must be no larger than the "
          f"{image_shape[0]}x{image_shape[1]} images of "
          f"{config.data.name}")
  defense_json = json.dumps(config.defense.to_dict(), sort_keys=True,
                            default=list)
  try:
    names = _representations(defense_json, tuple(image_shape), num_classes)
  except (ValueError, TypeError) as e:
    raise ConfigError(
        f"config.defense: the {config.defense.name} model cannot be built for "
        f"{image_shape} images ({type(e).__name__}: {e})") from e
  from sca_jax import attacks  # pylint: disable=g-import-not-at-top
  sections = config.get("attack", None) or {}
  # Selected attacks, and the settings of any other an override may select.
  for name in sorted(set(config.get("attacks", None) or ()) | set(sections)):
    leak = attacks.attack_config(name, sections.get(name, None)).get(
        "leak", None)  # attacks without a leak (Plug-&-Play) query logits
    if leak is not None and leak not in names:
      _fail(f"attack.{name}.leak", leak,
            f"not a representation of this model; allowed: {list(names)}")


def validate(config: ml_collections.ConfigDict,
             warn: Callable[[str], None] = print) -> None:
  """Raises ConfigError naming the field for anything a run cannot use.

  Reads no data and compiles nothing; `warn` gets warnings (one line each).
  """
  try:
    _validate(config, warn)
  except ConfigError:
    raise
  except ValueError as e:  # the components' own checkers name their field
    raise ConfigError(str(e)) from e


def _validate(config, warn) -> None:
  # Plug-ins (`config.imports`) register their components before any lookup.
  import_plugins(tuple(config.get("imports", None) or ()))
  for path in ("defense.name", "data.name"):
    section, field = path.split(".")
    value = config.get(section, {}).get(field, None)
    if not isinstance(value, str):
      _fail(path, value, "must be a string naming a registered component")
  DEFENSES.get(config.defense.name, field="defense.name")
  splits_lib.validate(config.data)  # the data source's name and fields
  ref = config_lib.get_config(None, name=config.defense.name,
                              dataset=config.data.name)
  _check_types(config, ref, "", warn)
  _check_ranges(config, warn)
  if config.attacks:
    from sca_jax import attacks  # pylint: disable=g-import-not-at-top
    attacks.validate(config)
  info = describe(config.data)
  if info is not None:
    check_model(config, info.image_shape, info.num_classes)


def check_data(config: ml_collections.ConfigDict, splits,
               log: Callable[[str], None] = print) -> dict[str, Any]:
  """Checks that need the loaded data; returns facts for results.json.

  Raises:
    ConfigError: too few training images for one batch, fewer than two
      classes, or a model that does not fit the real images.
  """
  bs, n_train = config.train.batch_size, len(splits.train_x)
  if bs > n_train:
    _fail("train.batch_size", bs, f"must be <= the {n_train} training images "
          f"of {splits.name} (config.data.max_train, train_fraction)")
  classes = np.unique(splits.train_y)
  if len(classes) < 2:
    _fail("data.name", splits.name, f"its training set holds "
          f"{len(classes)} class(es); classification needs at least 2")
  info = describe(config.data)
  if info is None or tuple(info.image_shape) != tuple(splits.image_shape):
    check_model(config, splits.image_shape, splits.num_classes)
  overlap = int(np.intersect1d(splits.test_index, splits.aux_index).size)
  if overlap:
    log(f"warning: {overlap} images are in both the test set "
        f"({len(splits.test_index)}) and the attacker's auxiliary set "
        f"({len(splits.aux_index)}): {splits.name} is too small for "
        "config.data.max_test + max_aux; recorded in results.json")
  return {"test_aux_overlap": overlap, "num_classes_in_train": len(classes)}
