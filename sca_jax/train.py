"""Target training: optax loop, sparse-layer dictionary updates, checkpoints.

The model is split once into a graph definition and states (dictionaries,
other parameters, batch statistics, the rest); the train step is a pure jitted
function `(state, x, y, key) -> (state, metrics)` over those states.

SCA's rule (paper, Sec. 3): after each backprop update, a fast Hebbian
dictionary update on every sparse layer except the first (the one coding the
image), using the codes of the step's forward pass. Backprop into the
dictionaries themselves (footnote 3) is a separate switch. Both are config
choices: `defense.hebbian` and `defense.backprop_dictionaries`.

Defense hooks (see sca_jax.defenses): an extra loss on the forward pass
(`ExtraLoss`), given the batch's slice of any per-sample arrays the defense
attached to its training set as `per_sample=`; a penalty on the trainable
parameters (`ParamLoss`, e.g. elastic weight consolidation); and a gradient
hook (`GradientHook`): given one, the step computes per-example gradients by
vmap (the model must then have no batch statistics) and the hook turns them
into the update's gradient (e.g. DP-SGD's clip + noise, defenses/dp_sgd.py).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx, struct

from sca_jax import batching, checkpoint, lca, parallel
from sca_jax.models import Dictionary, LayerStack

OPTIMIZERS = ("sgd", "adam", "adamw")
# Extra loss of a defense: (logits, reps, x, y, key) -> (scalar, metrics dict);
# called with `per_sample=` (dict of batch arrays) only when the training set
# has per-sample arrays.
ExtraLoss = Callable[..., tuple[jax.Array, dict[str, jax.Array]]]
# Penalty on the trainable parameters (the Param state, not the dictionaries):
# params -> (scalar, metrics dict).
ParamLoss = Callable[[nnx.State], tuple[jax.Array, dict[str, jax.Array]]]
# Aggregation of per-example gradients (leading axis E) into the step's
# gradient: (grads_E, key) -> (grads, metrics dict).
GradientHook = Callable[[Any, jax.Array], tuple[Any, dict[str, jax.Array]]]


@struct.dataclass
class TrainState:
  step: jax.Array
  dicts: nnx.State
  params: nnx.State
  stats: nnx.State
  rest: nnx.State
  opt_state: Any


def make_optimizer(cfg: ml_collections.ConfigDict, num_steps: int
                   ) -> optax.GradientTransformation:
  """optax optimiser from `config.train` (name, learning rate, schedule...)."""
  if cfg.optimizer not in OPTIMIZERS:
    raise ValueError(f"config.train.optimizer must be one of {OPTIMIZERS}, "
                     f"got {cfg.optimizer!r}")
  lr: Any = cfg.learning_rate
  if cfg.get("schedule", "constant") == "cosine":
    lr = optax.cosine_decay_schedule(cfg.learning_rate, max(num_steps, 1))
  if cfg.optimizer == "sgd":
    tx = optax.sgd(lr, momentum=cfg.get("momentum", 0.0) or None)
  elif cfg.optimizer == "adam":
    tx = optax.adam(lr)
  else:
    tx = optax.adamw(lr, weight_decay=cfg.weight_decay)
  if cfg.optimizer != "adamw" and cfg.get("weight_decay", 0.0):
    tx = optax.chain(optax.add_decayed_weights(cfg.weight_decay), tx)
  return tx


class Trainer:
  """Holds the static parts (graph, optimiser, rules) and the jitted steps."""

  def __init__(self, model: LayerStack, defense_cfg: ml_collections.ConfigDict,
               tx: optax.GradientTransformation,
               extra_loss: ExtraLoss | None = None,
               param_loss: ParamLoss | None = None,
               gradient_hook: GradientHook | None = None):
    self.graphdef, dicts, params, stats, rest = nnx.split(
        model, Dictionary, nnx.Param, nnx.BatchStat, ...)
    self.tx = tx
    self.backprop_dicts = bool(defense_cfg.get("backprop_dictionaries", True))
    self.hebbian = bool(defense_cfg.get("hebbian", True))
    self.hebbian_lr = float(defense_cfg.get("hebbian_lr", 0.01))
    self.extra_loss = extra_loss
    self.param_loss = param_loss
    self.gradient_hook = gradient_hook
    if gradient_hook is not None and jax.tree.leaves(stats):
      raise ValueError(f"config.defense.name={defense_cfg.get('name')!r} needs "
                       "per-example gradients: the model must not use batch "
                       "norm (use GroupNorm, 'gn')")
    sparse = model.sparse_layers()
    self.sparse_names = [name for name, _ in sparse]
    # Hebbian targets: every sparse layer but the first (it codes the image).
    # (name, index in model.feature_layers, stride).
    self.hebbian_layers = [
        (name, model.names.index(name), layer.cfg.stride)
        for name, layer in sparse[1:]]
    self.init_state = TrainState(
        step=jnp.zeros((), jnp.int32), dicts=dicts, params=params, stats=stats,
        rest=rest, opt_state=tx.init(self._trainable(params, dicts)))
    self.train_step = jax.jit(self._train_step, donate_argnums=0)
    self.eval_logits = jax.jit(self._eval_logits)

  def _trainable(self, params, dicts):
    return (params, dicts) if self.backprop_dicts else (params, None)

  def model(self, state: TrainState) -> LayerStack:
    return nnx.merge(self.graphdef, state.dicts, state.params, state.stats,
                     state.rest)

  def _loss_fn(self, state: TrainState, trainable, x_BHWC, y_B, key,
               per_sample=None):
    params, dicts = trainable
    # Fresh Variables at this trace level: batch norm writes its statistics.
    frozen = jax.tree.map(lambda v: v, (state.dicts, state.stats, state.rest))
    model = nnx.merge(self.graphdef, frozen[0] if dicts is None else dicts,
                      params, frozen[1], frozen[2])
    logits, reps = model(x_BHWC, train=True, key=key)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y_B).mean()
    metrics = {"ce": loss}
    if self.extra_loss is not None:
      kw = {} if per_sample is None else {"per_sample": per_sample}
      extra, extra_metrics = self.extra_loss(logits, reps, x_BHWC, y_B, key,
                                             **kw)
      loss = loss + extra
      metrics.update(extra_metrics)
    if self.param_loss is not None:
      penalty, penalty_metrics = self.param_loss(params)
      loss = loss + penalty
      metrics.update(penalty_metrics)
    _, _, _, stats, rest = nnx.split(model, Dictionary, nnx.Param,
                                     nnx.BatchStat, ...)
    return loss, (logits, reps, stats, rest, metrics)

  def per_example_grads(self, state: TrainState, x_BHWC, y_B, key,
                        per_sample=None):
    """Gradients of each example's loss, stacked on a leading axis."""
    def one(trainable, x, y, ps):
      ps = None if ps is None else jax.tree.map(lambda a: a[None], ps)
      loss, (logits, _, _, _, metrics) = self._loss_fn(
          state, trainable, x[None], y[None], key, ps)
      return loss, (logits[0], metrics)
    trainable = self._trainable(state.params, state.dicts)
    grads_E, (logits, metrics) = jax.vmap(
        jax.grad(one, has_aux=True), in_axes=(None, 0, 0, 0))(
            trainable, x_BHWC, y_B, per_sample)
    return grads_E, logits, metrics

  def _train_step(self, state: TrainState, x_BHWC, y_B, key, per_sample=None):
    trainable = self._trainable(state.params, state.dicts)
    if self.gradient_hook is None:
      (loss, (logits, reps, stats, rest, metrics)), grads = jax.value_and_grad(
          lambda t: self._loss_fn(state, t, x_BHWC, y_B, key, per_sample),
          has_aux=True)(trainable)
    else:
      grads_E, logits, metrics = self.per_example_grads(state, x_BHWC, y_B,
                                                        key, per_sample)
      grads, hook_metrics = self.gradient_hook(
          grads_E, jax.random.fold_in(key, 0x5EED))
      metrics = {k: v.mean() for k, v in metrics.items()}
      metrics.update(hook_metrics)
      loss, reps = metrics["ce"], {}
      stats, rest = state.stats, state.rest
    updates, opt_state = self.tx.update(grads, state.opt_state, trainable)
    params, dicts = optax.apply_updates(trainable, updates)
    dicts = state.dicts if dicts is None else dicts
    if self.backprop_dicts:
      # Gradient steps leave the unit sphere; atoms are unit-norm by definition.
      dicts = jax.tree.map(lca.normalize_dictionary, dicts)
    if self.hebbian and self.hebbian_layers:
      dicts = self._hebbian(dicts, reps)
    metrics.update(
        loss=loss, accuracy=jnp.mean(jnp.argmax(logits, -1) == y_B),
        **{f"active_{n}": jnp.mean(reps[n] != 0) for n in self.sparse_names})
    new_state = state.replace(step=state.step + 1, dicts=dicts, params=params,
                              stats=stats, rest=rest, opt_state=opt_state)
    return new_state, metrics

  def _hebbian(self, dicts: nnx.State, reps) -> nnx.State:
    pure = nnx.to_pure_dict(dicts)
    for name, idx, stride in self.hebbian_layers:
      D = pure["feature_layers"][idx]["dictionary"]
      pure["feature_layers"][idx]["dictionary"] = lca.hebbian_update(
          D, reps[f"{name}_input"], reps[name], self.hebbian_lr, stride)
    nnx.replace_by_pure_dict(dicts, pure)
    return dicts

  def _eval_logits(self, state: TrainState, x_BHWC, key):
    return self.model(state)(x_BHWC, train=False, key=key)[0]

  def evaluate(self, state: TrainState, x_BHWC: np.ndarray, y_B: np.ndarray,
               batch_size: int, key: jax.Array | None = None) -> float:
    """Accuracy in eval mode; `key` draws inference-time noise, if any."""
    key = jax.random.key(0) if key is None else key
    correct = 0
    for i in range(0, len(x_BHWC), batch_size):
      logits = self.eval_logits(state, x_BHWC[i:i + batch_size],
                                jax.random.fold_in(key, i))
      correct += int(jnp.sum(jnp.argmax(logits, -1) == y_B[i:i + batch_size]))
    return correct / max(len(x_BHWC), 1)


