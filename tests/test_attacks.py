"""Inversion attacks on a small MNIST target: they learn, beat the mean-image
floor, leave the target bit-identical, and reject bad configs before compute."""

import json
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import nnx
from PIL import Image

from sca_jax import attacks
from sca_jax import evaluation
from sca_jax.attacks import contract
from sca_jax.attacks import inversion
from sca_jax.models import build_model

DEFENSE = dict(name="no_defense", features=(8, 16), kernel=5, strides=(2, 2),
               hidden=(64,), lam=0.5, tau=10.0, num_iters=20)


@pytest.fixture(scope="module")
def mnist(mnist_splits):
  return mnist_splits(600, 300, 1200)


def _model(splits):
  return build_model(ml_collections.ConfigDict(DEFENSE), splits.image_shape,
                     splits.num_classes, jax.random.key(0))


@pytest.fixture(scope="module")
def target(mnist):
  """One (untrained) target for the module: initialising costs compiles."""
  return _model(mnist)


def _config(**attack):
  c = ml_collections.ConfigDict()
  c.attacks = tuple(attack) or ("end_to_end",)
  c.attack = ml_collections.ConfigDict(attack)
  c.eval_classifier = ml_collections.ConfigDict(
      dict(epochs=2, max_train=600))
  return c


@pytest.fixture
def no_compute(monkeypatch):
  """Fails the test if an attack gets as far as training anything."""
  def boom(*args, **kwargs):
    raise AssertionError("compute started before the config was checked")
  monkeypatch.setattr(evaluation, "get_eval_classifier", boom)
  monkeypatch.setattr(inversion, "query", boom)


def test_unknown_attack_name_fails_before_compute(mnist, target, tmp_path,
                                                  no_compute):
  config = _config()
  config.attacks = ("end_to_end", "model_stealing")
  with pytest.raises(ValueError, match=r"'model_stealing'.*config field "
                     r"attacks.*allowed: \[.*'end_to_end'.*'split'.*\]"):
    attacks.run_attacks(config, target, mnist, tmp_path, jax.random.key(0))
  # A bare string, not a tuple of names.
  with pytest.raises(ValueError, match="tuple of attack names"):
    attacks.validate(ml_collections.ConfigDict(dict(attacks="split")))


def test_unknown_leak_fails_before_compute(mnist, target, tmp_path,
                                          no_compute):
  config = _config(split=dict(leak="layer9_lca"))
  attacks.validate(config)  # fine without a model: leaks need one
  with pytest.raises(ValueError, match=r"config\.attack\.split\.leak: "
                     r"'layer9_lca'.*allowed: \['first', 'first_linear', "
                     r"'last_hidden', "
                     r"'layer0_conv'"):
    attacks.run_attacks(config, target, mnist, tmp_path, jax.random.key(0))


@pytest.mark.parametrize("attack,message", [
    (dict(epoch=3), r"unknown field config\.attack\.split\.epoch\b"),
    (dict(net="unet"), r"'unet' \(config field attack\.split\.net\)"),
    (dict(net="mlp", net_args=dict(channels=8)), r"net_args.*'channels'"),
    (dict(loss="l1"), r"config\.attack\.split\.loss"),
    (dict(val_fraction=1.0), r"config\.attack\.split\.val_fraction"),
])
def test_bad_attack_settings_are_named(attack, message):
  with pytest.raises(ValueError, match=message):
    attacks.validate(_config(split=attack))


def test_settings_for_unknown_attack_are_rejected():
  config = _config()
  config.attack.inversion = dict(epochs=1)
  with pytest.raises(ValueError, match=r"config\.attack\.inversion"):
    attacks.validate(config)


def test_defaults_differ_only_in_leak():
  e2e = attacks.attack_config("end_to_end").to_dict()
  split = attacks.attack_config("split").to_dict()
  first = attacks.attack_config("first_layer").to_dict()
  assert e2e.pop("leak") == "last_hidden"
  assert split.pop("leak") == "first_linear" and first.pop("leak") == "first"
  assert e2e == split == first
  paper = attacks.default_config(paper=True)
  assert paper.attack.split.epochs == 50 and paper.attack.split.batch_size == 16


def test_represent_passes_key_to_stochastic_targets(mnist, target):
  """The noise hooks: `leaked_representations(x, key)` or `__call__(.., key)`."""
  base = type(target)

  def noised(reps, key):
    return {k: v + jax.random.normal(key, v.shape) for k, v in reps.items()}

  class Emitting(base):
    def leaked_representations(self, x_BHWC, key):
      return noised(self(x_BHWC)[1], key)

  class KeyedCall(base):
    def __call__(self, x_BHWC, train=False, key=None):
      logits, reps = super().__call__(x_BHWC, train)
      return logits, noised(reps, key)

  x = mnist.aux_x[:4]
  keys = jax.random.key(0), jax.random.key(1)
  plain = contract.make_represent(target, "first")
  np.testing.assert_array_equal(plain(x, keys[0]), plain(x, keys[1]))
  for cls in (Emitting, KeyedCall):
    noisy = nnx.clone(target)
    noisy.__class__ = cls
    represent = contract.make_represent(noisy, "first")
    assert not np.allclose(represent(x, keys[0]), represent(x, keys[1]))
    np.testing.assert_array_equal(represent(x, keys[0]),
                                  represent(x, keys[0]))


