"""config_lib: defense settings and adaptive attacks written into configs."""

import jax
import pytest

from sca_jax import attacks
from sca_jax import config_lib
from sca_jax.attacks import applicability
from sca_jax.defenses import DEFENSES
from sca_jax.models import build_model


@pytest.mark.parametrize("name", DEFENSES.names())
def test_config_lists_standard_then_the_defenses_adaptive_attacks(name):
  defense = DEFENSES.get(name)
  for arg in (None, "paper"):
    c = config_lib.get_config(arg, name=name, dataset="mnist")
    assert c.attacks[:3] == ("end_to_end", "split", "first_layer")
    assert c.attacks[3:] == defense.adaptive_attacks
    assert c.defense.model == defense.model
    for field, value in (defense.defaults(arg == "paper")
                         if defense.defaults else {}).items():
      assert c.defense[field] == value
    attacks.validate(c)  # every listed attack exists, every setting is valid


@pytest.mark.parametrize("name", DEFENSES.names())
def test_listed_adaptive_attacks_cover_what_the_model_exposes(name):
  """Whatever the built target leaks (sparse codes, fresh inference noise),
  the config's attack list has the adaptive attack that exploits it."""
  c = config_lib.get_config(None, name=name, dataset="mnist")
  c.defense.features, c.defense.hidden, c.defense.num_iters = (4, 6), (16,), 3
  model = build_model(c.defense, (28, 28, 1), 10, jax.random.key(0))
  exposed = applicability.applicable_adaptive_attacks(model, (28, 28, 1))
  listed = set(c.attacks)
  averaged = {"split_averaged", "first_layer_averaged", "end_to_end_averaged"}
  assert "feature_inversion" in listed
  assert ("code_decoding" in exposed) == ("code_decoding" in listed)
  if "queries" in exposed:
    assert averaged <= listed
  else:  # averaging a deterministic leak would only cost time
    assert not averaged & listed


def test_averaged_variants_average_sixteen_queries_on_their_leaks():
  for name, leak in (("split_averaged", "first_linear"),
                     ("first_layer_averaged", "first"),
                     ("end_to_end_averaged", "last_hidden")):
    cfg = attacks.attack_config(name)
    assert (cfg.leak, cfg.queries) == (leak, 16)
  assert attacks.attack_config("feature_inversion_end_to_end").leak == (
      "last_hidden")


def test_unknown_defense_or_argument_is_refused_by_name():
  with pytest.raises(ValueError, match="defense.name"):
    config_lib.get_config(None, name="nope", dataset="mnist")
  with pytest.raises(ValueError, match="'paper'"):
    config_lib.get_config("huge", name="sca", dataset="mnist")


def test_config_arguments_pick_defense_dataset_and_protocol():
  c = config_lib.make_config(**config_lib.parse_args(
      "defense=mid,dataset=fashion_mnist,protocol=paper"))
  assert (c.defense.name, c.data.name, c.train.epochs) == (
      "mid", "fashion_mnist", 25)
  assert config_lib.parse_args("") == {}
  assert config_lib.parse_args("imports=a.b+c")["imports"] == ("a.b", "c")


@pytest.mark.parametrize("arg,match", [
    ("defence=sca", "unknown config argument 'defence'"),
    ("defense", "not key=value"),
    ("defense=sca,defense=mid", "given twice"),
])
def test_bad_config_arguments_fail_clearly(arg, match):
  with pytest.raises(ValueError, match=match):
    config_lib.parse_args(arg)


@pytest.mark.parametrize("kw,match", [
    (dict(defense="nope"), "defense.name"),
    (dict(dataset="imagenet"), "data.name"),
    (dict(protocol="no_such_protocol"), "protocol"),
    (dict(imports=("no_such_module_xyz",)), "config.imports"),
])
def test_unknown_config_values_are_refused_by_field(kw, match):
  with pytest.raises(ValueError, match=match):
    config_lib.make_config(**kw)


def test_a_protocol_is_one_registered_function(monkeypatch):
  # A copy of the registry's table: the test protocol must not leak into
  # later tests (`--list` in a subprocess is compared with this process's).
  monkeypatch.setattr(config_lib.PROTOCOLS, "_items",
                      dict(config_lib.PROTOCOLS._items))  # pylint: disable=protected-access
  @config_lib.register_protocol("test_two_epochs")
  def two_epochs(c):
    c.train.epochs = 2
    return c
  assert config_lib.make_config(protocol="test_two_epochs").train.epochs == 2


