"""Defenses by name: which target model a defense trains and what it adds.

A defense is a model (from `sca_jax.models.MODELS`) plus, optionally, an extra
training loss and hooks; adding one means adding a module that registers
itself here and a config file, touching nothing else.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import ml_collections

from sca_jax.registry import Registry
from sca_jax.train import ExtraLoss


@dataclasses.dataclass(frozen=True)
class Defense:
  model: str  # a name in sca_jax.models.MODELS
  # Builds the extra training loss from config.defense (None: plain CE).
  extra_loss: Callable[[ml_collections.ConfigDict], ExtraLoss] | None = None
  description: str = ""


DEFENSES: Registry[Defense] = Registry("defense")

DEFENSES.register("no_defense")(Defense(
    "no_defense", description="undefended target of the same depth"))
DEFENSES.register("sca")(Defense(
    "sca", description="sparse coding architecture (this paper)"))
DEFENSES.register("sparse_standard")(Defense(
    "sparse_standard", description="one sparse layer after the input [63]"))
