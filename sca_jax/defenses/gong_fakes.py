"""Gong et al. [22], steps 0-2 (see `gong.py`): the victim V0 pre-trained on
the real data, the misleading type-1 GAN fakes and the type-2 inversed
samples, as `Fakes`."""

from __future__ import annotations

import dataclasses
import functools
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from sca_jax import batching
from sca_jax import train as train_lib
from sca_jax.defenses import gan
from sca_jax.models import build_model

REAL, TYPE1, TYPE2 = 0, 1, 2  # per_sample["gong_kind"]
FEATURES = "last_hidden"
BATCH = 64


def seed_of(key: jax.Array) -> int:
  return int(jax.random.randint(key, (), 0, 2**31 - 1))


def fake_labels(y_N: np.ndarray, protected: np.ndarray, m: int,
                key: jax.Array) -> np.ndarray:
  """m labels from the training distribution restricted to `protected`."""
  pool = y_N[np.isin(y_N, protected)]
  return np.random.default_rng(seed_of(key)).choice(pool, size=m).astype(
      y_N.dtype)


def victim_apply(trainer: train_lib.Trainer, state, x_BHWC):
  """Logits and features of the victim in eval mode (pure, jit-able)."""
  logits, reps = trainer.model(state)(x_BHWC, train=False)
  return logits, reps[FEATURES]


def relative_distance(h_BD, y_B, mu_CD, r_C):
  """d_c(x): feature distance to the real class mean over the real spread."""
  return jnp.linalg.norm(h_BD - mu_CD[y_B], axis=-1) / r_C[y_B]


def pretrain_victim(cfg: ml_collections.ConfigDict, x_NHWC, y_N,
                    num_classes: int, key: jax.Array):
  """V0: the target architecture trained on the real data: (trainer, state)."""
  init_key, key = jax.random.split(key)
  model = build_model(cfg, x_NHWC.shape[1:], num_classes, init_key)
  trainer = train_lib.Trainer(
      model, cfg, optax.adam(float(cfg.gong_pretrain_lr)))
  state = jax.tree.map(jnp.copy, trainer.init_state)
  n, bs = len(x_NHWC), min(BATCH, len(x_NHWC))
  rng, step = np.random.default_rng(seed_of(key)), 0
  for _ in range(int(cfg.gong_pretrain_epochs)):
    for idx in batching.epoch_batches(rng, n, bs):
      state, _ = trainer.train_step(state, x_NHWC[idx], y_N[idx],
                                    jax.random.fold_in(key, step))
      step += 1
  return trainer, state


_victim_apply = jax.jit(victim_apply, static_argnums=0)


def predict(trainer, state, x_NHWC, batch: int = 500):
  """V0's logits and features of x, batched."""
  out = [_victim_apply(trainer, state, x_NHWC[i:i + batch])
         for i in range(0, len(x_NHWC), batch)]
  return tuple(np.concatenate(o) for o in zip(*out))


def class_stats(h_ND: np.ndarray, y_N: np.ndarray, num_classes: int):
  """Per class: mean feature mu_c (C, D) and mean distance to it r_c (C,)."""
  mu = np.zeros((num_classes, h_ND.shape[1]), np.float32)
  r = np.ones((num_classes,), np.float32)
  for c in np.unique(y_N):
    h = h_ND[y_N == c]
    mu[c] = h.mean(0)
    r[c] = max(float(np.linalg.norm(h - mu[c], axis=1).mean()), 1e-6)
  return jnp.asarray(mu), jnp.asarray(r)


_ADAM_B1_HALF = optax.scale_by_adam(b1=0.5)  # the GAN's Adam, lr apart


@functools.partial(jax.jit, static_argnames=("trainer", "gdef", "ddef",
                                             "image_shape"))