# The authors' lambdas (SCA, Sparse-Standard) per data set; Olivetti takes
# the CelebA face setting, own data the MNIST-type one.
_LAMBDAS = {"mnist": (0.5, 0.25), "fashion_mnist": (0.5, 0.25),
            "cifar10": (0.5, 0.1), "celeb_a": (1.5, 0.1),
            "olivetti_faces": (1.5, 0.1), "pneumoniamnist": (0.1, 0.25),
            "medical_mnist": (0.1, 0.25), "folder": (0.5, 0.25),
            "npz": (0.5, 0.25)}


def test_every_data_set_has_a_setting():
  assert set(config_lib.DATASETS) == set(_LAMBDAS)
  for dataset, (sca, sparse) in _LAMBDAS.items():
    assert config_lib.make_config("sca", dataset).defense.lam == sca
    assert config_lib.make_config("sparse_standard", dataset).defense.lam == (
        sparse)
  assert config_lib.make_config("sca", "celeb_a").data.image_size == 32
  assert config_lib.make_config("sca", "celeb_a").defense.arch == "cifar"
  assert config_lib.make_config("sca", "olivetti_faces").defense.arch == (
      "mnist")  # 32x32 grey
  paper = config_lib.make_config("sca", "pneumoniamnist", "paper")
  assert (paper.train.learning_rate, paper.train.batch_size) == (1e-5, 8)
  assert paper.data.max_test == paper.data.max_aux == 0  # uncut, as theirs


@pytest.mark.parametrize("dataset", sorted(_LAMBDAS))
def test_every_pair_builds_and_validates_before_compute(dataset, monkeypatch):
  """make_config for every (data set, defense); the whole config passes
  validation with no data read (files are not opened, so data sets whose
  files are absent here, CelebA and Medical MNIST, are validated too)."""
  from sca_jax import validation  # pylint: disable=g-import-not-at-top
  from sca_jax.data import splits  # pylint: disable=g-import-not-at-top
  from conftest import shared_data_dir  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(splits, "load_source", None)  # any read would fail
  for defense in DEFENSES.names():
    for protocol in ("default", "paper"):
      c = config_lib.make_config(defense, dataset, protocol)
      assert (c.data.name, c.defense.name) == (dataset, defense)
      if dataset in ("folder", "npz"):
        with pytest.raises(validation.ConfigError, match="config.data.path"):
          validation.validate(c)
      else:
        c.data.data_dir = str(shared_data_dir())
        validation.validate(c, warn=pytest.fail)


@pytest.mark.parametrize("name", ["sca", "sparse_standard", "no_defense"])
def test_faithful_protocol_builds_the_papers_stride_one_targets(name):
  c = config_lib.make_config(name, "mnist", "faithful")
  assert tuple(c.defense.strides) == (1, 1)
  assert tuple(c.defense.hidden) == (500, 500, 28, 500)
  assert c.attacks[:5] == ("end_to_end", "split", "first_layer",
                           "end_to_end_replay", "split_replay")
  assert c.attacks[5:] == DEFENSES.get(name).adaptive_attacks
  assert c.attack.end_to_end.epochs == 50
  nets = {n: c.attack[n].net for n in c.attack if "net" in c.attack[n]}
  assert nets.pop("first_layer") == nets.pop("first_layer_averaged") == "mlp"
  assert set(nets.values()) == {"deconv"} and "split_replay" in nets
  # Each adaptive `<attack>_averaged` is its base attacker on averaged
  # queries: every other setting equal (a first_layer_averaged left at batch
  # 16 and 50 epochs diverged where first_layer, at 64 and 20, did not).
  for n in c.attack:
    if n.endswith("_averaged"):
      base = c.attack[n[:-len("_averaged")]].to_dict()
      averaged = c.attack[n].to_dict()
      assert averaged.pop("queries") > 1
      assert base.pop("queries", 1) == 1
      assert averaged == base, n
  assert c.umap is True
  attacks.validate(c)
  c.defense.features = (4, 6)  # small widths: the build is what is checked
  model = build_model(c.defense, (28, 28, 1), 10, jax.random.key(0))
  iters = [layer.cfg.num_iters for _, layer in model.sparse_layers()]
  strides = [layer.cfg.stride for _, layer in model.sparse_layers()]
  want = {"sca": [50, 40], "sparse_standard": [50], "no_defense": []}[name]
  assert iters == want and strides == [1] * len(want)
  assert c.defense.conv == "auto"
  _, reps = model(jax.numpy.zeros((2, 28, 28, 1)), train=False)
  assert reps["first"].shape[1:3] == (28, 28)  # stride 1: no downsampling


@pytest.mark.parametrize("bad", [(0, 15), (50, 15, 5), (1.5,)])
def test_bad_layer_num_iters_is_named(bad):
  c = config_lib.make_config("sca", "mnist", "faithful")
  c.defense.layer_num_iters = bad
  with pytest.raises(ValueError, match="defense.layer_num_iters"):
    build_model(c.defense, (28, 28, 1), 10, jax.random.key(0))
