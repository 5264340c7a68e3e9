"""Adaptive attack: optimise an image until the known target leaks the same.

The white-box attacker (Mahendran & Vedaldi style feature inversion) holds a
copy of the target and, per leaked representation r, solves

    min_x  ||f(x) - r||^2 / ||r||^2  +  tv_weight * TV(x),   x in [0, 1]

with Adam over `x = sigmoid(z)` (the sigmoid keeps pixels in range), from a
neutral start (the mean auxiliary image or flat grey). `f` is the target's own
forward pass up to the leak, so the gradient runs through the unrolled LCA /
FISTA solver (`lca.solve` is a `lax.scan`, differentiable end to end). For
stochastic defenses `f` draws fresh noise every step (expectation over the
defense's randomness). Images are independent (per-sample LCA, eval-mode batch
norm), so a batch is optimised at once.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from sca_jax.attacks import contract
from sca_jax.attacks.contract import ATTACKS, LEAK_DEFAULTS, AttackSpec

INITS = ("mean_aux", "gray")

DEFAULTS = dict(
    leak="first",
    steps=200,
    learning_rate=0.05,   # Adam on the pre-sigmoid image
    tv_weight=0.01,       # total-variation prior (mean |neighbour difference|)
    init="mean_aux",
    num_images=64,        # per-image optimisation: keep small on CPU
    batch_size=64,        # images optimised together
)


def _check(cfg: ml_collections.ConfigDict, where: str) -> None:
  if int(cfg.steps) < 1:
    raise ValueError(f"config.{where}.steps must be >= 1, got {cfg.steps}")
  if not float(cfg.tv_weight) >= 0:
    raise ValueError(f"config.{where}.tv_weight must be >= 0")
  if cfg.init not in INITS:
    raise ValueError(f"config.{where}.init must be one of {INITS}, got "
                     f"{cfg.init!r}")


def total_variation(x_BHWC: jax.Array) -> jax.Array:
  """Per-image mean absolute difference between neighbouring pixels, (B,)."""
  dh = jnp.abs(x_BHWC[:, 1:] - x_BHWC[:, :-1]).mean(axis=(1, 2, 3))
  dw = jnp.abs(x_BHWC[:, :, 1:] - x_BHWC[:, :, :-1]).mean(axis=(1, 2, 3))
  return dh + dw


def matching_loss(z_BHWC: jax.Array, target: jax.Array,
                  rep_fn: Callable[[jax.Array], jax.Array],
                  tv_weight: float) -> tuple[jax.Array, jax.Array]:
  """(summed loss, per-image relative matching error) of x = sigmoid(z)."""
  x = jax.nn.sigmoid(z_BHWC)
  diff = (rep_fn(x) - target).reshape(len(x), -1)
  scale = jnp.sum(jnp.square(target.reshape(len(x), -1)), axis=1) + 1e-8
  match = jnp.sum(jnp.square(diff), axis=1) / scale
  return jnp.sum(match + tv_weight * total_variation(x)), match


def invert(rep_fn: Callable[[jax.Array, jax.Array], jax.Array],
           target: jax.Array, init_x: jax.Array, steps: int,
           learning_rate: float, tv_weight: float, key: jax.Array
           ) -> tuple[np.ndarray, list[float]]:
  """Images whose representation matches `target`; (images, match history).

  `rep_fn(x, key)` is the attacker's differentiable copy of the leak. The
  loop is on the host with a jitted step: convolutions inside `lax.scan` are
  slow on XLA:CPU (see inversion.train_inversion).
  """
  z = jnp.log(jnp.clip(init_x, 0.02, 0.98)) - jnp.log1p(
      -jnp.clip(init_x, 0.02, 0.98))
  z = jnp.broadcast_to(z, target.shape[:1] + z.shape[1:])
  tx = optax.adam(learning_rate)
  opt_state = tx.init(z)

  @jax.jit
  def step(z, opt_state, k):
    fn = lambda x: rep_fn(x, k)
    (_, match), g = jax.value_and_grad(matching_loss, has_aux=True)(
        z, target, fn, tv_weight)
    updates, opt_state = tx.update(g, opt_state, z)
    return optax.apply_updates(z, updates), opt_state, match.mean()

  history = []
  for i in range(int(steps)):
    z, opt_state, m = step(z, opt_state, jax.random.fold_in(key, i))
    history.append(m)
  history = [float(h) for h in jax.device_get(history)]
  return np.asarray(jax.nn.sigmoid(z)), history


def run_feature_inversion(cfg: ml_collections.ConfigDict, model: nnx.Module,
                          splits, evaluator, workdir: str | Path,
                          key: jax.Array, name: str = "feature_inversion"
                          ) -> dict[str, Any]:
  """Inverts the leaked representations of target training images."""
  contract.check_leak(name, cfg.leak, model)
  t0 = time.time()
  k_target, k_opt = jax.random.split(key)
  state, leak_fn = contract.make_leak_fn(model, cfg.leak)
  rep_fn = lambda x, k: leak_fn(state, x, k)
  represent = contract.make_represent(model, cfg.leak)
  n = min(int(cfg.num_images), len(splits.train_x))
  x_true, y_true = splits.train_x[:n], splits.train_y[:n]
  reps = contract.query(represent, x_true, int(cfg.represent_batch_size),
                         k_target, int(cfg.queries))
  if cfg.init == "mean_aux":
    init = splits.aux_x.mean(axis=0, keepdims=True)
  else:
    init = np.full((1, *splits.image_shape), 0.5)
  init = jnp.asarray(init, jnp.float32)
  bs = min(int(cfg.batch_size), n)
  t_opt = time.time()
  recon, history = [], None
  for i in range(0, n, bs):
    r, h = invert(rep_fn, jnp.asarray(reps[i:i + bs]), init, int(cfg.steps),
                  float(cfg.learning_rate), float(cfg.tv_weight),
                  jax.random.fold_in(k_opt, i))
    recon.append(r)
    history = h if history is None else [a + b for a, b in zip(history, h)]
  chunks = -(-n // bs)
  history = [h / chunks for h in history]
  opt_time = time.time() - t_opt
  recon = np.clip(np.concatenate(recon), 0.0, 1.0).astype(np.float32)
  every = max(1, len(history) // 20)
  print(f"[{name}] leak {cfg.leak} {tuple(reps.shape[1:])}: {cfg.steps} Adam "
        f"steps, relative match {history[0]:.4f} -> {history[-1]:.4f} "
        f"({opt_time:.1f} s)", flush=True)
  evaluated = contract.evaluate_reconstructions(
      name, cfg, recon, x_true, y_true, splits.aux_x, evaluator, workdir,
      aux_y=splits.aux_y)
  return dict(
      attack=name, leak=dict(name=cfg.leak, shape=list(reps.shape[1:])),
      inversion_net=dict(name="optimised_input",
                         args=dict(steps=int(cfg.steps),
                                   tv_weight=float(cfg.tv_weight),
                                   init=cfg.init), num_params=0),
      **evaluated, num_aux_train=0, num_aux_val=0, train_time_s=opt_time,
      history=[dict(step=s, match=history[s])
               for s in range(0, len(history), every)],
      initial_match=history[0], final_match=history[-1],
      total_time_s=time.time() - t0, config=cfg.to_dict())


SPEC = ATTACKS.register("feature_inversion")(AttackSpec(
    "feature_inversion",
    "white-box: optimise the input so the known target maps it onto the "
    "leaked representation (gradients through the unrolled LCA solver)",
    {**LEAK_DEFAULTS, **DEFAULTS}, run_feature_inversion, _check))
# The same attacker on the end-to-end leak: through every layer of the target.
SPEC_END_TO_END = ATTACKS.register("feature_inversion_end_to_end")(AttackSpec(
    "feature_inversion_end_to_end",
    "feature_inversion on the last hidden layer's leak (end-to-end threat "
    "model)",
    {**LEAK_DEFAULTS, **DEFAULTS, "leak": "last_hidden"},
    functools.partial(run_feature_inversion,
                      name="feature_inversion_end_to_end"), _check))