def _misleading_step(gstate, opt_state, dstate, state, mu, r, z, y, lr,
                     margin, weight, *, trainer, gdef, ddef, image_shape):
  disc = nnx.merge(ddef, dstate)

  def loss_fn(gstate):
    x = nnx.merge(gdef, gstate)(z, y)
    adv = optax.sigmoid_binary_cross_entropy(disc(x)[0], 1.0).mean()
    logits, h = victim_apply(trainer, state, x.reshape((-1, *image_shape)))
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    d = relative_distance(h, y, mu, r)
    return adv + ce + weight * jax.nn.relu(margin - d).mean(), d.mean()
  (_, d), grads = jax.value_and_grad(loss_fn, has_aux=True)(gstate)
  updates, opt_state = _ADAM_B1_HALF.update(grads, opt_state)
  gstate = jax.tree.map(lambda p, u: p - lr * u, gstate, updates)
  return gstate, opt_state, d


@functools.partial(jax.jit, static_argnames=("gdef", "ddef"))
def _discriminator_step(dstate, opt_state, gstate, x_real, y_real, z, y, *,
                        gdef, ddef):
  """One step of the GAN's discriminator on real images vs the fakes of the
  generator being fine-tuned (the GAN's Adam: `gan.LR`, b1 0.5)."""
  fake = jax.lax.stop_gradient(nnx.merge(gdef, gstate)(z, y))
  grads = jax.grad(lambda d: gan.discriminator_loss(
      nnx.merge(ddef, d), x_real, y_real, fake, y))(dstate)
  updates, opt_state = _ADAM_B1_HALF.update(grads, opt_state)
  dstate = jax.tree.map(lambda p, u: p - gan.LR * u, dstate, updates)
  return dstate, opt_state


def misleading_generator(cfg: ml_collections.ConfigDict, gen, disc,
                         real: tuple[np.ndarray, np.ndarray], trainer, state,
                         mu, r, protected: np.ndarray, image_shape,
                         key: jax.Array):
  """Step 1: a copy of `gen` fine-tuned to misleading fakes (docstring);
  `real`: the real (x_NHWC, y_N) a copy of `disc` keeps training on."""
  gdef, gstate = nnx.split(gen)
  ddef, dstate = nnx.split(disc)
  gstate, dstate = jax.tree.map(jnp.copy, (gstate, dstate))
  opt_state, d_opt_state = (_ADAM_B1_HALF.init(gstate),
                            _ADAM_B1_HALF.init(dstate))
  hyper = [jnp.float32(cfg[k]) for k in (
      "gong_gen_lr", "gong_margin", "gong_mislead_weight")]
  x_real, y_real = real
  x_real = x_real.reshape(len(x_real), -1)
  rng = np.random.default_rng(seed_of(key))
  for i in range(int(cfg.gong_gen_steps)):
    y = jnp.asarray(rng.choice(protected, size=BATCH))
    z = jax.random.normal(jax.random.fold_in(key, i), (BATCH, gan.LATENT))
    idx = rng.choice(len(x_real), size=min(BATCH, len(x_real)), replace=False)
    dstate, d_opt_state = _discriminator_step(
        dstate, d_opt_state, gstate, jnp.asarray(x_real[idx]),
        jnp.asarray(y_real[idx]), z, y, gdef=gdef, ddef=ddef)
    gstate, opt_state, _ = _misleading_step(
        gstate, opt_state, dstate, state, mu, r, z, y, *hyper,
        trainer=trainer, gdef=gdef, ddef=ddef, image_shape=tuple(image_shape))
  return nnx.merge(gdef, gstate)


@functools.partial(jax.jit, static_argnames=("trainer", "steps"))
def _invert(state, x0, y, lr, *, trainer, steps: int):
  tx = optax.adam(lr)

  def neg_logp(x):
    logits, _ = victim_apply(trainer, state, x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).sum()

  def body(carry, _):
    x, opt_state = carry
    updates, opt_state = tx.update(jax.grad(neg_logp)(x), opt_state)
    return (jnp.clip(x + updates, 0.0, 1.0), opt_state), None
  (x, _), _ = jax.lax.scan(body, (x0, tx.init(x0)), None, length=steps)
  return x


