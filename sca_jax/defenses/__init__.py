"""Defenses by name: each is one module of this package registering itself.

A defense module registers, at import, everything it changes: the model
builder it trains (`sca_jax.models.MODELS`), any layer kind it adds
(`sca_jax.models.register_layer`), and a `Defense` here with its hooks, its
settings' defaults and the adaptive attacks that apply to it. Every module of
this package is imported below (no hand-kept list); a defense outside the
package registers the same way and is named in `config.imports`.

Settings: `defaults(paper)` gives the defense's own `config.defense` fields
(the `:paper` protocol where they differ), written only there:
`config_lib.get_config` writes them into every config and `with_defaults`
fills them in for configs built by hand. `adaptive_attacks` are the white-box
attacks that apply to it.

Hooks, all optional, all taking `config.defense` first:
  check(cfg) -> None: raises ValueError for bad settings before any compute.
  extra_loss(cfg) -> fn(logits, reps, x, y, key) -> (scalar, metrics)
  gradient_hook(cfg) -> train.GradientHook: turns per-example gradients into
      the update's gradient (e.g. DP-SGD's clip + noise).
  prepare_data(cfg, x_NHWC, y_N, key) -> (x, y) or TrainingSet: the target's
      training set (e.g. real plus generated samples), called before
      training; a TrainingSet can also carry per-sample arrays for the extra
      loss, variables the target starts from (a pre-trained model) and a
      penalty on its parameters (e.g. elastic weight consolidation).
  report(cfg, num_train, train_cfg) -> dict: numbers for results.json
      (e.g. the DP epsilon).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import ml_collections
import numpy as np

from sca_jax.registry import Registry, import_members
from sca_jax.train import ExtraLoss, GradientHook, ParamLoss

PrepareData = Callable[[ml_collections.ConfigDict, np.ndarray, np.ndarray,
                        jax.Array], Any]  # (x, y) or a TrainingSet


@dataclasses.dataclass
class TrainingSet:
  """What `prepare_data` may return instead of (x, y)."""
  x: np.ndarray
  y: np.ndarray
  # Arrays with x's leading axis, batched with it; the extra loss gets the
  # batch's slices as `per_sample=`.
  per_sample: dict[str, np.ndarray] | None = None
  # Variables of the target model (`nnx.state(model)`) it starts from.
  init: Any = None
  # Added to the training loss: fn(params) -> (scalar, metrics).
  param_loss: ParamLoss | None = None

  @classmethod
  def of(cls, prepared) -> "TrainingSet":
    return prepared if isinstance(prepared, cls) else cls(*prepared)


Report = Callable[[ml_collections.ConfigDict, int, ml_collections.ConfigDict],
                  dict[str, Any]]

# Adaptive attacks (sca_jax.attacks) by what the attacker can exploit: every
# differentiable target can be feature-inverted; sparse codes can be decoded
# with the known dictionary; fresh inference noise can be averaged away.
FEATURE_INVERSION = ("feature_inversion", "feature_inversion_end_to_end")
SPARSE_ADAPTIVE = ("code_decoding",) + FEATURE_INVERSION
NOISE_ADAPTIVE = ("split_averaged", "first_layer_averaged",
                  "end_to_end_averaged") + FEATURE_INVERSION


@dataclasses.dataclass(frozen=True)
class Defense:
  model: str  # a name in sca_jax.models.MODELS
  # Builds the extra training loss from config.defense (None: plain CE).
  extra_loss: Callable[[ml_collections.ConfigDict], ExtraLoss] | None = None
  description: str = ""
  prepare_data: PrepareData | None = None
  report: Report | None = None
  # defaults(paper: bool) -> {field of config.defense: value}.
  defaults: Callable[[bool], dict[str, Any]] | None = None
  adaptive_attacks: tuple[str, ...] = FEATURE_INVERSION
  check: Callable[[ml_collections.ConfigDict], None] | None = None
  gradient_hook: Callable[[ml_collections.ConfigDict],
                          GradientHook] | None = None
  # Whether its model has sparse-coding layers, i.e. reads LCA_FIELDS of
  # config.defense. False lets two configs differing only there count as one
  # experiment (`read_fields`); True, the safe default, compares them.
  lca_fields: bool = True


# config.defense fields only sparse-coding layers read.
LCA_FIELDS = ("lam", "tau", "num_iters", "layer_num_iters", "solver",
              "threshold", "normalize_input", "remat", "conv", "hebbian",
              "hebbian_lr", "backprop_dictionaries")


DEFENSES: Registry[Defense] = Registry("defense")


def read_fields(defense: dict[str, Any]) -> dict[str, Any]:
  """`config.defense` as a dict, less the fields its defense never reads
  (LCA_FIELDS of a defense without sparse layers): what decides the run."""
  name = defense.get("name")
  if name in DEFENSES and not DEFENSES.get(name).lca_fields:
    return {k: v for k, v in defense.items() if k not in LCA_FIELDS}
  return defense


def with_defaults(defense_cfg: ml_collections.ConfigDict
                  ) -> ml_collections.ConfigDict:
  """`config.defense` with the defense's default settings where it has none
  (a copy; the config's own values win)."""
  if defense_cfg.get("name") not in DEFENSES:
    return defense_cfg
  defense = DEFENSES.get(defense_cfg.name)
  missing = {k: v for k, v in (defense.defaults(False) if defense.defaults
                               else {}).items() if k not in defense_cfg}
  if not missing:
    return defense_cfg
  cfg = ml_collections.ConfigDict(defense_cfg.to_dict())
  cfg.update(missing)
  return cfg


__all__ = ["DEFENSES", "Defense", "LCA_FIELDS", "TrainingSet", "read_fields",
           "with_defaults",
           *import_members(__name__, __path__)]
