"""Adaptive (white-box) attacks: code decoding, feature inversion, query
averaging, and which of them apply to a target."""

import json
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from sca_jax import attacks
from sca_jax import lca
from sca_jax.attacks import code_decoding
from sca_jax.attacks import feature_inversion
from sca_jax.attacks import contract
from sca_jax.models import build_model

SHAPE = (12, 12, 1)


def _blobs(n: int, seed: int = 0) -> np.ndarray:
  """Smooth two-blob images in [0, 1]: a stand-in for digits."""
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[:SHAPE[0], :SHAPE[1]]
  out = np.zeros((n, *SHAPE), np.float32)
  for i in range(n):
    for _ in range(2):
      cy, cx = rng.uniform(2, SHAPE[0] - 2, 2)
      s = rng.uniform(1.2, 2.5)
      out[i, :, :, 0] += np.exp(-((yy - cy)**2 + (xx - cx)**2) / (2 * s * s))
  return np.clip(out, 0, 1)


def _model(name="sca", **kw):
  cfg = dict(name=name, features=(8, 8), kernel=5, strides=(1, 2),
             hidden=(8,), lam=0.1, tau=10.0, num_iters=25, solver="fista")
  cfg.update(kw)
  return build_model(ml_collections.ConfigDict(cfg), SHAPE, 3,
                     jax.random.key(0))


@pytest.fixture(scope="module")
def sca():
  model = _model()
  # Non-trivial batch norm statistics, so inverting them is really tested.
  rng = np.random.default_rng(1)
  for name, layer in zip(model.names, model.feature_layers):
    if name.endswith("_bn"):
      f = layer.mean.get_value().shape
      layer.mean.set_value(jnp.asarray(rng.uniform(0.0, 0.3, f), jnp.float32))
      layer.var.set_value(jnp.asarray(rng.uniform(0.05, 0.5, f), jnp.float32))
      layer.scale.set_value(jnp.asarray(rng.uniform(0.5, 2.0, f), jnp.float32))
      layer.bias.set_value(jnp.asarray(rng.normal(0, 0.3, f), jnp.float32))
  return model


@pytest.fixture(scope="module")
def plain():
  return _model("no_defense", strides=(1, 1))


@pytest.fixture(scope="module")
def images():
  return _blobs(160)


@pytest.fixture(scope="module")
def reps(sca, images):
  return sca(jnp.asarray(images), train=False)[1]


def test_decoding_recovers_layer_input_within_lca_error(sca, images, reps):
  x_in = np.asarray(reps["layer0_lca_input"])
  d_KKCF = sca.sparse_layers()[0][1].dictionary.get_value()
  lca_recon = lca.decode(reps["layer0_lca"], d_KKCF, 1, SHAPE[:2])
  lca_err = np.linalg.norm(x_in - lca_recon) / np.linalg.norm(x_in)
  for leak in ("first", "layer0_lca", "layer1_bn"):
    decoded = np.asarray(
        code_decoding.make_decoder(sca, leak, images)(reps[leak]))
    err = np.linalg.norm(x_in - decoded) / np.linalg.norm(x_in)
    # Decoding is exactly D a; batch norm is inverted exactly: the same
    # image, not only the same error.
    np.testing.assert_allclose(decoded, np.asarray(lca_recon), rtol=1e-4,
                               atol=1e-4 * float(np.abs(lca_recon).max()))
    np.testing.assert_allclose(err, lca_err, rtol=1e-3, atol=1e-4)
  assert lca_err < 0.3, lca_err

  # Calibration (fitted on other images) takes it back to pixel space.
  decoded = np.asarray(
      code_decoding.make_decoder(sca, "layer1_bn", images)(reps["layer1_bn"]))
  aux, target = slice(0, 120), slice(120, None)
  spread = np.linalg.norm(images[target] - images[aux].mean(axis=0))
  for kind, bound in (("affine_per_pixel", 0.45), ("ridge", 0.35)):
    fn, _ = code_decoding.fit_calibration(decoded[aux], images[aux], kind)
    recon = np.clip(fn(decoded[target]), 0, 1)
    rel = np.linalg.norm(recon - images[target]) / spread
    assert rel < bound, (kind, rel)
  fn, _ = code_decoding.fit_calibration(decoded, images, "none")
  recon = fn(decoded)
  assert recon.min() >= 0 and recon.max() <= 1


def test_second_layer_codes_decode_towards_the_image(sca, images, reps):
  decoded = np.asarray(
      code_decoding.make_decoder(sca, "layer2_lca", images)(reps["layer2_lca"]))
  assert decoded.shape == images.shape
  corr = np.corrcoef(decoded.ravel(),
                     np.asarray(reps["layer0_lca_input"]).ravel())[0, 1]
  # Random, 4x undercomplete second layer: far from exact, clearly related.
  assert corr > 0.15, corr


def test_bad_leaks_and_settings_are_named(sca, plain):
  for leak, message in (("last_hidden", "not a sparse code"),
                        ("layer9_lca", "not a sparse code")):
    with pytest.raises(ValueError, match=rf"cannot decode '{leak}'.*{message}"
                       r".*decodable leaks: \['layer0_lca', 'layer1_bn'"):
      code_decoding.check_decodable(sca, leak, "attack.code_decoding")
  with pytest.raises(ValueError, match="no sparse coding layer"):
    code_decoding.check_decodable(plain, "first", "attack.code_decoding")
  # run_attacks refuses before any compute (no data or classifier needed).
  config = ml_collections.ConfigDict(dict(attacks=("code_decoding",)))
  with pytest.raises(ValueError, match=r"config\.attack\.code_decoding\.leak"
                     r": cannot decode 'first': the target has no sparse"):
    attacks.run_attacks(config, plain, None, "/nonexistent", None)
  with pytest.raises(ValueError, match=r"attack\.code_decoding\.calibration"):
    attacks.attack_config("code_decoding", dict(calibration="pca"))
  with pytest.raises(ValueError, match=r"attack\.feature_inversion\.steps"):
    attacks.attack_config("feature_inversion", dict(steps=0))
  with pytest.raises(ValueError, match=r"attack\.split\.queries"):
    attacks.attack_config("split", dict(queries=0))


