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
      BCE(D(G(z,c)), real)          (stays realistic: D keeps training on
                                     real vs these fakes, so G cannot
                                     exploit a fixed D with noise)
      + CE(V0(G(z,c)), c)           (classified as c)
      + w * relu(m - d_c(G(z,c)))   (misleading: far from the real class),
    w = `gong_mislead_weight`, m = `gong_margin` (2: twice as far from mu_c as
    real images on average); `gong_type1_fraction` x N samples are drawn.
    Measured (5,000 MNIST images, defaults): with D frozen, as until
    session 15, the fakes fooled it (its real-probability 0.997 against
    0.497 for real digits) by salt noise (19% of border pixels > 0.3, real
    1.1%); with D training along, 0.495 and 6.2%, still classified as
    their label (0.97) at twice the real spread from mu_c (1.99).
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

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from sca_jax import train as train_lib
from sca_jax.defenses import DEFENSES, Defense, TrainingSet
from sca_jax.defenses.gong_fakes import (FEATURES, Fakes, fake_kinds,
                                         make_fakes, seed_of,
                                         victim_apply)

REAL, TYPE1, TYPE2 = 0, 1, 2  # per_sample["gong_kind"]
def assemble(x_NHWC, y_N, f: Fakes) -> TrainingSet:
  """`gong_gan`'s training set: real + type-1 + type-2, kinds marked."""
  return TrainingSet(
      np.concatenate([x_NHWC, f.x1, f.x2]), np.concatenate([y_N, f.y1, f.y2]),
      per_sample={"gong_kind": fake_kinds(len(y_N), len(f.y1), len(f.y2))})


def gong_gan(cfg: ml_collections.ConfigDict, x_NHWC: np.ndarray,
             y_N: np.ndarray, key: jax.Array) -> TrainingSet:
  return assemble(x_NHWC, y_N, make_fakes(cfg, x_NHWC, y_N, key))


def injection_loss(cfg: ml_collections.ConfigDict):
  """Step 2's adjusted loss on the inversed samples (the extra loss)."""
  weight = float(cfg.gong_inject_weight)

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
  rng = np.random.default_rng(seed_of(replay_key))
  n_fisher = int(cfg.gong_fisher_samples) or len(x_NHWC)
  idx = rng.permutation(len(x_NHWC))[:n_fisher]
  fisher = fisher_diagonal(f.trainer, f.state, x_NHWC[idx], fisher_key)
  anchor = jax.tree.map(jnp.copy, f.state.params)
  n_replay = int(round(float(cfg.gong_replay_fraction)
                       * len(x_NHWC)))
  replay = rng.permutation(len(x_NHWC))[:n_replay]
  return TrainingSet(
      np.concatenate([x_NHWC[replay], f.x1, f.x2]),
      np.concatenate([y_N[replay], f.y1, f.y2]),
      per_sample={"gong_kind": fake_kinds(len(replay), len(f.y1), len(f.y2))},
      init=nnx.state(f.trainer.model(f.state)),
      param_loss=ewc_penalty(anchor, fisher,
                             float(cfg.gong_ewc_lambda)))


def gong_gan_pp(cfg: ml_collections.ConfigDict, x_NHWC: np.ndarray,
                y_N: np.ndarray, key: jax.Array) -> TrainingSet:
  fakes_key, key = jax.random.split(key)
  return assemble_continual(cfg, x_NHWC, y_N,
                            make_fakes(cfg, x_NHWC, y_N, fakes_key), key)


def defaults(paper: bool) -> dict:
  """config.defense fields (module docstring); fractions: per real image."""
  # gan_epochs: the paper's 25 everywhere, as gan_augment's (gan.defaults).
  return {"gan_epochs": 25, "gong_protected_labels": (),
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
    "no_defense", lca_fields=False,
    prepare_data=gong_gan, extra_loss=injection_loss,
    defaults=defaults,
    description="misleading GAN fakes + inversed samples with an adjusted "
                "loss [22]"))
DEFENSES.register("gong_gan_pp")(Defense(
    "no_defense", lca_fields=False,
    prepare_data=gong_gan_pp, extra_loss=injection_loss,
    defaults=pp_defaults,
    description="gong_gan as continual learning from the real-data model "
                "(EWC) [22]++"))
