"""MID: mutual information regularisation (Wang et al., AAAI 2021) [66].

A variational information bottleneck before the classifier head (model `mid`):
the encoder emits mu and std = softplus(s - 5) (as in MID's code), the head
sees z = mu + std * eps with eps drawn from the step's key, and the loss is
CE + beta * KL(N(mu, std^2) || N(0, I)) summed over z's dimensions and averaged
over examples, a variational upper bound on I(x; z).

Inference: z = mu (deterministic, `sample_at_inference=False`) as the brief
describes their released code; I could not check the code from here, so
`config.defense.sample_at_inference=True` samples at inference instead (the
attacker then sees noisy leaks). The end-to-end leak (`last_hidden`) is z.
Defaults: bottleneck width 256, beta 0.01 (MID tunes beta per data set; these
are not their MNIST values, which I could not confirm).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from sca_jax.defenses import DEFENSES, Defense
from sca_jax.models import MODELS, LayerStack, conv_stack, register_layer


def _build_bottleneck(ctx):
  # Encoder statistics: mean and pre-softplus std of the code.
  width = ctx.arg
  return nnx.Linear(ctx.shape[-1], 2 * width, rngs=ctx.rngs), (width,)


def _apply_bottleneck(module, h, ctx) -> jax.Array:
  """Variational information bottleneck (Alemi et al.; MID, Wang et al.)."""
  stats = module(h)
  k = stats.shape[-1] // 2
  # MID's code: std = softplus(s - 5), so training starts nearly noiseless.
  mu, std = stats[:, :k], jax.nn.softplus(stats[:, k:] - 5.0)
  ctx.reps[f"{ctx.name}_mu"], ctx.reps[f"{ctx.name}_std"] = mu, std
  if ctx.train or ctx.spec.option("sample_at_inference"):
    return mu + std * jax.random.normal(ctx.key, mu.shape, mu.dtype)
  return mu


register_layer("bottleneck", _build_bottleneck, _apply_bottleneck,
               needs_arg=True)


@MODELS.register("mid")
def mid(cfg, image_shape, num_classes, rngs) -> LayerStack:
  """no_defense with a variational bottleneck before the head (MID)."""
  return conv_stack(
      cfg, image_shape, num_classes, rngs,
      before_head=(f"bottleneck:{int(cfg.bottleneck)}",),
      options={"sample_at_inference": bool(cfg.sample_at_inference)})


def kl_to_standard_normal(mu, std) -> jnp.ndarray:
  """Per example KL(N(mu, std^2) || N(0, I)), summed over dimensions."""
  return 0.5 * jnp.sum(mu ** 2 + std ** 2 - 2 * jnp.log(std + 1e-8) - 1, -1)


def extra_loss(cfg: ml_collections.ConfigDict):
  beta = float(cfg.beta)

  def fn(logits, reps, x, y, key):
    del logits, x, y, key
    kl = kl_to_standard_normal(reps["bottleneck_mu"],
                               reps["bottleneck_std"]).mean()
    return beta * kl, {"kl": kl}
  return fn


DEFENSES.register("mid")(Defense(
    "mid", lca_fields=False, extra_loss=extra_loss,
    defaults=lambda paper: {"bottleneck": 256, "beta": 0.01,
                            "sample_at_inference": False},  # z = mu
    description="variational information bottleneck, beta * KL [66]"))
