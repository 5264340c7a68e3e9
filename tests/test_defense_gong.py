"""Gong et al.'s defense: misleading fakes, inversions, injection loss, EWC."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from sca_jax import train
from sca_jax.defenses import DEFENSES, TrainingSet, gan, gong, gong_fakes
from sca_jax.models import build_model
from conftest import tiny_config, toy_labelled_images

PROTECTED = (0, 2)


def _data(n=192):
  return toy_labelled_images(n, (0.5, 0.3, 0.2))


def _cfg():
  c = tiny_config("gong_gan_pp").defense
  c.update(gan_epochs=1, gong_protected_labels=PROTECTED,
           gong_type1_fraction=1.0, gong_type2_fraction=1.0,
           gong_pretrain_epochs=10, gong_pretrain_lr=1e-2, gong_gen_steps=30,
           gong_gen_lr=1e-3, gong_inv_steps=10, gong_fisher_samples=100,
           gong_ewc_lambda=1e3, gong_replay_fraction=0.0)
  return c


@pytest.fixture(scope="module")
def made():
  x, y = _data()
  return _cfg(), x, y, gong_fakes.make_fakes(_cfg(), x, y, jax.random.key(0))


def _logp(f, x, y):
  logits, h = gong_fakes.predict(f.trainer, f.state, x)
  return np.asarray(jax.nn.log_softmax(logits))[np.arange(len(y)), y], h


def test_fakes_have_the_data_shape_and_protected_label_distribution(made):
  _, x, y, f = made
  for xf, yf in ((f.x1, f.y1), (f.x2, f.y2), (f.x2_start, f.y2)):
    assert xf.shape == (len(x), 28, 28, 1) and xf.dtype == x.dtype
    assert xf.min() >= 0 and xf.max() <= 1 and yf.dtype == y.dtype
  labels = np.concatenate([f.y1, f.y2])
  want = np.bincount(y, minlength=3) * np.isin(np.arange(3), PROTECTED)
  np.testing.assert_allclose(np.bincount(labels, minlength=3) / len(labels),
                             want / want.sum(), atol=0.07)


def test_type1_fakes_are_their_label_yet_far_from_the_real_class(made):
  cfg, x, y, f = made
  gen, disc, _ = f.gan

  def fakes(weight, margin):  # the GAN fine-tuned on CE (+ misleading term)
    c = cfg.copy_and_resolve_references()
    # More steps than the fixture's 30: the discriminator trains along now
    # and pulls the toy GAN's fakes back toward the data.
    c.update(gong_mislead_weight=weight, gong_margin=margin,
             gong_gen_steps=100)
    g = gong_fakes.misleading_generator(c, gen, disc, (x, y), f.trainer,
                                        f.state, f.mu, f.r,
                                        np.array(PROTECTED), (28, 28, 1),
                                        jax.random.key(3))
    logp, h = _logp(f, gan.sample(g, f.y1, (28, 28, 1), jax.random.key(4)),
                    f.y1)
    return float(gong_fakes.relative_distance(h, f.y1, f.mu, f.r).mean()), logp

  _, h_real = _logp(f, x, y)
  d_real = float(gong_fakes.relative_distance(h_real, y, f.mu, f.r).mean())
  np.testing.assert_allclose(d_real, 1.0, rtol=1e-4)  # by definition of r_c
  d0, _ = fakes(0.0, 0.0)
  # A margin beyond where CE alone leaves the (poor, 1-epoch) GAN's samples,
  # so that only the misleading term can take them there.
  d1, logp1 = fakes(1.0, d0 + 2.0)
  assert np.mean(logp1 > np.log(0.5)) > 0.7  # most: p(label) > 1/2
  assert d1 > d0 + 1.0 and d1 > 3 * d_real


def test_inversion_raises_the_class_score(made):
  _, _, _, f = made
  before, _ = _logp(f, f.x2_start, f.y2)
  after, _ = _logp(f, f.x2, f.y2)
  assert np.all(after >= before - 1e-3)  # (some start saturated at log p 0)
  assert after.mean() > before.mean() + 0.3 and np.mean(after > -0.1) > 0.9


def test_gong_gan_set_is_real_then_marked_fakes(made):
  _, x, y, f = made
  ts = gong.assemble(x, y, f)
  np.testing.assert_array_equal(ts.x[:len(x)], x)
  np.testing.assert_array_equal(ts.y, np.concatenate([y, f.y1, f.y2]))
  np.testing.assert_array_equal(np.bincount(ts.per_sample["gong_kind"]),
                                [len(x), len(f.y1), len(f.y2)])
  assert ts.init is None and ts.param_loss is None


def test_injection_pulls_inversions_onto_type1_features_of_their_label():
  loss = gong.injection_loss(tiny_config("gong_gan").defense)
  y = jnp.array([0, 0, 1, 0, 1])
  kind = jnp.array([1, 1, 1, 2, 2])  # class 1 has a type-1 fake, class 0 two
  h = jnp.array([[1., 0], [3, 0], [0, 5], [2, 0], [0, 9]])
  fn = jax.jit(lambda h: loss(jnp.zeros((5, 3)), {"last_hidden": h}, None,
                              y, None, per_sample={"gong_kind": kind})[0])
  scale = float(jnp.mean(jnp.sum(h ** 2, -1)))
  np.testing.assert_allclose(fn(h), 16 / scale / 2, rtol=1e-5)  # only 2nd
  g = jax.grad(fn)(h)
  assert np.all(np.asarray(g[:3]) == 0) and np.all(np.asarray(g[3]) == 0)
  assert g[4, 1] > 0  # pulls the class-1 inversion down onto 5
  # No type-1 fake of its class in the batch: no term.
  kind2 = jnp.array([2, 2, 1, 2, 2])
  out = loss(jnp.zeros((5, 3)), {"last_hidden": h}, None, y, None,
             per_sample={"gong_kind": kind2})[0]
  np.testing.assert_allclose(out, 16 / scale / 1, rtol=1e-5)


def test_ewc_penalty_is_zero_at_the_anchor_with_gradient_lambda_f_delta():
  rng = np.random.default_rng(0)
  tree = lambda: {"a": jnp.asarray(rng.normal(size=(3, 2))),
                  "b": [jnp.asarray(rng.normal(size=4))]}
  anchor, theta = tree(), tree()
  fisher = jax.tree.map(jnp.abs, tree())
  fn = jax.jit(lambda p: gong.ewc_penalty(anchor, fisher, 7.0)(p)[0])
  assert float(fn(anchor)) == 0.0
  grads = jax.grad(fn)(theta)
  jax.tree.map(lambda g, f, t, a: np.testing.assert_allclose(
      g, 7.0 * f * (t - a), rtol=1e-5), grads, fisher, theta, anchor)


def test_gong_gan_pp_drifts_less_along_high_fisher_directions(made):
  cfg, x, y, f = made
  replayed = cfg.copy_and_resolve_references()
  replayed.gong_replay_fraction = 0.5
  ts = gong.assemble_continual(replayed, x, y, f, jax.random.key(1))
  np.testing.assert_array_equal(np.bincount(ts.per_sample["gong_kind"]),
                                [len(x) // 2, len(f.y1), len(f.y2)])
  real = {im.tobytes(): lab for im, lab in zip(x, y)}  # rehearsal: real ones
  assert all(real.get(im.tobytes()) == lab for im, lab in
             zip(ts.x[:len(x) // 2], ts.y[:len(x) // 2]))
  ts = gong.assemble_continual(cfg, x, y, f, jax.random.key(1))  # fakes only
  assert isinstance(ts, TrainingSet) and len(ts.x) == len(f.y1) + len(f.y2)
  np.testing.assert_array_equal(ts.per_sample["gong_kind"][:len(f.y1)], 1)
  penalty, metrics = ts.param_loss(f.state.params)
  assert float(penalty) == 0.0 and float(metrics["ewc"]) == 0.0  # at theta*

  model = build_model(cfg, (28, 28, 1), 3, jax.random.key(5))
  nnx.update(model, ts.init)  # as experiment.run does
  with_ewc = train.Trainer(model, cfg, optax.adam(cfg.gong_pretrain_lr),
                           param_loss=ts.param_loss)
  plain = f.trainer  # V0's: the same optimiser, no penalty

  def finetune(trainer):  # 30 steps on the fakes from theta*, fresh Adam
    state = jax.tree.map(jnp.copy, f.state)
    state = state.replace(opt_state=trainer.tx.init((state.params,
                                                     state.dicts)))
    rng = np.random.default_rng(0)
    for step in range(40):
      idx = rng.choice(len(ts.x), 32, replace=False)
      state, _ = trainer.train_step(state, ts.x[idx], ts.y[idx],
                                    jax.random.key(step))
    drift = ts.param_loss(state.params)[1]["ewc"]  # sum F (theta-theta*)^2
    logits, _ = gong_fakes.predict(f.trainer, state, x)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    return float(drift), np.mean(logits.argmax(1) == y), float(ce)

  drift_ewc, acc_ewc, ce_ewc = finetune(with_ewc)
  drift_plain, acc_plain, ce_plain = finetune(plain)
  assert drift_ewc < 0.5 * drift_plain  # (here: 10x less)
  # Forgets the real data less: the loss on it (accuracy can saturate at
  # 1.0 for both on this toy set).
  assert ce_ewc < ce_plain and acc_ewc >= acc_plain


def test_both_are_registered_with_their_hooks():
  for name in ("gong_gan", "gong_gan_pp"):
    d = DEFENSES.get(name)
    assert d.prepare_data is not None and d.extra_loss is not None
    assert "gong_inv_steps" in d.defaults(False)
  assert "gong_ewc_lambda" in DEFENSES.get("gong_gan_pp").defaults(True)