def format_eta(seconds: float) -> str:
  """`1h02m03s` / `2m03s`: durations in progress lines (training, attacks)."""
  m, s = divmod(int(seconds), 60)
  h, m = divmod(m, 60)
  return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def fit(trainer: Trainer, train_cfg: ml_collections.ConfigDict,
        x_NHWC: np.ndarray, y_N: np.ndarray, workdir: Path, key: jax.Array,
        seed: int, log: Callable[[str], None] = print,
        per_sample: dict[str, np.ndarray] | None = None,
        fingerprint: Any = None) -> tuple[TrainState, dict]:
  """Trains for `train_cfg.epochs`, resuming from the workdir's checkpoints.

  `per_sample`: arrays with the training set's leading axis, batched with it
  and passed to the trainer's extra loss (a defense's per-sample data).
  `fingerprint`: the experiment's, stored with each checkpoint; only
  checkpoints with the same one are resumed.

  Raises:
    checkpoint.TrainingDiverged: the loss (checked every `log_every` steps)
      or the state (checked before each save) is not finite; the run's files
      were set aside (`checkpoint.stop_diverged`).
  """
  bs = int(train_cfg.batch_size)
  if len(x_NHWC) // bs < 1:
    raise ValueError(f"config.train.batch_size={bs} exceeds the {len(x_NHWC)} "
                     "training images")
  num_steps = len(x_NHWC) // bs * int(train_cfg.epochs)
  mesh = parallel.data_mesh(train_cfg.get("num_devices", None))
  parallel.check_batch_size(bs, mesh)
  ckpt = checkpoint.Checkpointer(workdir / "checkpoints",
                                 max_to_keep=int(train_cfg.get("keep", 2)),
                                 fingerprint=fingerprint, log=log)
  # A copy: the step donates its input state, and init_state is reused.
  state, start = jax.tree.map(jnp.copy, trainer.init_state), 0
  restored = ckpt.restore_latest(state)
  if restored is not None:
    state, start = restored, int(restored.step)
    log(f"resumed from checkpoint at step {start}/{num_steps}")
  state = parallel.replicate(mesh, state)
  every = int(train_cfg.checkpoint_every)
  log_every = int(train_cfg.log_every)
  metrics_path = workdir / "train_metrics.jsonl"
  checkpoint.truncate_metrics(metrics_path, start)  # steps after are redone
  t0, t_last, step_last = time.time(), time.time(), start
  # Per-epoch order from (seed, epoch): a resumed run sees the same batches.
  for step, epoch, idx in batching.step_batches(len(x_NHWC), bs, seed, start,
                                                num_steps):
    x, y = parallel.shard_batch(mesh, x_NHWC[idx], y_N[idx])
    kw = {}
    if per_sample:
      names = sorted(per_sample)
      kw["per_sample"] = dict(zip(names, parallel.shard_batch(
          mesh, *(per_sample[k][idx] for k in names))))
    state, metrics = trainer.train_step(state, x, y,
                                        jax.random.fold_in(key, step), **kw)
    done = step + 1
    if done % log_every == 0 or done == num_steps:
      metrics = {k: float(v) for k, v in metrics.items()}
      if not np.isfinite(metrics["loss"]):
        raise checkpoint.stop_diverged(
            workdir, ckpt, f"training loss is {metrics['loss']} at step {done}")
      now = time.time()
      rate = (done - step_last) / max(now - t_last, 1e-9)
      t_last, step_last = now, done
      log(f"step {done}/{num_steps} epoch {epoch + 1} loss {metrics['loss']:.4f}"
          f" acc {metrics['accuracy']:.3f} | {rate:.2f} steps/s "
          f"{rate * bs:.0f} img/s | ETA {format_eta((num_steps - done) / rate)}")
      with metrics_path.open("a") as f:
        f.write(json.dumps({"step": done, "epoch": epoch + 1, **metrics}) + "\n")
    if done % every == 0 or done == num_steps:
      if not checkpoint.all_finite(state):
        raise checkpoint.stop_diverged(
            workdir, ckpt, f"the train state holds NaN or inf at step {done}")
      ckpt.save(done, state)
  ckpt.wait()
  info = {"num_steps": num_steps, "steps_this_run": num_steps - start,
          "train_time_s": time.time() - t0, "resumed_from_step": start}
  return state, info
