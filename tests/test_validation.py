"""Config checks before compute: a fuzz over every field, data-dependent checks."""

import copy
import math
from pathlib import Path

import ml_collections
import numpy as np
import pytest

from sca_jax import config_lib, experiment, validation
from sca_jax.data import Splits
from sca_jax.data.info import describe
from conftest import tiny_config


def _leaves(c: ml_collections.ConfigDict, prefix: str = "",
            untyped: bool = False):
  """(path, type, value) of every typed leaf; with `untyped`, the paths of
  the others instead (a plain None default takes any type)."""
  for key in c.keys():
    path = f"{prefix}{key}"
    if isinstance(c[key], ml_collections.ConfigDict):
      yield from _leaves(c[key], path + ".", untyped)
      continue
    try:
      kind = c.get_ref(key).get_type()
    except ValueError:
      if untyped:
        yield path
      continue
    if not untyped:
      yield path, kind, c[key]


def _wrong_type(kind, value):
  return {bool: "yes", int: "3", float: "0.5", str: 3, tuple: "x",
          dict: 3}[kind]


def _out_of_range(path, kind, value):
  if kind is bool:
    return []  # both values are allowed
  if kind is int:
    return [-1]
  if kind is float:
    return [-1.0, math.nan]
  if kind is str:
    return ["nope"]
  if kind is dict:
    return [{"nope": 1}]
  if kind is tuple:  # same length, first entry negative
    if path == "imports":  # plug-in modules: one that does not exist
      return [("no_such_plugin_module",)]
    if not value:  # an empty default (e.g. defense.layer_num_iters)
      return [(0,)]
    return [("nope",)] if path == "attacks" else [
        (type(value[0])(-1),) + tuple(value[1:])]
  raise AssertionError(f"no out-of-range value for {path} ({kind})")


def _cases():
  default = config_lib.get_config(None, name="sca", dataset="mnist")
  cases = []
  for path, kind, value in _leaves(default):
    cases.append((path, _wrong_type(kind, value)))
    cases += [(path, v) for v in _out_of_range(path, kind, value)]
  # Specific defects: kernel larger than the image, a non-finite learning
  # rate, more devices than exist, a seed numpy and jax cannot take.
  cases += [("defense.kernel", 64), ("defense.kernel", 0),
            ("train.learning_rate", math.inf), ("train.learning_rate", 0.0),
            ("train.num_devices", 10_000), ("seed", 2**40),
            ("attack.split.leak", "layer9_lca"),
            ("defense.conv", "fft")]  # the default strides are 2
  return cases


def _with(config, path, value):
  d = config.to_dict()
  *sections, field = path.split(".")
  node = d
  for s in sections:
    node = node[s]
  node[field] = value
  return ml_collections.ConfigDict(d)


@pytest.fixture
def no_data(monkeypatch):
  def refuse(*args, **kwargs):
    raise AssertionError("data was loaded")
  monkeypatch.setattr(experiment, "make_splits", refuse)


@pytest.mark.parametrize("path,value", _cases(), ids=repr)
def test_every_field_bad_type_or_range_fails_before_compute(
    path, value, tmp_path, no_data):
  config = _with(config_lib.get_config(None, name="sca", dataset="mnist"),
                 path, value)
  with pytest.raises(validation.ConfigError) as e:
    experiment.run(config, tmp_path / "w")
  assert path in str(e.value)
  assert "\n" not in str(e.value)
  assert not (tmp_path / "w").exists()


# Fields whose default is a plain None take any type, so the fuzz above
# cannot derive wrong values for them; each has its own test below.
_UNTYPED = {"attack.plug_and_play.center_crop", "attack.plug_and_play.classes",
            "attack.plug_and_play.generator_path"}


def test_fuzz_covers_every_non_bool_field():
  default = config_lib.get_config(None, name="sca", dataset="mnist")
  covered = {p for p, _ in _cases()}
  for path, kind, _ in _leaves(default):
    assert path in covered and (kind is bool or sum(
        p == path for p, _ in _cases()) >= 2)
  assert set(_leaves(default, untyped=True)) == _UNTYPED


@pytest.mark.parametrize("field,value", [
    ("center_crop", 0), ("center_crop", 2.5), ("center_crop", "28"),
    ("classes", ()), ("classes", (1, -2)), ("classes", "0,1"),
    ("classes", (0.5,)), ("generator_path", 3),
    ("generator_path", "/no/such/generator")])
def test_untyped_plug_and_play_fields_fail_before_compute(field, value):
  c = config_lib.get_config(None, name="sca", dataset="mnist")
  c.attacks = ("plug_and_play",)
  c.attack.plug_and_play[field] = value
  with pytest.raises((ValueError, FileNotFoundError),
                     match=f"attack.plug_and_play.{field}"):
    validation.validate(c)


