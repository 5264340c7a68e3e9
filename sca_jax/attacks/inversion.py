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

The target is split once with `nnx.split`; `make_represent` closes over its
state in a jitted function, so no gradient, optimiser or update can reach it.
Unlike the authors' code (PAPER_PROTOCOL.md: their optimiser held the target's
parameters, so the inversion net never trained), the inversion net is trained.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
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

from sca_jax import leakage
from sca_jax import metrics
from sca_jax.attacks import grid as grid_lib
from sca_jax.attacks import inversion_nets
from sca_jax.evaluation import EvalClassifier, batched, with_defaults
from sca_jax.registry import Registry

LOSSES = ("mse", "bce")

# Every field of `config.attack.<name>`, with the shared defaults; each attack
# overrides a few (`AttackSpec.defaults`). The paper trains 50 epochs at batch
# 16 (`PAPER_OVERRIDES`); the default is sized for CPU runs.
COMMON_DEFAULTS = dict(
    leak="last_hidden",       # a name from model.representation_names()
    net="deconv",             # a name from INVERSION_NETS
    net_args={},              # keyword settings of the net (see inversion_nets)
    epochs=20,
    batch_size=64,
    learning_rate=1e-3,       # Adam
    loss="mse",               # or "bce" (on the net's pre-sigmoid output)
    val_fraction=0.1,         # of the auxiliary set, for model selection
    num_images=512,           # first N target training images reconstructed
    grid_per_group=4,         # images per highest/median/lowest group; 0: none
    represent_batch_size=256,  # target queries per call
    eval_batch_size=256,
    log_every=1,              # epochs between progress lines
    # Leaked outputs averaged per input, each with a fresh key: against
    # defenses that add fresh noise at inference (1: one query per input).
    queries=1,
)
PAPER_OVERRIDES = dict(epochs=50, batch_size=16)
# Queries per input of the `*_averaged` attacks: noise std / 4.
AVERAGED_QUERIES = 16

ATTACKS: Registry = Registry("attack")


@dataclasses.dataclass(frozen=True)
class AttackSpec:
  """A registered attack: its defaults over `COMMON_DEFAULTS` and runner."""
  name: str
  description: str
  defaults: dict[str, Any]
  run: Callable[..., dict[str, Any]]
  # Checks the attack's own fields: `check(cfg, where)` raises ValueError.
  check: Callable[[ml_collections.ConfigDict, str], None] | None = None
  # Checks the attack against the target before any compute:
  # `check_model(cfg, model, where)` raises ValueError.
  check_model: Callable[[ml_collections.ConfigDict, nnx.Module, str],
                        None] | None = None


def register_inversion_attack(name: str, description: str,
                              **defaults: Any) -> AttackSpec:
  """Registers `name` and its adaptive variant `<name>_averaged`, which
  averages AVERAGED_QUERIES leaked outputs per input (against defenses that
  add fresh noise at inference)."""
  def register(n: str, d: str, extra: dict[str, Any]) -> AttackSpec:
    return ATTACKS.register(n)(AttackSpec(
        n, d, {**defaults, **extra},
        functools.partial(run_inversion_attack, n)))

  register(f"{name}_averaged", f"{description}, each the mean of "
           f"{AVERAGED_QUERIES} queries", {"queries": AVERAGED_QUERIES})
  return register(name, description, {})


