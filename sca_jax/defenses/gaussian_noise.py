"""Gaussian noise on dense layers after training (common industry defense).

Adds N(0, `noise_std`) to every hidden linear layer's (post-ReLU) output,
freshly per forward pass, only with train=False (post-training). The
authors' code made the "Gaussian" noise `x + 0.5 x`; this follows the paper's
text instead. Deviation: the noise is on the linear layers only, not on the
conv/batch-norm layers, so it does not reach `first` (the split attack sees a
clean first layer, as the paper's "intermediate dense layers" implies).
"""

import jax

from sca_jax.defenses import DEFENSES, NOISE_ADAPTIVE, Defense
from sca_jax.models import MODELS, LayerStack, conv_stack, register_layer


def _apply_hidden_noise(module, h, ctx):
  del module  # stateless
  if ctx.train:  # post-training noise: the deployed model only
    return h
  return h + ctx.spec.option("noise_std") * jax.random.normal(
      ctx.key, h.shape, h.dtype)


register_layer("hidden_noise", lambda ctx: (None, ctx.shape),
               _apply_hidden_noise)


@MODELS.register("gaussian_noise")
def gaussian_noise(cfg, image_shape, num_classes, rngs) -> LayerStack:
  """no_defense with N(0, sigma) on the hidden linear layers at inference."""
  return conv_stack(cfg, image_shape, num_classes, rngs,
                    after_hidden=("hidden_noise",),
                    options={"noise_std": float(cfg.noise_std)})


DEFENSES.register("gaussian_noise")(Defense(
    "gaussian_noise", lca_fields=False,
    description="N(0, 0.5) noise on dense layers post-training (industry)",
    defaults=lambda paper: {"noise_std": 0.5},  # sigma, at inference only
    adaptive_attacks=NOISE_ADAPTIVE))
