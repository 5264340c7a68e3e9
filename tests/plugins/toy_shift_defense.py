"""A toy defense living outside sca_jax, registered by import alone
(`config.imports = ("toy_shift_defense",)`): it adds a layer kind that shifts
the first (conv, bn) pair's output by `toy_shift`, makes that the split, and
adds a loss term on it. Used by tests/test_plugins.py; also the worked
example of docs/extending.md.
"""

import jax.numpy as jnp

from sca_jax.defenses import DEFENSES, Defense
from sca_jax.models import MODELS, conv_stack, register_layer


def _apply_shift(module, h, ctx):
  del module  # stateless
  return h + ctx.spec.option("toy_shift")


register_layer("toy_shift", lambda ctx: (None, ctx.shape), _apply_shift)


@MODELS.register("toy_shift")
def toy_shift_model(cfg, image_shape, num_classes, rngs):
  # Layers: conv, bn, toy_shift, conv, bn: `first` is the shifted output.
  return conv_stack(cfg, image_shape, num_classes, rngs, extra=("toy_shift",),
                    first_index=2, options={"toy_shift": float(cfg.toy_shift)})


def toy_loss(cfg):
  weight = float(cfg.toy_weight)

  def fn(logits, reps, x, y, key):
    del logits, x, y, key
    penalty = jnp.mean(jnp.square(reps["layer2_toy_shift"]))
    return weight * penalty, {"toy_penalty": penalty}
  return fn


DEFENSES.register("toy_shift")(Defense(
    "toy_shift", extra_loss=toy_loss, description="toy: shifted split",
    defaults=lambda paper: {"toy_shift": 100.0, "toy_weight": 1e-6}))
