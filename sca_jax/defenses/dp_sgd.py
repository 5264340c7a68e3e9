"""DP-SGD (Abadi et al. 2016), the defense of Hayes et al. [25].

Training: `train.Trainer` clips every per-example gradient to `clip_norm` and
adds N(0, (noise_multiplier * clip_norm)^2) to their sum before dividing by the
batch size (enabled by `config.defense.dp_sgd`). The model is `no_defense_gn`:
batch norm mixes examples, so per-example gradients (and the DP guarantee)
need a per-example normaliser; GroupNorm is what Opacus substitutes too.

Accounting: RDP accountant for the Poisson-subsampled Gaussian mechanism with
q = batch / N over all steps, epsilon at `delta` (1e-5). Deviation: batches are
drawn by shuffling (fixed size), not Poisson sampling, as in Opacus' default
and most DP-SGD code; the reported epsilon assumes Poisson sampling.
Defaults: the authors' Opacus settings (noise multiplier 1.1, clip 1.0).
"""

from __future__ import annotations

from typing import Any

import dp_accounting
import ml_collections

from sca_jax.defenses import DEFENSES, Defense

DEFAULT_DELTA = 1e-5


def epsilon(noise_multiplier: float, sample_rate: float, steps: int,
            delta: float = DEFAULT_DELTA) -> float:
  """epsilon of `steps` Poisson-sampled Gaussian steps, RDP accountant."""
  accountant = dp_accounting.rdp.RdpAccountant()
  event = dp_accounting.PoissonSampledDpEvent(
      sample_rate, dp_accounting.GaussianDpEvent(noise_multiplier))
  accountant.compose(event, int(steps))
  return float(accountant.get_epsilon(delta))


def report(cfg: ml_collections.ConfigDict, num_train: int,
           train_cfg: ml_collections.ConfigDict) -> dict[str, Any]:
  """The privacy guarantee of the configured training run."""
  dp = cfg.dp_sgd
  bs = int(train_cfg.batch_size)
  steps = (num_train // bs) * int(train_cfg.epochs)
  delta = float(dp.get("delta", DEFAULT_DELTA))
  q = bs / num_train
  return {"dp": {
      "epsilon": epsilon(float(dp.noise_multiplier), q, steps, delta),
      "delta": delta, "noise_multiplier": float(dp.noise_multiplier),
      "clip_norm": float(dp.clip_norm), "sample_rate": q, "steps": steps,
      "accountant": "rdp, poisson-sampled gaussian"}}


def default_dp_config(noise_multiplier: float = 1.1, clip_norm: float = 1.0
                      ) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({
      "noise_multiplier": noise_multiplier, "clip_norm": clip_norm,
      "delta": DEFAULT_DELTA})


def defaults(paper: bool) -> dict:
  del paper
  # Per-example gradients need a per-example normaliser: GroupNorm, not BN.
  # The authors' Opacus settings: noise multiplier 1.1, clip 1.0; delta 1e-5.
  return {"gn_groups": 4, "dp_sgd": default_dp_config(noise_multiplier=1.1,
                                                      clip_norm=1.0)}


DEFENSES.register("dp_sgd")(Defense(
    "no_defense_gn", report=report, defaults=defaults,
    description="DP-SGD: per-example clipping + Gaussian noise [25]"))