def attack_config(name: str, overrides: Any = None
                  ) -> ml_collections.ConfigDict:
  """`config.attack.<name>` over the attack's defaults, checked (no model)."""
  spec = ATTACKS.get(name, field="attacks")
  where = f"attack.{name}"
  cfg = with_defaults({**COMMON_DEFAULTS, **spec.defaults}, overrides, where)
  if not isinstance(cfg.leak, str) or not cfg.leak:
    raise ValueError(f"config.{where}.leak must be a representation name")
  inversion_nets.check_net_args(cfg.net, dict(cfg.net_args), f"{where}.net")
  for key in ("epochs", "batch_size", "num_images", "represent_batch_size",
              "eval_batch_size", "log_every", "queries"):
    if int(cfg[key]) < 1:
      raise ValueError(f"config.{where}.{key} must be >= 1, got {cfg[key]}")
  if int(cfg.num_images) < 2:
    raise ValueError(f"config.{where}.num_images must be >= 2 (FID needs a "
                     f"covariance), got {cfg.num_images}")
  if int(cfg.grid_per_group) < 0:
    raise ValueError(f"config.{where}.grid_per_group must be >= 0")
  if not float(cfg.learning_rate) > 0:
    raise ValueError(f"config.{where}.learning_rate must be > 0")
  if cfg.loss not in LOSSES:
    raise ValueError(f"config.{where}.loss must be one of {LOSSES}, got "
                     f"{cfg.loss!r}")
  if not 0 < float(cfg.val_fraction) < 1:
    raise ValueError(f"config.{where}.val_fraction must be in (0, 1), got "
                     f"{cfg.val_fraction}")
  if spec.check is not None:
    spec.check(cfg, where)
  return cfg


def check_leak(name: str, leak: str, model: nnx.Module) -> None:
  allowed = list(model.representation_names())
  if leak not in allowed:
    raise ValueError(f"config.attack.{name}.leak: {leak!r} is not a "
                     f"representation of this model; allowed: {allowed}")


Represent = Callable[[jax.Array, jax.Array], jax.Array]


def make_leak_fn(model: nnx.Module, leak: str | None
                 ) -> tuple[nnx.State, Callable[..., jax.Array]]:
  """`(state, leak_fn(state, x_BHWC, key) -> rep)`, pure and differentiable.

  `leak` None: every representation, as a dict.

  Stochastic defenses get the key, so the attacker sees whatever the deployed
  model emits for that query: through a method `leaked_representations(x_BHWC,
  key) -> dict` if the model has one, else through a `key` argument of
  `__call__` if it takes one; otherwise the key is unused. Eval mode (batch
  norm running averages, no dropout). Adaptive attacks differentiate it.
  """
  graphdef, state = nnx.split(model)
  emits = hasattr(model, "leaked_representations")
  takes_key = "key" in inspect.signature(type(model).__call__).parameters

  def leak_fn(state, x_BHWC, key):
    target = nnx.merge(graphdef, state)
    if emits:
      reps = target.leaked_representations(x_BHWC, key)
    elif takes_key:
      _, reps = target(x_BHWC, train=False, key=key)
    else:
      _, reps = target(x_BHWC, train=False)
    return reps if leak is None else reps[leak]

  return state, leak_fn


def make_represent(model: nnx.Module, leak: str) -> Represent:
  """`represent(x_BHWC, key) -> rep`: what the frozen target leaks.

  The target's state is captured here once and only read (see
  `make_leak_fn`); no gradient can flow back into it.
  """
  state, leak_fn = make_leak_fn(model, leak)
  represent = jax.jit(lambda s, x, k: jax.lax.stop_gradient(leak_fn(s, x, k)))
  return functools.partial(represent, state)


def query(represent: Represent, x_BHWC: np.ndarray, batch_size: int,
          key: jax.Array, queries: int = 1) -> np.ndarray:
  """Leaked representations of `x_BHWC`, one fresh key per query batch.

  With `queries` k > 1 every input is queried k times, with keys
  `fold_in(batch key, j)`, and the outputs averaged: fresh zero-mean noise
  added at inference shrinks by sqrt(k) (the query-averaging adaptive attack).
  """
  counter = iter(range(len(x_BHWC)))
  k = int(queries)
  if k < 1:
    raise ValueError(f"queries must be >= 1, got {queries}")

  def one_batch(xb):
    batch_key = jax.random.fold_in(key, next(counter))
    if k == 1:
      return represent(xb, batch_key)
    total = represent(xb, jax.random.fold_in(batch_key, 0))
    for j in range(1, k):
      total = total + represent(xb, jax.random.fold_in(batch_key, j))
    return total / k

  return batched(one_batch, batch_size, x_BHWC)


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
    perm = rng.permutation(len(x))
    losses = []
    for i in range(steps):
      idx = perm[i * bs:(i + 1) * bs]
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
      rate = steps * bs / max(time.time() - t_epoch, 1e-9)
      print(f"[{tag}] epoch {epoch}/{cfg.epochs} train {train_loss:.5f} "
            f"val {rec['val_loss']:.5f} val PSNR {rec['val_psnr']:.2f} dB "
            f"({rate:.0f} img/s)", flush=True)
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