def test_attacks_learn_beat_floor_and_leave_target_untouched(
    mnist, target, tmp_path, monkeypatch, capsys):
  monkeypatch.setenv(evaluation.CACHE_ENV, str(tmp_path / "cache"))
  model = target
  before = [np.array(v) for v in jax.tree.leaves(nnx.state(model))]
  # Sized for CPU; with these settings the margins below are >= 2x (PSNR
  # +3.3 dB for the deconv net, +6.6 dB for the mlp, over the floor).
  common = dict(epochs=3, batch_size=16, learning_rate=3e-3, num_images=96,
                grid_per_group=3)
  config = _config(
      first_layer=dict(net="mlp", net_args=dict(hidden=(256,)), **common),
      end_to_end=dict(net="deconv", net_args=dict(channels=16, min_channels=8),
                      **common))
  results = attacks.run_attacks(config, model, mnist, tmp_path,
                                jax.random.key(3))

  # Progress like training's: which attack of how many, time, ETA.
  out = capsys.readouterr().out
  assert re.search(r"^attack 1 of 2: first_layer \| elapsed 0m\d\ds$", out,
                   re.M), out
  assert re.search(r"^attack 2 of 2: end_to_end \| elapsed \d+m\d\ds \| "
                   r"ETA \d+m\d\ds$", out, re.M), out
  for name in results:
    assert len(re.findall(rf"^\[{name}\] epoch [123]/3 .* img/s \| ETA "
                          r"\d+m\d\ds$", out, re.M)) == 3, out
  assert re.search(r"^attacks done: 2 in \d+m\d\ds$", out, re.M), out

  after = [np.array(v) for v in jax.tree.leaves(nnx.state(model))]
  assert len(before) == len(after)
  assert all(np.array_equal(a, b) for a, b in zip(before, after))

  assert set(results) == {"first_layer", "end_to_end"}
  for name, r in results.items():
    first = name == "first_layer"
    assert r["leak"]["name"] == ("first" if first else "last_hidden")
    assert r["leak"]["shape"] == ([14, 14, 8] if first else [64])
    hist = r["history"]
    assert hist[-1]["train_loss"] < 0.7 * hist[0]["train_loss"], hist
    assert r["best_val_loss"] <= min(h["val_loss"] for h in hist)
    floor = r["floor"]
    assert r["psnr"]["mean"] > floor["psnr"]["mean"] + 1.5, name
    assert r["ssim"]["mean"] > floor["ssim"]["mean"] + 0.15, name
    assert r["fid"] < 0.5 * floor["fid"], name
    assert (r["attack_accuracy"]["mean"] >
            floor["attack_accuracy"]["mean"] + 0.2), name
    assert r["num_images"] == 96 and r["psnr"]["n"] == 96
    assert r["fid_feature_network"].startswith("eval_cnn:mnist:seed0:")
    assert r["eval_classifier"]["test_accuracy"] > 0.5
    png = tmp_path / "attacks" / f"{name}.png"
    assert Path(r["grid"]["path"]) == png
    with Image.open(png) as im:
      assert im.format == "PNG" and im.size[0] > im.size[1] > 100
    assert sum(len(v) for v in r["grid"]["indices"].values()) == 9
  json.dumps(results)  # the caller writes it to results.json


def test_progress_eta_is_the_finished_attacks_mean_time_per_attack_left():
  assert attacks._progress(1, 5, "split", 0.0) == (
      "attack 1 of 5: split | elapsed 0m00s")
  # 2 attacks took 60 s: 30 s each, 3 left (this one included).
  assert attacks._progress(3, 5, "split", 60.0) == (
      "attack 3 of 5: split | elapsed 1m00s | ETA 1m30s")


def test_train_step_is_pure(mnist):
  net = attacks.inversion_nets.build_inversion_net(
      "deconv", (64,), (28, 28, 1), dict(channels=8, min_channels=8),
      nnx.Rngs(0))
  graphdef, params, rest = nnx.split(net, nnx.Param, ...)
  tx = optax.adam(1e-3)
  state = inversion.InversionState(params, rest, tx.init(params))
  step = jax.jit(inversion.make_train_step(graphdef, tx, "bce"))
  batch = (jnp.ones((4, 64)), jnp.asarray(mnist.aux_x[:4]))
  before = [np.array(v) for v in jax.tree.leaves(state)]
  s1, m1 = step(state, batch, jax.random.key(0))
  s2, m2 = step(state, batch, jax.random.key(0))
  assert float(m1["loss"]) == float(m2["loss"])
  leaves = lambda s: [np.asarray(v) for v in jax.tree.leaves(s)]
  assert all(np.array_equal(a, b) for a, b in zip(leaves(s1), leaves(s2)))
  # The input state is not modified; batch statistics did move.
  assert all(np.array_equal(a, b) for a, b in zip(before, leaves(state)))
  assert not all(np.array_equal(a, b) for a, b in
                 zip(leaves(state.rest), leaves(s1.rest)))


def test_a_protocols_base_attack_settings_reach_its_averaged_variant():
  attack = attacks.default_config().attack
  attack.split.epochs, attack.split.net = 7, "mlp"
  inversion.average_as_base(attack)
  assert (attack.split_averaged.epochs, attack.split_averaged.net) == (7, "mlp")
  assert (attack.split_averaged.queries, attack.split.queries) == (16, 1)
