"""Defenses by name: which target model a defense trains and what it adds.

A defense is a model (from `sca_jax.models.MODELS`) plus, optionally, an extra
training loss and hooks; adding one means adding a module that registers
itself here and a config file, touching nothing else.

Hooks, all optional, all taking `config.defense` first:
  extra_loss(cfg) -> fn(logits, reps, x, y, key) -> (scalar, metrics)
  prepare_data(cfg, x_NHWC, y_N, key) -> (x, y): the target's training set
      (e.g. real plus generated samples), called before training.
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
from sca_jax.train import ExtraLoss

PrepareData = Callable[[ml_collections.ConfigDict, np.ndarray, np.ndarray,
                        jax.Array], tuple[np.ndarray, np.ndarray]]
Report = Callable[[ml_collections.ConfigDict, int, ml_collections.ConfigDict],
                  dict[str, Any]]


@dataclasses.dataclass(frozen=True)
class Defense:
  model: str  # a name in sca_jax.models.MODELS
  # Builds the extra training loss from config.defense (None: plain CE).
  extra_loss: Callable[[ml_collections.ConfigDict], ExtraLoss] | None = None
  description: str = ""
  prepare_data: PrepareData | None = None
  report: Report | None = None


DEFENSES: Registry[Defense] = Registry("defense")

DEFENSES.register("no_defense")(Defense(
    "no_defense", description="undefended target of the same depth"))
DEFENSES.register("sca")(Defense(
    "sca", description="sparse coding architecture (this paper)"))
DEFENSES.register("sparse_standard")(Defense(
    "sparse_standard", description="one sparse layer after the input [63]"))

# Baselines register themselves on import.
from sca_jax.defenses import bido, dp_sgd, gan, mid, noise  # pylint: disable=g-import-not-at-top,wrong-import-position

__all__ = ["DEFENSES", "Defense", "bido", "dp_sgd", "gan", "mid", "noise"]
