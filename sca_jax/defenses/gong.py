"""Gong et al., "A GAN-Based Defense Framework Against Model Inversion
Attacks" (IEEE TIFS 2023, [22]; sibling: NetGuard, WWW 2023): `gong_gan`, and
`gong_gan_pp` with continual-learning accuracy recovery.

Idea: a model inversion (MI) attack climbs the target's confidence in a
protected label; train the target so that what it finds there are misleading
features instead of private ones. Only the abstracts are public to us; the
steps follow them and the SCA paper ("two types of GAN-generated images",
"'++' adds Continual Learning"); the details are assumptions. Features phi are
the victim's last hidden layer (`last_hidden`, what the end-to-end attack
leaks).

 0. V0: the target architecture trained on the real data
    (`gong_pretrain_epochs`, Adam `gong_pretrain_lr`, batch 64). Per label c:
    mean feature mu_c of its real images and their mean distance r_c to it;
    d_c(x) = ||phi(x) - mu_c|| / r_c (real images: 1 on average). A
    class-conditional GAN (`gan.train_gan`, `gan_epochs`) on the real data.
 1. Type-1 fakes, misleading GAN samples: a copy of the generator is
    fine-tuned for `gong_gen_steps` (Adam `gong_gen_lr`, b1 0.5, batch 64,
    protected labels) on
      BCE(D(G(z,c), c), real)       (stays realistic; D frozen)
      + CE(V0(G(z,c)), c)           (classified as c)
      + w * relu(m - d_c(G(z,c)))   (misleading: far from the real class),
    w = `gong_mislead_weight`, m = `gong_margin` (2: twice as far from mu_c as
    real images on average); `gong_type1_fraction` x N samples are drawn.
 2. Type-2 "inversed samples": our own MI attack on V0: from samples of the
    original generator, `gong_inv_steps` Adam steps (lr `gong_inv_lr`) on the
    pixels maximise log p_V0(c | x), pixels clipped to [0, 1];
    `gong_type2_fraction` x N of them. Adjusted loss (assumed; theirs is not
    public): besides CE with label c, their features are pulled onto the
    type-1 features of their label,
      `gong_inject_weight` * ||phi(x2) - sg(nu_c)||^2 / sg(mean ||phi||^2),
    nu_c = mean feature of the batch's type-1 fakes of label c under the model
    being trained (none in the batch: no term). What an attack reaches for c
    is trained to look like the misleading fakes to the model: misleading
    features injected into the protected label.
 3. `gong_gan`: the target trains from scratch on real + type-1 + type-2 (CE
    on all, the injection term on type-2, marked by `per_sample["gong_kind"]`).
    `gong_gan_pp`: continual learning by elastic weight consolidation
    (Kirkpatrick et al. 2017; the scheme is our choice): the target starts
    from V0 (task A: the real data) and trains on the fakes (task B) with the
    same losses plus lambda/2 * sum_i F_i (theta_i - theta*_i)^2: theta* =
    V0's parameters, F the diagonal Fisher of V0's predictive distribution on
    `gong_fisher_samples` real images (0: all; one label sampled from
    p_V0(y|x) per image), lambda = `gong_ewc_lambda`. Batch-norm running
    statistics are not parameters, so EWC cannot hold them: on the default
    MNIST config (one seed, `gong_gen_lr` 2e-4 then), fakes alone took V0's
    test accuracy 0.965 to 0.938 (0.959 with V0's statistics put back). So a
    rehearsal of `gong_replay_fraction` x N real images joins the fakes
    (defaults: 0.969; `gong_gan` 0.974).

Protected labels: `gong_protected_labels` (() = every label, as the attacks
here invert every class); fake labels follow the training label distribution
restricted to them. Other deviations: an MLP GAN on the real training data
(they use public data and stronger GANs), no focal tuning, CPU-sized step
counts (`:paper`: more steps; none are the authors' values).
"""

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

