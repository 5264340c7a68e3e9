"""The learned-inversion attack shared by the end-to-end and split threats.

The attacker (paper, Sec. 2 and Appendix B):
  1. queries the FROZEN target with its auxiliary images (held-out data, never
     the target's training images) and records the leaked representation;
  2. trains an inversion network representation -> image on those pairs, with
     its own optax optimiser over its own parameters only, keeping the
     parameters with the best loss on a held-out part of the auxiliary set;
  3. reconstructs the target's training images from their leaked
     representations, scored by PSNR, SSIM, FID over evaluation-classifier
     features, attack accuracy and re-identification rate, next to three
     floors (mean, class-mean and retrieval-oracle images: sca_jax.leakage).

The target is read through `contract.make_represent` (its state closed over
in a jitted function), so no gradient, optimiser or update can reach it.
Unlike the authors' code (their inversion script handed the target's
parameters to the optimiser, so the inversion net never trained), the
inversion net is trained. The attack contract (registry, leak lookup,
queries, scoring) is `contract.py`.
"""

from __future__ import annotations

import functools
import math
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from sca_jax import batching, metrics
from sca_jax.attacks import inversion_nets
from sca_jax.attacks.contract import (ATTACKS, LEAK_DEFAULTS, AttackSpec,
                                      check_leak, evaluate_reconstructions,
                                      make_represent, query)
from sca_jax.evaluation import EvalClassifier, batched
from sca_jax.train import format_eta

LOSSES = ("mse", "bce")

# The learned inversion's own fields (over contract.COMMON_DEFAULTS and
# contract.LEAK_DEFAULTS); each attack overrides a few. The paper trains 50
# epochs at batch 16 (`PAPER_OVERRIDES`); the default is sized for CPU runs.
INVERSION_DEFAULTS = dict(
    net="deconv",             # a name from INVERSION_NETS
    net_args={},              # keyword settings of the net (see inversion_nets)
    epochs=20,
    batch_size=64,
    learning_rate=1e-3,       # Adam
    loss="mse",               # or "bce" (on the net's pre-sigmoid output)
    val_fraction=0.1,         # of the auxiliary set, for model selection
    log_every=1,              # epochs between progress lines
)
PAPER_OVERRIDES = dict(epochs=50, batch_size=16)
# Queries per input of the `*_averaged` attacks: noise std / 4.
AVERAGED_QUERIES = 16


def check_fields(cfg: ml_collections.ConfigDict, where: str) -> None:
  """Checks the inversion fields of an attack config (no model needed)."""
  inversion_nets.check_net_args(cfg.net, dict(cfg.net_args), f"{where}.net")
  if cfg.loss not in LOSSES:
    raise ValueError(f"config.{where}.loss must be one of {LOSSES}, got "
                     f"{cfg.loss!r}")
  if not 0 < float(cfg.val_fraction) < 1:
    raise ValueError(f"config.{where}.val_fraction must be in (0, 1), got "
                     f"{cfg.val_fraction}")


def register_inversion_attack(name: str, description: str,
                              **defaults: Any) -> AttackSpec:
  """Registers `name` and its adaptive variant `<name>_averaged`, which
  averages AVERAGED_QUERIES leaked outputs per input (against defenses that
  add fresh noise at inference)."""
  def register(n: str, d: str, extra: dict[str, Any]) -> AttackSpec:
    return ATTACKS.register(n)(AttackSpec(
        n, d, {**LEAK_DEFAULTS, **INVERSION_DEFAULTS, **defaults, **extra},
        functools.partial(run_inversion_attack, n), check_fields,
        paper_overrides=PAPER_OVERRIDES))

  register(f"{name}_averaged", f"{description}, each the mean of "
           f"{AVERAGED_QUERIES} queries", {"queries": AVERAGED_QUERIES})
  return register(name, description, {})


def average_as_base(attack: ml_collections.ConfigDict) -> None:
  """Gives each `<name>_averaged` in `attack` its base's settings, in place.

  The variant is the base attacker on averaged queries, so only `queries`
  is its own; a protocol sets the base (a first_layer_averaged once kept
  batch 16 and 50 epochs after first_layer moved to 64 and 20, and its
  training loss rose after epoch 3).
  """
  for name in attack:
    base = name.removesuffix("_averaged")
    if base != name and base in attack:
      queries = attack[name].queries
      attack[name] = ml_collections.ConfigDict(attack[base].to_dict())
      attack[name].queries = queries