def invert(trainer, state, x0_MHWC, y_M, steps: int, lr: float,
           batch: int = 256) -> np.ndarray:
  """Step 2's MI attack on the victim: `steps` Adam steps on the pixels
  maximising log p(y | x), pixels kept in [0, 1]; batch by batch (the last
  one padded: one compilation)."""
  out = []
  for i in range(0, len(x0_MHWC), batch):
    x, y = x0_MHWC[i:i + batch], y_M[i:i + batch]
    pad = min(batch, len(x0_MHWC)) - len(x)
    out.append(np.asarray(_invert(
        state, np.concatenate([x, x[:pad]]), np.concatenate([y, y[:pad]]),
        jnp.float32(lr), trainer=trainer, steps=steps))[:len(x)])
  return np.concatenate(out) if out else x0_MHWC


@dataclasses.dataclass
class Fakes:
  trainer: train_lib.Trainer  # V0's trainer and state
  state: train_lib.TrainState
  x1: np.ndarray  # type-1 fakes and their labels
  y1: np.ndarray
  x2: np.ndarray  # type-2 inversed samples, their start points and labels
  x2_start: np.ndarray
  y2: np.ndarray
  mu: jax.Array  # V0's real class means (C, D) and spreads (C,)
  r: jax.Array
  gan: tuple  # (generator, discriminator, misleading generator)


def make_fakes(cfg: ml_collections.ConfigDict, x_NHWC: np.ndarray,
               y_N: np.ndarray, key: jax.Array) -> Fakes:
  """Steps 0-2 of the module docstring."""
  t0 = time.time()
  num_classes, shape, n = int(y_N.max()) + 1, x_NHWC.shape[1:], len(x_NHWC)
  keys = jax.random.split(key, 8)
  protected = np.asarray(tuple(cfg.gong_protected_labels or ())
                         or np.unique(y_N), y_N.dtype)  # (): every label
  trainer, state = pretrain_victim(cfg, x_NHWC, y_N, num_classes, keys[0])
  logits, h = predict(trainer, state, x_NHWC)
  mu, r = class_stats(h, y_N, num_classes)
  print(f"gong: V0 train accuracy {np.mean(logits.argmax(1) == y_N):.3f}")
  gen, disc = gan.train_gan(x_NHWC, y_N, num_classes,
                            int(cfg.gan_epochs), keys[1],
                            return_discriminator=True)
  gen1 = misleading_generator(cfg, gen, disc, (x_NHWC, y_N), trainer, state,
                              mu, r, protected, shape, keys[2])
  m1 = int(round(float(cfg.gong_type1_fraction) * n))
  m2 = int(round(float(cfg.gong_type2_fraction) * n))
  y1 = fake_labels(y_N, protected, m1, keys[3])
  x1 = gan.sample(gen1, y1, shape, keys[4]).astype(x_NHWC.dtype)
  y2 = fake_labels(y_N, protected, m2, keys[5])
  x2_start = gan.sample(gen, y2, shape, keys[6]).astype(x_NHWC.dtype)
  x2 = invert(trainer, state, x2_start, y2, int(cfg.gong_inv_steps),
              float(cfg.gong_inv_lr))
  fakes = Fakes(trainer, state, x1, y1, x2, x2_start, y2, mu, r,
                (gen, disc, gen1))
  print(f"gong: fakes made in {time.time() - t0:.0f}s: {summary(fakes)}")
  return fakes


def summary(f: Fakes) -> str:
  """Mechanism check, printed: V0 on the type-1 fakes and the inversions."""
  if not (len(f.y1) and len(f.y2)):
    return "no fakes of one type"
  logits, h = predict(f.trainer, f.state, f.x1)
  d = relative_distance(jnp.asarray(h), f.y1, f.mu, f.r).mean()
  lp = [np.mean(jax.nn.log_softmax(predict(f.trainer, f.state, x)[0])[
      np.arange(len(f.y2)), f.y2]) for x in (f.x2_start, f.x2)]
  return (f"type-1 classified as label {np.mean(logits.argmax(1) == f.y1):.2f}"
          f", feature distance / real spread {float(d):.2f}; inversion "
          f"log p(label) {lp[0]:.2f} -> {lp[1]:.2f}")


def fake_kinds(*counts: int) -> np.ndarray:
  return np.concatenate([np.full(c, k, np.int32) for k, c in
                         zip((REAL, TYPE1, TYPE2), counts)])
