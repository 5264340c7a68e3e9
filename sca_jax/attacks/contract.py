"""The contract every attack follows: registry, spec, config, leak lookup,
queries and scoring against floors.

An attack is one module of this package registering an `AttackSpec` in
`ATTACKS` with its own defaults (over `COMMON_DEFAULTS`, the fields every
attack has) and a runner `run(cfg, model, splits, evaluator, workdir, key)`.
Attacks read the frozen target only through `make_leak_fn` /
`make_represent` and `query` (fresh keys per query, so stochastic defenses
answer as deployed), and score their reconstructions with
`evaluate_reconstructions` (PSNR, SSIM, FID, attack accuracy, next to the
mean-auxiliary-image floor every real attack must beat).

Cheap to import (no generator, no plotting): `config_lib` builds the attack
defaults from it.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from pathlib import Path
from typing import Any, Callable

import jax
import ml_collections
import numpy as np
from flax import nnx

from sca_jax import leakage
from sca_jax import metrics
from sca_jax.evaluation import EvalClassifier, batched, with_defaults
from sca_jax.registry import Registry

# Fields every attack has (`config.attack.<name>.<field>`).
COMMON_DEFAULTS = dict(
    grid_per_group=4,         # images per highest/median/lowest group; 0: none
    eval_batch_size=256,
)
# Fields of attacks that query the target for a leaked representation.
LEAK_DEFAULTS = dict(
    leak="last_hidden",       # a name from model.representation_names()
    num_images=512,           # first N target training images reconstructed
    represent_batch_size=256,  # target queries per call
    # Leaked outputs averaged per input, each with a fresh key: against
    # defenses that add fresh noise at inference (1: one query per input).
    queries=1,
)
# Integer fields that must be >= 1 wherever an attack has them.
_POSITIVE = ("epochs", "batch_size", "num_images", "represent_batch_size",
             "eval_batch_size", "log_every", "queries")

ATTACKS: Registry = Registry("attack")


@dataclasses.dataclass(frozen=True)
class AttackSpec:
  """A registered attack: its own defaults (over `COMMON_DEFAULTS`), runner
  and checks."""
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
  # Overrides of the paper's protocol (`config_lib`, protocol "paper").
  paper_overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
  # Identity of what the attack reads besides its config (e.g. a
  # generator's weights): part of a finished attack's stamp, so a rerun
  # after those change attacks again instead of keeping old numbers.
  inputs_id: Callable[[ml_collections.ConfigDict], Any] | None = None


def attack_config(name: str, overrides: Any = None
                  ) -> ml_collections.ConfigDict:
  """`config.attack.<name>` over the attack's defaults, checked (no model)."""
  spec = ATTACKS.get(name, field="attacks")
  where = f"attack.{name}"
  cfg = with_defaults({**COMMON_DEFAULTS, **spec.defaults}, overrides, where)
  if "leak" in cfg and (not isinstance(cfg.leak, str) or not cfg.leak):
    raise ValueError(f"config.{where}.leak must be a representation name")
  for key in _POSITIVE:
    if key in cfg and int(cfg[key]) < 1:
      raise ValueError(f"config.{where}.{key} must be >= 1, got {cfg[key]}")
  if "num_images" in cfg and int(cfg.num_images) < 2:
    raise ValueError(f"config.{where}.num_images must be >= 2 (FID needs a "
                     f"covariance), got {cfg.num_images}")
  if int(cfg.grid_per_group) < 0:
    raise ValueError(f"config.{where}.grid_per_group must be >= 0")
  if "learning_rate" in cfg and not float(cfg.learning_rate) > 0:
    raise ValueError(f"config.{where}.learning_rate must be > 0")
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
    # Plotting (matplotlib) only when a picture is asked for.
    from sca_jax.attacks import grid as grid_lib  # pylint: disable=g-import-not-at-top
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
