"""The Plug-&-Play attack on a tiny random generator and target."""

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from conftest import random_generator
from flax import nnx

from sca_jax import attacks
from sca_jax import evaluation
from sca_jax.attacks import plug_and_play as pnp
from sca_jax.attacks import pnp_latents
from sca_jax.attacks.contract import attack_config
from sca_jax.convert import stylegan
from sca_jax.data.splits import Splits
from sca_jax.models import build_model

NUM_CLASSES = 3


def _poincare_numpy(logits, labels, xi=1e-4):
  u = logits / np.abs(logits).sum(-1, keepdims=True)
  v = np.clip(np.eye(logits.shape[-1])[labels] - xi, 0, 1)
  delta = 2 * np.linalg.norm(u - v, axis=1) ** 2 / (
      (1 - np.linalg.norm(u, axis=1) ** 2) *
      (1 - np.linalg.norm(v, axis=1) ** 2))
  return np.arccosh(1 + delta)


def test_poincare_loss_matches_numpy():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(5, 4)).astype(np.float32) * 3
  labels = np.array([0, 1, 2, 3, 1])
  np.testing.assert_allclose(pnp_latents.poincare_loss(logits, labels),
                             _poincare_numpy(logits, labels), rtol=1e-4)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  gen_dir = stylegan.save_generator(random_generator(),
                                    tmp_path_factory.mktemp("gen"))
  model = build_model(ml_collections.ConfigDict(dict(
      name="no_defense", features=(4, 6), kernel=5, strides=(2, 2),
      hidden=(32,), lam=0.5, tau=10., num_iters=5)), (28, 28, 1),
      NUM_CLASSES, jax.random.key(0))
  # Sharper logits, so an untrained target's confidence can move at all.
  model.head.kernel[...] = model.head.kernel[...] * 30.0
  rng = np.random.default_rng(0)
  x = rng.uniform(size=(30, 28, 28, 1)).astype(np.float32)
  y = np.arange(30, dtype=np.int32) % NUM_CLASSES
  idx = np.arange(30)
  splits = Splits(x, y, x[:6], y[:6], x, y, NUM_CLASSES, "random", idx,
                  idx[:6], idx)
  eval_net = evaluation.EvalCNN((28, 28, 1), NUM_CLASSES, rngs=nnx.Rngs(1))
  graphdef, state = nnx.split(eval_net)
  evaluator = evaluation.EvalClassifier("eval_cnn:test", graphdef, state,
                                        math.nan, False, 0.0,
                                        batch_size=16)
  return gen_dir, model, splits, evaluator


def _cfg(gen_dir, **overrides):
  return attack_config("plug_and_play", dict(
      generator_path=str(gen_dir), search_space=16, candidates_per_class=4,
      keep_per_class=2, steps=8, lr=0.1, final_views=2, batch_size=12,
      grid_per_group=2, **overrides))


def test_attack_raises_confidence_and_reports(setup, tmp_path):
  gen_dir, model, splits, evaluator = setup
  before = jax.tree.map(np.array, nnx.to_pure_dict(nnx.state(model, nnx.Param)))
  res = pnp.run(_cfg(gen_dir), model, splits, evaluator, tmp_path,
                jax.random.key(0))
  conf = res["target_confidence"]
  assert conf["optimized"] > conf["initial"] + 1e-3, conf
  for key in ("psnr", "ssim", "attack_accuracy"):
    assert set(res[key]) >= {"mean", "std", "n"}
    assert set(res["floor"][key]) >= {"mean", "std", "n"}
  assert np.isfinite(res["fid"]) and np.isfinite(res["floor"]["fid"])
  assert res["floor"]["name"] == "random_generator_samples"
  assert res["num_images"] == 2 * NUM_CLASSES
  assert sorted(res["per_class"]) == ["0", "1", "2"]
  assert "floor" in res["per_class"]["1"]
  assert res["fid_feature_network"] == "eval_cnn:test"
  assert (tmp_path / "attacks" / "plug_and_play.png").is_file()
  after = jax.tree.map(np.array, nnx.to_pure_dict(nnx.state(model, nnx.Param)))
  jax.tree.map(np.testing.assert_array_equal, before, after)


def test_missing_generator_fails_before_compute(setup, tmp_path, monkeypatch):
  _, model, splits, _ = setup
  with pytest.raises(FileNotFoundError,
                     match=r"attack\.plug_and_play\.generator_path.*"
                           r"train_generator\.py.*convert_stylegan\.py"):
    _cfg(tmp_path / "nowhere")
  cfg = attack_config("plug_and_play")  # default: unset
  monkeypatch.setattr(pnp.stylegan, "load_generator", lambda *a: 1 / 0)
  with pytest.raises(FileNotFoundError, match="generator_path is not set"):
    pnp.run(cfg, model, splits, None, tmp_path, jax.random.key(0))
  assert "plug_and_play" in attacks.ATTACKS
  attacks.default_config()  # still valid without a generator


def test_finished_attacks_are_stamped_with_the_generator_weights(
    setup, tmp_path):
  gen_dir = setup[0]
  ident = attacks.ATTACKS.get("plug_and_play").inputs_id
  first = ident(_cfg(gen_dir))
  assert first == ident(_cfg(gen_dir))  # reading does not change it
  other = stylegan.save_generator(random_generator(seed=1), tmp_path / "g")
  assert ident(_cfg(other)) != first
  # A generator retrained in place (same folder) gets a new identity.
  params = sorted(f for f in (other / "params").rglob("*") if f.is_file())
  before = ident(_cfg(other))
  params[-1].write_bytes(params[-1].read_bytes() + b"\0")
  assert ident(_cfg(other)) != before


def test_augment_keeps_shape_and_range():
  x = jnp.asarray(np.random.default_rng(0).uniform(size=(2, 12, 12, 1)),
                  jnp.float32)
  out = pnp_latents.augment(x, jax.random.key(0), (0.5, 0.9), (0.8, 1.2), True)
  assert out.shape == x.shape
  assert float(out.min()) >= -1e-5 and float(out.max()) <= 1 + 1e-5
  same = pnp_latents.augment(x, jax.random.key(0), (1.0, 1.0), (1.0, 1.0), False)
  np.testing.assert_allclose(same, x, atol=1e-5)