from sca_jax import train as train_lib
from sca_jax.defenses import DEFENSES, Defense, TrainingSet, gan
from sca_jax.models import build_model

REAL, TYPE1, TYPE2 = 0, 1, 2  # per_sample["gong_kind"]
FEATURES = "last_hidden"
BATCH = 64


def _seed(key: jax.Array) -> int:
  return int(jax.random.randint(key, (), 0, 2**31 - 1))


def fake_labels(y_N: np.ndarray, protected: np.ndarray, m: int,
                key: jax.Array) -> np.ndarray:
  """m labels from the training distribution restricted to `protected`."""
  pool = y_N[np.isin(y_N, protected)]
  return np.random.default_rng(_seed(key)).choice(pool, size=m).astype(
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
      model, cfg, optax.adam(float(cfg.get("gong_pretrain_lr", 1e-3))))
  state = jax.tree.map(jnp.copy, trainer.init_state)
  n, bs = len(x_NHWC), min(BATCH, len(x_NHWC))
  rng, step = np.random.default_rng(_seed(key)), 0
  for _ in range(int(cfg.get("gong_pretrain_epochs", 3))):
    perm = rng.permutation(n)
    for i in range(n // bs):
      idx = perm[i * bs:(i + 1) * bs]
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
    adv = optax.sigmoid_binary_cross_entropy(disc(x, y), 1.0).mean()
    logits, h = victim_apply(trainer, state, x.reshape((-1, *image_shape)))
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    d = relative_distance(h, y, mu, r)
    return adv + ce + weight * jax.nn.relu(margin - d).mean(), d.mean()
  (_, d), grads = jax.value_and_grad(loss_fn, has_aux=True)(gstate)
  updates, opt_state = _ADAM_B1_HALF.update(grads, opt_state)
  gstate = jax.tree.map(lambda p, u: p - lr * u, gstate, updates)
  return gstate, opt_state, d


def misleading_generator(cfg: ml_collections.ConfigDict, gen, disc, trainer,
                         state, mu, r, protected: np.ndarray, image_shape,
                         key: jax.Array):
  """Step 1: a copy of `gen` fine-tuned to misleading fakes (docstring)."""
  gdef, gstate = nnx.split(gen)
  ddef, dstate = nnx.split(disc)
  gstate = jax.tree.map(jnp.copy, gstate)
  opt_state = _ADAM_B1_HALF.init(gstate)
  hyper = [jnp.float32(cfg.get(k, v)) for k, v in (
      ("gong_gen_lr", 1e-3), ("gong_margin", 2.0),
      ("gong_mislead_weight", 1.0))]
  rng = np.random.default_rng(_seed(key))
  for i in range(int(cfg.get("gong_gen_steps", 200))):
    y = jnp.asarray(rng.choice(protected, size=BATCH))
    z = jax.random.normal(jax.random.fold_in(key, i), (BATCH, gan.LATENT))
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
  protected = np.asarray(tuple(cfg.get("gong_protected_labels", ()) or ())
                         or np.unique(y_N), y_N.dtype)  # (): every label
  trainer, state = pretrain_victim(cfg, x_NHWC, y_N, num_classes, keys[0])
  logits, h = predict(trainer, state, x_NHWC)
  mu, r = class_stats(h, y_N, num_classes)
  print(f"gong: V0 train accuracy {np.mean(logits.argmax(1) == y_N):.3f}")
  gen, disc = gan.train_gan(x_NHWC, y_N, num_classes,
                            int(cfg.get("gan_epochs", 2)), keys[1],
                            return_discriminator=True)
  gen1 = misleading_generator(cfg, gen, disc, trainer, state, mu, r,
                              protected, shape, keys[2])
  m1 = int(round(float(cfg.get("gong_type1_fraction", 0.5)) * n))
  m2 = int(round(float(cfg.get("gong_type2_fraction", 0.5)) * n))
  y1 = fake_labels(y_N, protected, m1, keys[3])
  x1 = gan.sample(gen1, y1, shape, keys[4]).astype(x_NHWC.dtype)
  y2 = fake_labels(y_N, protected, m2, keys[5])
  x2_start = gan.sample(gen, y2, shape, keys[6]).astype(x_NHWC.dtype)
  x2 = invert(trainer, state, x2_start, y2, int(cfg.get("gong_inv_steps", 20)),
              float(cfg.get("gong_inv_lr", 0.05)))
  fakes = Fakes(trainer, state, x1, y1, x2, x2_start, y2, mu, r,
                (gen, disc, gen1))
  print(f"gong: fakes made in {time.time() - t0:.0f}s: {_summary(fakes)}")
  return fakes


def _summary(f: Fakes) -> str:
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


def _kinds(*counts: int) -> np.ndarray:
  return np.concatenate([np.full(c, k, np.int32) for k, c in
                         zip((REAL, TYPE1, TYPE2), counts)])


def assemble(x_NHWC, y_N, f: Fakes) -> TrainingSet:
  """`gong_gan`'s training set: real + type-1 + type-2, kinds marked."""
  return TrainingSet(
      np.concatenate([x_NHWC, f.x1, f.x2]), np.concatenate([y_N, f.y1, f.y2]),
      per_sample={"gong_kind": _kinds(len(y_N), len(f.y1), len(f.y2))})


def gong_gan(cfg: ml_collections.ConfigDict, x_NHWC: np.ndarray,
             y_N: np.ndarray, key: jax.Array) -> TrainingSet:
  return assemble(x_NHWC, y_N, make_fakes(cfg, x_NHWC, y_N, key))


def injection_loss(cfg: ml_collections.ConfigDict):
  """Step 2's adjusted loss on the inversed samples (the extra loss)."""
  weight = float(cfg.get("gong_inject_weight", 1.0))

  def fn(logits, reps, x, y, key, per_sample=None):
    del x, key
    if per_sample is None:  # no fakes marked: nothing to inject
      return jnp.zeros(()), {}
    kind, h = per_sample["gong_kind"], reps[FEATURES]
    type1 = jax.nn.one_hot(y, logits.shape[-1]) * (kind == TYPE1)[:, None]
    count = type1.sum(0)
    nu = jax.lax.stop_gradient(type1.T @ h / jnp.maximum(count, 1)[:, None])
    mask = (kind == TYPE2) & (count[y] > 0)
    scale = jax.lax.stop_gradient(jnp.mean(jnp.sum(h ** 2, -1))) + 1e-6
    d = jnp.sum((h - nu[y]) ** 2, -1) / scale
    inject = jnp.sum(d * mask) / jnp.maximum(mask.sum(), 1)
    return weight * inject, {"gong_inject": inject}
  return fn


@functools.partial(jax.jit, static_argnames="trainer")
def _fisher_sum(state, x, key, *, trainer):
  def logp(params, x1, y1):
    dicts, stats, rest = jax.tree.map(lambda v: v, (state.dicts, state.stats,
                                                    state.rest))
    model = nnx.merge(trainer.graphdef, dicts, params, stats, rest)
    return jax.nn.log_softmax(model(x1[None], train=False)[0][0])[y1]
  y = jax.random.categorical(key, victim_apply(trainer, state, x)[0])
  g = jax.vmap(jax.grad(logp), in_axes=(None, 0, 0))(state.params, x, y)
  return jax.tree.map(lambda a: jnp.sum(a ** 2, 0), g)


def fisher_diagonal(trainer, state, x_NHWC: np.ndarray, key: jax.Array,
                    batch: int = 50):
  """Diagonal Fisher at V0's parameters (same tree as `state.params`):
  mean over x of (d log p(y|x) / d theta)^2, y ~ p(y|x) once per image."""
  total = jax.tree.map(jnp.zeros_like, state.params)
  for i in range(0, len(x_NHWC), batch):
    total = jax.tree.map(jnp.add, total, _fisher_sum(
        state, x_NHWC[i:i + batch], jax.random.fold_in(key, i),
        trainer=trainer))
  return jax.tree.map(lambda a: a / len(x_NHWC), total)


def ewc_penalty(anchor, fisher, lam: float) -> train_lib.ParamLoss:
  """lam/2 * sum_i F_i (theta_i - anchor_i)^2 over the parameter tree."""
  def fn(params):
    terms = jax.tree.map(lambda p, a, f: jnp.sum(f * (p - a) ** 2), params,
                         anchor, fisher)
    total = sum(jax.tree.leaves(terms))
    return 0.5 * lam * total, {"ewc": total}
  return fn


def assemble_continual(cfg: ml_collections.ConfigDict, x_NHWC, y_N, f: Fakes,
                       key: jax.Array) -> TrainingSet:
  """`gong_gan_pp`: start from V0, train on the fakes with the EWC penalty."""
  fisher_key, replay_key = jax.random.split(key)
  rng = np.random.default_rng(_seed(replay_key))
  n_fisher = int(cfg.get("gong_fisher_samples", 1000)) or len(x_NHWC)
  idx = rng.permutation(len(x_NHWC))[:n_fisher]
  fisher = fisher_diagonal(f.trainer, f.state, x_NHWC[idx], fisher_key)
  anchor = jax.tree.map(jnp.copy, f.state.params)
  n_replay = int(round(float(cfg.get("gong_replay_fraction", 0.5))
                       * len(x_NHWC)))
  replay = rng.permutation(len(x_NHWC))[:n_replay]
  return TrainingSet(
      np.concatenate([x_NHWC[replay], f.x1, f.x2]),
      np.concatenate([y_N[replay], f.y1, f.y2]),
      per_sample={"gong_kind": _kinds(len(replay), len(f.y1), len(f.y2))},
      init=nnx.state(f.trainer.model(f.state)),
      param_loss=ewc_penalty(anchor, fisher,
                             float(cfg.get("gong_ewc_lambda", 100.0))))


def gong_gan_pp(cfg: ml_collections.ConfigDict, x_NHWC: np.ndarray,
                y_N: np.ndarray, key: jax.Array) -> TrainingSet:
  fakes_key, key = jax.random.split(key)
  return assemble_continual(cfg, x_NHWC, y_N,
                            make_fakes(cfg, x_NHWC, y_N, fakes_key), key)


def defaults(paper: bool) -> dict:
  """config.defense fields (module docstring); fractions: per real image."""
  return {"gan_epochs": 25 if paper else 2, "gong_protected_labels": (),
          "gong_type1_fraction": 0.5, "gong_type2_fraction": 0.5,
          "gong_pretrain_epochs": 25 if paper else 3, "gong_pretrain_lr": 1e-3,
          "gong_gen_steps": 2000 if paper else 200, "gong_gen_lr": 1e-3,
          "gong_margin": 2.0, "gong_mislead_weight": 1.0,
          "gong_inv_steps": 100 if paper else 20, "gong_inv_lr": 0.05,
          "gong_inject_weight": 1.0}


def pp_defaults(paper: bool) -> dict:
  return {**defaults(paper), "gong_ewc_lambda": 100.0,
          "gong_fisher_samples": 0 if paper else 1000,  # 0 = all
          "gong_replay_fraction": 0.5}


DEFENSES.register("gong_gan")(Defense(
    "no_defense", prepare_data=gong_gan, extra_loss=injection_loss,
    defaults=defaults,
    description="misleading GAN fakes + inversed samples with an adjusted "
                "loss [22]"))
DEFENSES.register("gong_gan_pp")(Defense(
    "no_defense", prepare_data=gong_gan_pp, extra_loss=injection_loss,
    defaults=pp_defaults,
    description="gong_gan as continual learning from the real-data model "
                "(EWC) [22]++"))
