"""Laplace noise at the split (Titcombe et al. [64]).

Adds Laplace(0, b=`laplace_scale`) to the output of the first (conv, bn)
pair, which is what crosses the split, in training and at inference; `first`
leaks the noised output. The authors' code added the noise in training only;
this follows the paper's text (Sec. 4, baselines) instead.
"""

import jax

from sca_jax.defenses import DEFENSES, NOISE_ADAPTIVE, Defense
from sca_jax.models import MODELS, LayerStack, conv_stack, register_layer


def _apply_laplace(module, h, ctx):
  del module  # stateless
  # Titcombe et al.: noise in training and at inference alike.
  return h + ctx.spec.option("laplace_scale") * jax.random.laplace(
      ctx.key, h.shape, h.dtype)


register_layer("laplace", lambda ctx: (None, ctx.shape), _apply_laplace)


@MODELS.register("laplace_noise")
def laplace_noise(cfg, image_shape, num_classes, rngs) -> LayerStack:
  """no_defense with Laplace noise on the first pair's output (the split)."""
  # Layers: conv, bn, laplace, ...: `first` is the noised output (conv_stack
  # points it at the first extra layer).
  return conv_stack(cfg, image_shape, num_classes, rngs, extra=("laplace",),
                    options={"laplace_scale": float(cfg.laplace_scale)})


DEFENSES.register("laplace_noise")(Defense(
    "laplace_noise", lca_fields=False,
    description="Laplace(0, 0.5) noise on the split [64]",
    defaults=lambda paper: {"laplace_scale": 0.5},  # b of Laplace(0, b)
    adaptive_attacks=NOISE_ADAPTIVE))