def test_feature_inversion_lowers_its_matching_loss(sca, images, reps):
  state, leak_fn = contract.make_leak_fn(sca, "first")
  recon, history = feature_inversion.invert(
      lambda x, k: leak_fn(state, x, k), reps["first"][:8],
      jnp.asarray(images.mean(axis=0, keepdims=True)), 30, 0.08, 0.01,
      jax.random.key(0))
  assert recon.shape == (8, *SHAPE) and 0 <= recon.min() <= recon.max() <= 1
  assert history[-1] < 0.3 * history[0], history[::10]


def test_feature_inversion_gradient_through_solver_matches_differences():
  with jax.enable_x64(True):
    key_d, key_x, key_v = jax.random.split(jax.random.key(0), 3)
    d_KKCF = lca.normalize_dictionary(
        jax.random.normal(key_d, (3, 3, 1, 4), jnp.float64))
    cfg = lca.LCAConfig(lam=0.05, num_iters=8, solver="fista")
    rep_fn = lambda x: lca.solve(x, d_KKCF, cfg).codes_BHWF
    z = jax.random.normal(key_x, (2, 6, 6, 1), jnp.float64)
    target = rep_fn(jax.nn.sigmoid(jnp.flip(z, axis=1)))
    # One compile serves the values and the gradient.
    value_and_grad = jax.jit(jax.value_and_grad(
        lambda z: feature_inversion.matching_loss(z, target, rep_fn, 0.01)[0]))
    v = jax.random.normal(key_v, z.shape, jnp.float64)
    analytic = jnp.vdot(value_and_grad(z)[1], v)
    eps = 1e-6
    numeric = (value_and_grad(z + eps * v)[0]
               - value_and_grad(z - eps * v)[0]) / (2 * eps)
    assert abs(float(analytic)) > 1e-4
    np.testing.assert_allclose(float(analytic), float(numeric), rtol=1e-4)


def test_query_averaging_cuts_noise_by_sqrt_k():
  sigma = 0.7
  represent = lambda x, k: x + sigma * jax.random.normal(k, x.shape)
  x = np.zeros((512, 32), np.float32)
  once = contract.query(represent, x, 128, jax.random.key(0))
  averaged = contract.query(represent, x, 128, jax.random.key(0), queries=16)
  np.testing.assert_allclose(once.std(), sigma, rtol=0.05)
  ratio = once.std() / averaged.std()
  assert abs(ratio - 4.0) < 0.8, ratio
  # Deterministic targets are unchanged by averaging.
  same = contract.query(lambda x, k: 2 * x, x + 1, 128, jax.random.key(0),
                         queries=3)
  np.testing.assert_allclose(same, 2.0, rtol=1e-6)


def test_applicable_adaptive_attacks(sca, plain):
  assert attacks.applicable_adaptive_attacks(sca, SHAPE) == (
      "code_decoding", "feature_inversion")
  assert attacks.applicable_adaptive_attacks(plain, SHAPE) == (
      "feature_inversion",)

  class Noisy(type(sca)):
    def leaked_representations(self, x_BHWC, key):
      reps = self(x_BHWC)[1]
      return {k: v + jax.random.normal(key, v.shape) for k, v in reps.items()}

  noisy = nnx.clone(sca)
  noisy.__class__ = Noisy
  assert attacks.applicable_adaptive_attacks(noisy, SHAPE) == (
      "code_decoding", "feature_inversion", "queries")


class _FakeEvaluator:
  """Stands in for the evaluation classifier: pooled pixels as features."""
  name = "fake"

  def features(self, x):
    x = np.asarray(x)
    return x.reshape(len(x), 4, 3, 4, 3).mean(axis=(2, 4)).reshape(len(x), -1)

  def correct(self, x, y):
    return (np.asarray(x).mean(axis=(1, 2, 3)) > 0.1) == (y > 0)

  def info(self):
    return dict(name=self.name)


# Every key the learned inversion attacks report (inversion.py).
COMMON_KEYS = {"attack", "leak", "inversion_net", "psnr", "ssim", "fid",
               "attack_accuracy", "floor", "floors", "reidentification",
               "fid_feature_network",
               "eval_classifier", "num_images", "num_aux_train",
               "num_aux_val", "train_time_s", "history", "total_time_s",
               "grid", "config"}


def test_adaptive_attacks_report_like_inversion_attacks(sca, images, tmp_path):
  splits = SimpleNamespace(aux_x=images[:120], train_x=images[120:],
                           aux_y=np.arange(120) % 2, train_y=np.arange(40) % 2,
                           image_shape=SHAPE)
  for name, overrides in (
      ("code_decoding", dict(leak="layer1_bn", queries=2)),
      ("feature_inversion", dict(steps=10, num_images=4))):
    cfg = attacks.attack_config(name, dict(overrides, grid_per_group=2))
    r = attacks.ATTACKS.get(name).run(cfg, sca, splits, _FakeEvaluator(),
                                      tmp_path, jax.random.key(0))
    assert COMMON_KEYS <= set(r), COMMON_KEYS - set(r)
    assert (tmp_path / "attacks" / f"{name}.png").is_file()
    json.dumps(r)
    if name == "code_decoding":
      assert r["psnr"]["mean"] > r["floor"]["psnr"]["mean"] + 3
    else:
      assert r["final_match"] < r["initial_match"]
