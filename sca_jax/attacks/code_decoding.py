"""Adaptive attack: decode leaked sparse codes with the known dictionary.

An attacker who knows the target (white box: dictionaries, batch norm
statistics) and sees a sparse layer's codes needs no learned inversion: the
codes were chosen so that `D * a` reconstructs the layer's input. The attack
walks back from the leaked layer to the image:

  lca    decode the codes, `lca.decode(a, D, stride, in_hw)`; if the layer
         standardised each sample first, undo that with the average per-sample
         mean and std of its input over the attacker's auxiliary images;
  bn     invert the eval-mode affine map with the running statistics;
  relu   identity (the codes are already non-negative);
  dropout  identity (the frozen target runs in eval mode);
  laplace  identity (zero-mean inference noise; see `queries`).

Any other layer kind on the way (conv, pool) stops it: the leak is
not a sparse code. The first layer standardises the image per sample, so the
decoded image has the right shape but not its background or contrast; a
calibration fitted by least squares on the auxiliary set maps it back to
pixel space ("affine_per_pixel": y_p = a_p d_p + b_p; "ridge": a linear map
of the whole decoded image; "none": per-image min-max rescaling, for
reference). This is the attack of the issue "Adaptive attacks: every defense
faces an attacker who knows it".
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from sca_jax import lca
from sca_jax import metrics
from sca_jax.attacks import contract
from sca_jax.attacks.contract import ATTACKS, LEAK_DEFAULTS, AttackSpec
from sca_jax.evaluation import batched

CALIBRATIONS = ("affine_per_pixel", "none", "ridge")
# Layer kinds walked back through; "laplace" (additive zero-mean noise, a
# defense) is passed as identity: query averaging is what shrinks it.
_WALKABLE = ("lca", "bn", "relu", "dropout", "laplace")
_IDENTITY = ("relu", "dropout", "laplace")
_STAT_IMAGES = 512  # auxiliary images for the per-sample input statistics

DEFAULTS = dict(
    leak="first",
    calibration="affine_per_pixel",
    # Shrinkage of the calibration, relative to the mean feature variance.
    ridge_lambda=1e-3,
)


def _check(cfg: ml_collections.ConfigDict, where: str) -> None:
  if cfg.calibration not in CALIBRATIONS:
    raise ValueError(f"config.{where}.calibration must be one of "
                     f"{CALIBRATIONS}, got {cfg.calibration!r}")
  if not float(cfg.ridge_lambda) >= 0:
    raise ValueError(f"config.{where}.ridge_lambda must be >= 0")


def _layer_index(model: nnx.Module, leak: str) -> int | None:
  """Index into model.names of the layer whose output `leak` is, or None."""
  names = list(getattr(model, "names", ()))
  if leak == "first" and names:
    return int(getattr(model.spec, "first_index", 0))
  return names.index(leak) if leak in names else None


def _walk(model: nnx.Module, i: int) -> list[int] | None:
  """Layers i, i-1, ..., 0 if all are invertible and one is sparse."""
  kinds = getattr(model, "kinds", ())
  path = list(range(i, -1, -1))
  if all(kinds[j] in _WALKABLE for j in path) and "lca" in kinds[:i + 1]:
    return path
  return None


def decodable_leaks(model: nnx.Module) -> list[str]:
  """Representation names this attack can decode (sparse codes, BN'd codes)."""
  names = list(getattr(model, "names", ()))
  return [n for i, n in enumerate(names) if _walk(model, i)]


def check_decodable(model: nnx.Module, leak: str, where: str) -> list[int]:
  allowed = decodable_leaks(model)
  i = _layer_index(model, leak)
  path = None if i is None else _walk(model, i)
  if path is None:
    why = ("the target has no sparse coding layer" if not allowed else
           "it is not a sparse code (or a batch norm / ReLU of one)")
    raise ValueError(f"config.{where}.leak: cannot decode {leak!r}: {why}; "
                     f"decodable leaks: {allowed}")
  return path


def _invert_bn(bn: nnx.BatchNorm, y: jax.Array) -> jax.Array:
  """x from y = (x - mean) / sqrt(var + eps) * scale + bias (eval mode)."""
  scale = bn.scale.get_value() if bn.scale is not None else 1.0
  bias = bn.bias.get_value() if bn.bias is not None else 0.0
  # Guard near-zero scales (a dead channel carries nothing to invert).
  scale = jnp.where(jnp.abs(scale) < 1e-6, 1e-6, scale)
  std = jnp.sqrt(bn.var.get_value() + bn.epsilon)
  return (y - bias) / scale * std + bn.mean.get_value()


def make_decoder(model: nnx.Module, leak: str, aux_x: np.ndarray,
                 where: str = "attack.code_decoding"
                 ) -> Callable[[jax.Array], jax.Array]:
  """`decode(leaked_rep) -> image-shaped estimate` in the first layer's
  (standardised) input space, before calibration."""
  path = check_decodable(model, leak, where)
  probe = jnp.asarray(aux_x[:_STAT_IMAGES])
  state, emit = contract.make_leak_fn(model, None)
  key = jax.random.key(0)
  # Shapes without compute; the forward pass only where statistics are needed.
  reps = jax.eval_shape(emit, state, probe, key)
  if any(model.kinds[j] == "lca" and j > 0 and
         model.feature_layers[j].cfg.normalize_input for j in path):
    reps = jax.jit(emit)(state, probe, key)
  steps = []
  for j in path:
    kind, name = model.kinds[j], model.names[j]
    layer = model.feature_layers[j]
    if kind == "lca":
      D = layer.dictionary.get_value()
      cfg = layer.cfg
      in_hw = tuple(reps[f"{name}_input"].shape[1:3])
      unstd = None
      if cfg.normalize_input and j > 0:
        prev = np.asarray(reps[model.names[j - 1]])
        axes = (1, 2, 3)
        unstd = (float(prev.mean(axis=axes).mean()),
                 float(prev.std(axis=axes).mean()))
      steps.append(("lca", (D, cfg, in_hw, unstd)))
    elif kind == "bn":
      steps.append(("bn", layer))
  nonneg = {j: model.feature_layers[j].cfg.threshold == "soft_nonneg"
            for j in path if model.kinds[j] == "lca"}

  def decode(rep: jax.Array) -> jax.Array:
    h = rep
    for (kind, arg), j in zip(steps, [j for j in path
                                      if model.kinds[j] not in _IDENTITY]):
      if kind == "bn":
        h = _invert_bn(arg, h)
        below = j - 1
        if below in nonneg and nonneg[below]:
          h = jax.nn.relu(h)  # codes below are non-negative: project back
      else:
        D, cfg, in_hw, unstd = arg
        h = lca.decode(h, D, cfg.stride, in_hw)
        if unstd is not None:
          h = h * unstd[1] + unstd[0]
    return h

  return jax.jit(decode)


def fit_calibration(decoded_N: np.ndarray, x_N: np.ndarray, kind: str,
                    ridge_lambda: float = 1e-3
                    ) -> tuple[Callable[[np.ndarray], np.ndarray], int]:
  """Least-squares map decoded -> image on the auxiliary set; (fn, #params)."""
  shape = x_N.shape[1:]
  d = decoded_N.reshape(len(decoded_N), -1).astype(np.float64)
  y = x_N.reshape(len(x_N), -1).astype(np.float64)
  if kind == "none":
    def minmax(dec):
      f = dec.reshape(len(dec), -1)
      lo, hi = f.min(axis=1, keepdims=True), f.max(axis=1, keepdims=True)
      return ((f - lo) / np.maximum(hi - lo, 1e-8)).reshape(dec.shape)
    return minmax, 0
  if kind == "affine_per_pixel":
    dm, ym = d.mean(axis=0), y.mean(axis=0)
    var = d.var(axis=0)
    cov = ((d - dm) * (y - ym)).mean(axis=0)
    a = cov / (var + ridge_lambda * var.mean() + 1e-12)
    b = ym - a * dm
    fn = lambda dec: (dec.reshape(len(dec), -1) * a + b).reshape(
        (len(dec), *shape))
    return fn, 2 * a.size
  if kind == "ridge":
    X = np.concatenate([d, np.ones((len(d), 1))], axis=1)
    gram = X.T @ X
    reg = ridge_lambda * np.trace(gram) / len(gram)
    W = np.linalg.solve(gram + reg * np.eye(len(gram)), X.T @ y)
    fn = lambda dec: (np.concatenate(
        [dec.reshape(len(dec), -1), np.ones((len(dec), 1))], axis=1) @ W
                      ).reshape((len(dec), *shape))
    return fn, W.size
  raise ValueError(f"calibration must be one of {CALIBRATIONS}, got {kind!r}")


def run_code_decoding(cfg: ml_collections.ConfigDict, model: nnx.Module,
                      splits, evaluator, workdir: str | Path,
                      key: jax.Array, name: str = "code_decoding"
                      ) -> dict[str, Any]:
  """Decodes the leaked codes of the target's training images; JSON-ready."""
  contract.check_leak(name, cfg.leak, model)
  t0 = time.time()
  decoder = make_decoder(model, cfg.leak, splits.aux_x, f"attack.{name}")
  k_aux, k_target = jax.random.split(key)
  represent = contract.make_represent(model, cfg.leak)
  bs, q = int(cfg.represent_batch_size), int(cfg.queries)

  def reconstruct_raw(x, k):
    reps = contract.query(represent, x, bs, k, q)
    return reps.shape[1:], batched(decoder, bs, reps)

  t_fit = time.time()
  rep_shape, dec_aux = reconstruct_raw(splits.aux_x, k_aux)
  calibrate, n_params = fit_calibration(dec_aux, splits.aux_x,
                                        cfg.calibration,
                                        float(cfg.ridge_lambda))
  fit_time = time.time() - t_fit
  aux_fit = np.clip(calibrate(dec_aux), 0.0, 1.0).astype(np.float32)
  aux_psnr = float(np.mean(np.asarray(
      metrics.psnr(aux_fit[:512], splits.aux_x[:512]))))

  n = min(int(cfg.num_images), len(splits.train_x))
  x_true, y_true = splits.train_x[:n], splits.train_y[:n]
  _, dec = reconstruct_raw(x_true, k_target)
  recon = np.clip(calibrate(dec), 0.0, 1.0).astype(np.float32)
  print(f"[{name}] leak {cfg.leak} {tuple(rep_shape)}, calibration "
        f"{cfg.calibration} ({n_params:,} params, aux PSNR {aux_psnr:.2f} dB)",
        flush=True)
  evaluated = contract.evaluate_reconstructions(
      name, cfg, recon, x_true, y_true, splits.aux_x, evaluator, workdir,
      aux_y=splits.aux_y)
  return dict(
      attack=name, leak=dict(name=cfg.leak, shape=list(rep_shape)),
      inversion_net=dict(name=f"dictionary_decode+{cfg.calibration}",
                         args=dict(ridge_lambda=float(cfg.ridge_lambda)),
                         num_params=int(n_params)),
      **evaluated, num_aux_train=len(splits.aux_x), num_aux_val=0,
      train_time_s=fit_time, history=[], aux_calibrated_psnr=aux_psnr,
      total_time_s=time.time() - t0, config=cfg.to_dict())


SPEC = ATTACKS.register("code_decoding")(AttackSpec(
    "code_decoding",
    "white-box: decode leaked sparse codes with the known dictionary, then a "
    "least-squares output calibration fitted on the auxiliary set",
    {**LEAK_DEFAULTS, **DEFAULTS}, run_code_decoding, _check,
    lambda cfg, model, where: check_decodable(model, cfg.leak, where)))
