"""Defenses by name: which target model a defense trains and what it adds.

A defense is a model (from `sca_jax.models.MODELS`) plus, optionally, an extra
training loss and hooks; adding one means adding a module that registers
itself here and a config file, touching nothing else.

Settings: `defaults(paper)` gives the defense's own `config.defense` fields
(the `:paper` protocol where they differ) and `adaptive_attacks` the
white-box attacks that apply to it; `config_lib.get_config` writes both into
every config, so `configs/<dataset>_<defense>.py` only names the two.

Hooks, all optional, all taking `config.defense` first:
  extra_loss(cfg) -> fn(logits, reps, x, y, key) -> (scalar, metrics)
  prepare_data(cfg, x_NHWC, y_N, key) -> (x, y) or TrainingSet: the target's
      training set (e.g. real plus generated samples), called before
      training; a TrainingSet can also carry per-sample arrays for the extra
      loss, variables the target starts from (a pre-trained model) and a
      penalty on its parameters (e.g. elastic weight consolidation).
  report(cfg, num_train, train_cfg) -> dict: numbers for results.json
      (e.g. the DP epsilon).
DP-SGD itself is a training rule: `config.defense.dp_sgd` (see train.py).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import ml_collections
import numpy as np

from sca_jax.registry import Registry
from sca_jax.train import ExtraLoss, ParamLoss

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


DEFENSES: Registry[Defense] = Registry("defense")

DEFENSES.register("no_defense")(Defense(
    "no_defense", description="undefended target of the same depth"))
DEFENSES.register("sca")(Defense(
    "sca", description="sparse coding architecture (this paper)",
    adaptive_attacks=SPARSE_ADAPTIVE))
DEFENSES.register("sparse_standard")(Defense(
    "sparse_standard", description="one sparse layer after the input [63]",
    # The authors' Sparse-Standard lambda for MNIST-type data.
    defaults=lambda paper: {"lam": 0.25}, adaptive_attacks=SPARSE_ADAPTIVE))

# Baselines register themselves on import.
from sca_jax.defenses import bido, dp_sgd, gan, gong, mid, noise  # pylint: disable=g-import-not-at-top,wrong-import-position

__all__ = ["DEFENSES", "Defense", "TrainingSet", "bido", "dp_sgd", "gan",
           "gong", "mid", "noise"]
