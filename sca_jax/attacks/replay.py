"""The paper's attack replayed: the authors' loop, whose attacker never learns.

In the authors' MNIST script (`MNIST/mnist_etn_lca2.py` as first uploaded to
the public SCA code), `attack_train` steps the optimiser built for the
TARGET (`SGD(target_model.parameters(), lr=1e-3, momentum=0.9,
weight_decay=1e-3)`), not one over the attacker. So for 50 epochs over the
held-out data (batch 16) the attack loss `mean((x - attacker(leak(x)))^2)`
fine-tunes the target's parameters through its leak, while the inversion
network keeps its random initialisation; `attack_test` then scores that
untrained network's outputs on the fine-tuned target's leaks of the training
images. The paper's tables come from this loop (docs/threat_models.md).

Replayed here with the shared machinery of `inversion.py` (leak function,
queries, loss, scoring, floors):
  * a COPY of the target is fine-tuned (`nnx.clone`); the target passed in is
    only read. Its trainable parameters are what the authors' optimiser held:
    every `nnx.Param` except sparse-coding dictionaries (lcapt's dictionaries
    do not require gradients, so their SGD never touched them); the target
    runs in eval mode (batch-norm running averages), as after their
    `target_utility` call;
  * the inversion network runs in training mode throughout, as theirs was
    never switched to eval: batch norm normalises with each batch's
    statistics, also when reconstructing; its parameters never change;
  * the raw leak feeds the net (no standardisation: theirs had none);
  * departures: a fresh SGD state (theirs carried the target-training
    momentum over), float32 (theirs float16), images in [0, 1] through a
    sigmoid (theirs normalised, no sigmoid), our inversion nets (theirs a
    small transposed-conv net); none of these gives the net a way to learn.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from sca_jax.attacks import contract
from sca_jax.attacks import inversion
from sca_jax.attacks import inversion_nets
from sca_jax.evaluation import EvalClassifier, batched
from sca_jax.models import Dictionary

# The authors' loop: their target optimiser, 50 epochs at the test loader's
# batch 16 (the CPU default keeps COMMON_DEFAULTS' epochs and batch size).
REPLAY_DEFAULTS = dict(learning_rate=1e-3, momentum=0.9, weight_decay=1e-3)
# What the authors' optimiser held: the target's parameters, not dictionaries.
TARGET_PARAMS = nnx.All(nnx.Param, nnx.Not(Dictionary))


def _check(cfg: ml_collections.ConfigDict, where: str) -> None:
  inversion.check_fields(cfg, where)
  if not 0 <= float(cfg.momentum) < 1:
    raise ValueError(f"config.{where}.momentum must be in [0, 1), got "
                     f"{cfg.momentum}")
  if float(cfg.weight_decay) < 0:
    raise ValueError(f"config.{where}.weight_decay must be >= 0, got "
                     f"{cfg.weight_decay}")


def _sgd(cfg: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """torch.optim.SGD(lr, momentum, weight_decay): decay added to the grad."""
  return optax.chain(optax.add_decayed_weights(float(cfg.weight_decay)),
                     optax.sgd(float(cfg.learning_rate),
                               momentum=float(cfg.momentum) or None))


def replay_authors_loop(model: nnx.Module, net: inversion_nets.InversionNet,
                        aux_x: np.ndarray, cfg: ml_collections.ConfigDict,
                        key: jax.Array, tag: str = "replay"
                        ) -> tuple[nnx.Module, nnx.Module, dict[str, Any]]:
  """The authors' `attack_train`: the attack loss steps the target's copy.

  Returns (fine-tuned target copy, inversion net, info); `model` is left
  untouched, the net's parameters are never updated (its batch statistics
  move, as in training mode).
  """
  target = nnx.clone(model)
  state, leak_fn = contract.make_leak_fn(target, cfg.leak)
  params, frozen = nnx.split_state(state, TARGET_PARAMS, ...)
  net_graphdef, net_params, net_rest = nnx.split(net, nnx.Param, ...)
  tx = _sgd(cfg)

  @jax.jit
  def step(params, opt_state, net_rest, x, key):
    def loss_fn(p):
      rep = leak_fn(nnx.merge_state(p, frozen), x, key)
      rest = jax.tree.map(lambda v: v, net_rest)  # fresh: BN writes stats
      attacker = nnx.merge(net_graphdef, net_params, rest)
      loss = inversion.per_image_loss(attacker.logits(rep, train=True), x,
                                      cfg.loss).mean()
      return loss, nnx.state(attacker, nnx.Not(nnx.Param))

    (loss, net_rest), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, net_rest, loss

  start = [np.asarray(v) for v in jax.tree.leaves(params)]
  opt_state = tx.init(params)
  bs = min(int(cfg.batch_size), len(aux_x))
  steps = len(aux_x) // bs
  rng = np.random.default_rng(np.asarray(jax.random.key_data(key)))
  history, t0 = [], time.time()
  for epoch in range(1, int(cfg.epochs) + 1):
    perm = rng.permutation(len(aux_x))
    losses = []
    for i in range(steps):
      idx = perm[i * bs:(i + 1) * bs]
      params, opt_state, net_rest, loss = step(
          params, opt_state, net_rest, aux_x[idx],
          jax.random.fold_in(key, epoch * steps + i))
      losses.append(loss)
    history.append(dict(epoch=epoch,
                        train_loss=float(jnp.mean(jnp.stack(losses)))))
    if epoch % int(cfg.log_every) == 0 or epoch == int(cfg.epochs):
      print(f"[{tag}] epoch {epoch}/{cfg.epochs} attack loss "
            f"{history[-1]['train_loss']:.5f} (target fine-tuned, inversion "
            "net untouched)", flush=True)
  moved = _relative_change(start, jax.tree.leaves(params))
  nnx.update(target, params)
  nnx.update(net, net_rest)
  return target, net, dict(history=history, train_time_s=time.time() - t0,
                           target_relative_change=moved)


def _relative_change(a: list[np.ndarray], b: list[jax.Array]) -> float:
  """||b - a|| / ||a|| over all leaves."""
  diff = sum(float(np.sum(np.square(np.asarray(y) - x))) for x, y in zip(a, b))
  norm = sum(float(np.sum(np.square(x))) for x in a)
  return float(np.sqrt(diff / max(norm, 1e-30)))


def _accuracy(model: nnx.Module, x: np.ndarray, y: np.ndarray,
              batch_size: int) -> float:
  graphdef, state = nnx.split(model)
  logits = jax.jit(lambda s, b: nnx.merge(graphdef, s)(b, train=False)[0])
  pred = batched(functools.partial(logits, state), batch_size, x).argmax(-1)
  return float(np.mean(pred == y))


def _reconstruct_in_train_mode(net: nnx.Module, reps: np.ndarray,
                               batch_size: int) -> np.ndarray:
  """The net as their `attack_test` ran it: training-mode batch norm over
  each unpadded batch (so a batch's statistics are its own images')."""
  graphdef, net_state = nnx.split(net)
  fn = jax.jit(lambda s, r: jax.nn.sigmoid(
      nnx.merge(graphdef, s).logits(r, train=True)))
  return np.concatenate([np.asarray(fn(net_state, reps[i:i + batch_size]))
                         for i in range(0, len(reps), batch_size)])


def run_replay(name: str, cfg: ml_collections.ConfigDict, model: nnx.Module,
               splits, evaluator: EvalClassifier, workdir: str | Path,
               key: jax.Array) -> dict[str, Any]:
  """Runs the replayed loop, then scores it as every attack is scored."""
  contract.check_leak(name, cfg.leak, model)
  t0 = time.time()
  k_init, k_loop, k_target = jax.random.split(key, 3)
  bs_eval = int(cfg.eval_batch_size)
  rep_shape = tuple(contract.make_represent(model, cfg.leak)(
      splits.aux_x[:1], k_target).shape[1:])
  net = inversion.build_net(name, cfg, rep_shape, splits.image_shape, k_init)
  print(f"[{name}] the authors' loop: leak {cfg.leak} {rep_shape}, net "
        f"{cfg.net} ({inversion_nets.count_params(net):,} params, never "
        f"trained), {len(splits.aux_x)} auxiliary images", flush=True)
  tuned, net, info = replay_authors_loop(model, net, splits.aux_x, cfg,
                                         k_loop, name)
  n = min(int(cfg.num_images), len(splits.train_x))
  x_true, y_true = splits.train_x[:n], splits.train_y[:n]
  reps = contract.query(contract.make_represent(tuned, cfg.leak), x_true,
                         int(cfg.represent_batch_size), k_target,
                         int(cfg.queries))
  recon = _reconstruct_in_train_mode(net, reps, int(cfg.batch_size))
  evaluated = contract.evaluate_reconstructions(
      name, cfg, recon, x_true, y_true, splits.aux_x, evaluator, workdir,
      aux_y=splits.aux_y)
  accuracy = dict(
      before=_accuracy(model, splits.test_x, splits.test_y, bs_eval),
      after=_accuracy(tuned, splits.test_x, splits.test_y, bs_eval))
  print(f"[{name}] target test accuracy {accuracy['before']:.4f} -> "
        f"{accuracy['after']:.4f} after the attack loop fine-tuned it "
        f"(relative change {info['target_relative_change']:.4f})", flush=True)
  return dict(
      attack=name, leak=dict(name=cfg.leak, shape=list(rep_shape)),
      inversion_net=dict(name=cfg.net, args=dict(cfg.net_args),
                         num_params=inversion_nets.count_params(net),
                         trained=False),
      replay_of="authors' attack_train: optimiser over the target",
      target_test_accuracy=accuracy, **evaluated, **info,
      num_aux_train=len(splits.aux_x), total_time_s=time.time() - t0,
      config=cfg.to_dict())


def register_replay(name: str, leak: str, description: str
                    ) -> contract.AttackSpec:
  return contract.ATTACKS.register(name)(contract.AttackSpec(
      name, description, {**contract.LEAK_DEFAULTS,
                           **inversion.INVERSION_DEFAULTS, "leak": leak,
                           **REPLAY_DEFAULTS},
      functools.partial(run_replay, name), check=_check,
      paper_overrides=inversion.PAPER_OVERRIDES))


END_TO_END = register_replay(
    "end_to_end_replay", "last_hidden",
    "the authors' loop on the last hidden layer's leak (target fine-tuned, "
    "inversion net left at initialisation)")
SPLIT = register_replay(
    "split_replay", "first_linear",
    "the authors' loop on the first linear layer's leak (target fine-tuned, "
    "inversion net left at initialisation)")