def standardizer(reps_N: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
  """Per-feature (flat leaks) or per-channel (spatial leaks) standardisation.

  Statistics come from the attacker's own training representations. The
  scale is floored at a tenth of the mean scale so features that were
  (almost) silent on the auxiliary set cannot blow up later inputs.
  """
  axes = tuple(range(reps_N.ndim - 1))
  mean = reps_N.mean(axis=axes).astype(np.float32)
  std = reps_N.std(axis=axes)
  scale = np.maximum(std, 0.1 * std.mean() + 1e-8).astype(np.float32)
  return lambda r: ((r - mean) / scale).astype(np.float32)


class InversionState(NamedTuple):
  params: nnx.State     # trained by the attacker's optimiser
  rest: nnx.State       # batch statistics
  opt_state: optax.OptState


def per_image_loss(logits_BHWC: jax.Array, x_BHWC: jax.Array,
                   loss: str) -> jax.Array:
  if loss == "bce":
    err = optax.sigmoid_binary_cross_entropy(logits_BHWC, x_BHWC)
  else:
    err = jnp.square(jax.nn.sigmoid(logits_BHWC) - x_BHWC)
  return err.reshape(err.shape[0], -1).mean(axis=1)


def make_train_step(graphdef: nnx.GraphDef, tx: optax.GradientTransformation,
                    loss: str):
  """The pure step `(inv_state, (rep, x), key) -> (inv_state, metrics)`."""

  def train_step(state: InversionState, batch, key: jax.Array):
    del key  # reserved for stochastic inversion nets; mlp/deconv have none
    rep, x = batch

    def loss_fn(params):
      # Fresh Variables at this trace level: batch norm writes its statistics.
      rest = jax.tree.map(lambda v: v, state.rest)
      net = nnx.merge(graphdef, params, rest)
      value = per_image_loss(net.logits(rep, train=True), x, loss).mean()
      return value, nnx.state(net, nnx.Not(nnx.Param))

    (value, rest), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return InversionState(params, rest, opt_state), {"loss": value}

  return train_step


def make_eval_step(graphdef: nnx.GraphDef, loss: str):
  """`(inv_state, rep, x) -> (recon, loss per image, PSNR per image)`."""

  def eval_step(state: InversionState, rep, x):
    logits = nnx.merge(graphdef, state.params, state.rest).logits(rep)
    recon = jax.nn.sigmoid(logits)
    return recon, per_image_loss(logits, x, loss), metrics.psnr(recon, x)

  return eval_step


def _finite_mean(v: np.ndarray) -> float:
  v = v[np.isfinite(v)]
  return float(v.mean()) if v.size else math.nan


def train_inversion(net: inversion_nets.InversionNet, train: tuple, val: tuple,
                    cfg: ml_collections.ConfigDict, key: jax.Array, tag: str
                    ) -> tuple[Callable[[np.ndarray], np.ndarray], dict]:
  """Trains `net` on (reps, images); returns the best-val reconstructor.

  Batches are sliced on the host and fed to a jitted step: XLA:CPU runs
  convolutions inside a `lax.scan` about 10x slower than this.
  """
  graphdef, params, rest = nnx.split(net, nnx.Param, ...)
  tx = optax.adam(float(cfg.learning_rate))
  state = InversionState(params, rest, tx.init(params))
  train_step = jax.jit(make_train_step(graphdef, tx, cfg.loss))
  eval_step = jax.jit(make_eval_step(graphdef, cfg.loss))
  (reps, x), (val_reps, val_x) = train, val
  bs = min(int(cfg.batch_size), len(x))
  steps = len(x) // bs
  rng = np.random.default_rng(np.asarray(jax.random.key_data(key)))
  best, history = None, []
  t0 = time.time()
  for epoch in range(1, int(cfg.epochs) + 1):
    t_epoch = time.time()
    losses = []
    for i, idx in enumerate(batching.epoch_batches(rng, len(x), bs)):
      state, m = train_step(state, (reps[idx], x[idx]),
                            jax.random.fold_in(key, epoch * steps + i))
      losses.append(m["loss"])
    train_loss = float(jnp.mean(jnp.stack(losses)))
    _, val_loss, val_psnr = batched(functools.partial(eval_step, state),
                                    int(cfg.eval_batch_size), val_reps, val_x)
    rec = dict(epoch=epoch, train_loss=train_loss,
               val_loss=float(val_loss.mean()), val_psnr=_finite_mean(val_psnr))
    history.append(rec)
    if best is None or rec["val_loss"] < best[1]["val_loss"]:
      best = (state, rec)
    if epoch % int(cfg.log_every) == 0 or epoch == int(cfg.epochs):
      now = time.time()
      rate = steps * bs / max(now - t_epoch, 1e-9)
      eta = (now - t0) / epoch * (int(cfg.epochs) - epoch)
      print(f"[{tag}] epoch {epoch}/{cfg.epochs} train {train_loss:.5f} "
            f"val {rec['val_loss']:.5f} val PSNR {rec['val_psnr']:.2f} dB | "
            f"{rate:.0f} img/s | ETA {format_eta(eta)}", flush=True)
  best_state, best_rec = best

  predict = jax.jit(lambda s, rep: nnx.merge(graphdef, s.params, s.rest)(rep))

  def reconstruct(reps_N: np.ndarray) -> np.ndarray:
    return batched(functools.partial(predict, best_state),
                   int(cfg.eval_batch_size), reps_N)

  info = dict(train_time_s=time.time() - t0, history=history,
              final_train_loss=history[-1]["train_loss"],
              final_val_loss=history[-1]["val_loss"],
              best_epoch=best_rec["epoch"], best_val_loss=best_rec["val_loss"],
              best_val_psnr=best_rec["val_psnr"])
  return reconstruct, info


def build_net(name: str, cfg: ml_collections.ConfigDict,
              rep_shape: tuple[int, ...], image_shape: tuple[int, int, int],
              key: jax.Array) -> inversion_nets.InversionNet:
  """The attack's inversion network (`cfg.net`, `cfg.net_args`) from a leak
  of `rep_shape` to images of `image_shape`."""
  return inversion_nets.build_inversion_net(
      cfg.net, rep_shape, image_shape, dict(cfg.net_args), nnx.Rngs(key),
      field=f"attack.{name}.net")


def run_inversion_attack(name: str, cfg: ml_collections.ConfigDict,
                         model: nnx.Module, splits, evaluator: EvalClassifier,
                         workdir: str | Path, key: jax.Array
                         ) -> dict[str, Any]:
  """Runs one inversion attack (see the module docstring); JSON-ready dict."""
  check_leak(name, cfg.leak, model)
  t0 = time.time()
  k_aux, k_split, k_init, k_train, k_target = jax.random.split(key, 5)
  represent = make_represent(model, cfg.leak)
  aux_reps = query(represent, splits.aux_x, int(cfg.represent_batch_size),
                   k_aux, int(cfg.queries))
  rep_shape = tuple(aux_reps.shape[1:])
  n_aux = len(aux_reps)
  n_val = min(max(1, round(n_aux * float(cfg.val_fraction))), n_aux - 1)
  if n_aux - n_val < 1:
    raise ValueError(f"attack {name}: auxiliary set too small ({n_aux})")
  perm = np.asarray(jax.random.permutation(k_split, n_aux))
  tr, va = perm[n_val:], perm[:n_val]
  norm = standardizer(aux_reps[tr])
  net = build_net(name, cfg, rep_shape, splits.image_shape, k_init)
  print(f"[{name}] leak {cfg.leak} {rep_shape}, net {cfg.net} "
        f"({inversion_nets.count_params(net):,} params), aux train "
        f"{len(tr)} / val {len(va)}", flush=True)
  reconstruct, info = train_inversion(
      net, (norm(aux_reps[tr]), splits.aux_x[tr]),
      (norm(aux_reps[va]), splits.aux_x[va]), cfg, k_train, name)

  n = min(int(cfg.num_images), len(splits.train_x))
  x_true, y_true = splits.train_x[:n], splits.train_y[:n]
  recon = reconstruct(norm(query(represent, x_true,
                                 int(cfg.represent_batch_size), k_target,
                                 int(cfg.queries))))
  evaluated = evaluate_reconstructions(name, cfg, recon, x_true, y_true,
                                       splits.aux_x, evaluator, workdir,
                                       aux_y=splits.aux_y)
  return dict(
      attack=name, leak=dict(name=cfg.leak, shape=list(rep_shape)),
      inversion_net=dict(name=cfg.net, args=dict(cfg.net_args),
                         num_params=inversion_nets.count_params(net)),
      **evaluated, num_aux_train=len(tr), num_aux_val=len(va),
      **info, total_time_s=time.time() - t0, config=cfg.to_dict())