def score(recon_NHWC: np.ndarray, x_NHWC: np.ndarray, y_N: np.ndarray,
          evaluator: EvalClassifier, feats_true: np.ndarray | None = None
          ) -> tuple[dict[str, Any], np.ndarray]:
  """PSNR, SSIM (per image), FID and attack accuracy of a reconstruction set."""
  metrics.check_unit_range(recon_NHWC, "reconstructions")
  psnr = np.asarray(metrics.psnr(recon_NHWC, x_NHWC))
  ssim = np.asarray(metrics.ssim(recon_NHWC, x_NHWC))
  if feats_true is None:
    feats_true = evaluator.features(x_NHWC)
  fid = metrics.fid_from_features(feats_true, evaluator.features(recon_NHWC))
  correct = evaluator.correct(recon_NHWC, y_N).astype(np.float64)
  return dict(psnr=metrics.summarize(psnr), ssim=metrics.summarize(ssim),
              fid=fid, attack_accuracy=metrics.summarize(correct)), psnr


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
  net = inversion_nets.build_inversion_net(
      cfg.net, rep_shape, splits.image_shape, dict(cfg.net_args),
      nnx.Rngs(k_init), field=f"attack.{name}.net")
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


def evaluate_reconstructions(name: str, cfg: ml_collections.ConfigDict,
                             recon: np.ndarray, x_true: np.ndarray,
                             y_true: np.ndarray, aux_x: np.ndarray,
                             evaluator: EvalClassifier, workdir: str | Path,
                             *, aux_y: np.ndarray) -> dict[str, Any]:
  """Scores, floors, re-identification and picture of one reconstruction set.

  Returns psnr, ssim, fid, attack_accuracy, reidentification (pixel, feature,
  chance), floors (mean_image, class_mean_image, retrieval_oracle: each with
  the same metrics, see `sca_jax.leakage`), floor (= floors["mean_image"],
  kept for older readers), fid_feature_network, eval_classifier, num_images
  and grid: the part of an attack's results that every attack (learned or
  adaptive) reports the same way.
  """
  n = len(x_true)
  feats_true = evaluator.features(x_true)
  scores, psnr = score(recon, x_true, y_true, evaluator, feats_true)
  # Per-image leakage and three floors (sca_jax.leakage).
  scores["reidentification"] = leakage.reidentification(
      recon, x_true, evaluator.features, feats_true)
  floors = leakage.floors(x_true, y_true, aux_x, aux_y, evaluator, score,
                          feats_true)
  floor = dict(floors["mean_image"], name="mean_aux_image")

  grid = None
  if int(cfg.grid_per_group):
    path = Path(workdir) / "attacks" / f"{name}.png"
    shown = grid_lib.save_grid(
        path, x_true, recon, psnr, int(cfg.grid_per_group),
        title=f"{name}: leak {cfg.leak}, PSNR {scores['psnr']['mean']:.2f} dB "
              f"(mean-image floor {floor['psnr']['mean']:.2f} dB)")
    grid = dict(path=str(path), indices=shown)
  print(f"[{name}] PSNR {scores['psnr']['mean']:.2f} dB (floor "
        f"{floor['psnr']['mean']:.2f}), SSIM {scores['ssim']['mean']:.3f} "
        f"(floor {floor['ssim']['mean']:.3f}), FID {scores['fid']:.2f} (floor "
        f"{floor['fid']:.2f}), attack acc "
        f"{scores['attack_accuracy']['mean']:.3f} (floor "
        f"{floor['attack_accuracy']['mean']:.3f}), re-id pixel "
        f"{scores['reidentification']['pixel']:.3f} / feature "
        f"{scores['reidentification']['feature']:.3f} (chance {1 / n:.4f}, "
        f"oracle {floors['retrieval_oracle']['reidentification']['pixel']:.3f}"
        ")", flush=True)
  return dict(**scores, floor=floor, floors=floors,
              fid_feature_network=evaluator.name,
              eval_classifier=evaluator.info(), num_images=n, grid=grid)