def test_default_and_tiny_configs_pass_and_odd_learning_rate_warns():
  validation.validate(config_lib.get_config(None, name="sca", dataset="mnist"))
  c = tiny_config("sca")
  c.train.learning_rate = 5.0
  warnings = []
  validation.validate(c, warn=warnings.append)
  assert len(warnings) == 1 and "learning_rate" in warnings[0]


def test_unknown_field_is_refused_and_an_unknown_defense_field_warned():
  c = tiny_config("sca").to_dict()
  c["train"]["learnng_rate"] = 0.1
  with pytest.raises(validation.ConfigError, match="train.learnng_rate"):
    validation.validate(ml_collections.ConfigDict(c))
  del c["train"]["learnng_rate"]
  c["defense"]["drop_rate"] = 0.1
  warnings = []
  validation.validate(ml_collections.ConfigDict(c), warn=warnings.append)
  assert "defense.drop_rate" in warnings[0]


def test_describe_follows_image_size_and_channels():
  cfg = ml_collections.ConfigDict({"name": "mnist", "image_size": 32,
                                   "channels": 3})
  assert describe(cfg) == ((32, 32, 3), 10)
  assert describe(ml_collections.ConfigDict({"name": "folder"})) is None


def _splits(train_y, test_index, aux_index, image_shape=(28, 28, 1)):
  n = len(train_y)
  x = np.zeros((n, *image_shape), np.float32)
  y = np.asarray(train_y, np.int32)
  return Splits(x, y, x[:2], y[:2], x[:2], y[:2], 10, "mnist",
                np.arange(n), np.asarray(test_index), np.asarray(aux_index))


def test_data_checks_after_loading():
  c = tiny_config("sca")
  c.train.batch_size = 32
  ok = _splits(np.arange(64) % 10, [1, 2, 3], [4, 5])
  assert validation.check_data(c, ok, log=print)["test_aux_overlap"] == 0
  with pytest.raises(validation.ConfigError, match="train.batch_size"):
    validation.check_data(c, _splits(np.arange(16) % 10, [1], [2]))
  with pytest.raises(validation.ConfigError, match="at least 2"):
    validation.check_data(c, _splits(np.zeros(64), [1], [2]))
  lines = []
  shared = validation.check_data(
      c, _splits(np.arange(64) % 10, [1, 2, 3], [2, 3, 4]), log=lines.append)
  assert shared["test_aux_overlap"] == 2
  assert len(lines) == 1 and "2 images are in both" in lines[0]
  # An image shape only known after loading: the model is checked then.
  c.defense.kernel = 9
  with pytest.raises(validation.ConfigError, match="defense.kernel"):
    validation.check_data(c, _splits(np.arange(64) % 10, [1], [2],
                                     image_shape=(8, 8, 1)))


@pytest.mark.parametrize("name", ["mnist", "olivetti_faces", "pneumoniamnist"])
def test_describe_matches_the_loaded_data(name, data_dir):
  from sca_jax.data import load_source  # pylint: disable=g-import-not-at-top
  if not (Path(data_dir) / name).is_dir():
    pytest.skip(f"no {name} files under {data_dir}")
  raw = load_source(name, data_dir)
  cfg = ml_collections.ConfigDict({"name": name})
  assert describe(cfg).image_shape == raw.images.shape[1:]
  assert describe(cfg).num_classes == raw.num_classes


def test_olivetti_cuts_larger_than_the_held_out_part(data_dir):
  if not (Path(data_dir) / "olivetti_faces").is_dir():
    pytest.skip(f"no olivetti_faces files under {data_dir}")
  c = tiny_config("sca", data_dir)
  c.data.name = "olivetti_faces"
  c.data.max_test, c.data.max_aux = 100, 100  # 120 images are held out
  with pytest.raises(ValueError, match=r"config.data.max_test=100 and "
                     r"config.data.max_aux=100 without sharing images"):
    experiment.make_splits(c.data, c.seed)


@pytest.mark.parametrize("cuts,shared", [((60, 60), False),
                                         ((None, None), True)])
def test_olivetti_overlap_is_counted_and_logged(data_dir, cuts, shared):
  if not (Path(data_dir) / "olivetti_faces").is_dir():
    pytest.skip(f"no olivetti_faces files under {data_dir}")
  c = tiny_config("sca", data_dir)
  c.data.name = "olivetti_faces"
  c.data.max_test, c.data.max_aux = cuts
  splits = experiment.make_splits(c.data, c.seed)
  lines = []
  checks = validation.check_data(c, splits, log=lines.append)
  # Uncut, test and aux are the same 120 held-out images; cut, disjoint.
  assert checks["test_aux_overlap"] == (120 if shared else 0)
  assert len(lines) == (1 if shared else 0)


def test_config_is_not_mutated_by_validation():
  c = tiny_config("sca")
  before = copy.deepcopy(c.to_dict())
  validation.validate(c)
  assert c.to_dict() == before
