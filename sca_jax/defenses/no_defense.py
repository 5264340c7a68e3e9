"""No defense: the undefended control, SCA's shape with (conv+ReLU, batch
norm) pairs instead of (sparse coding, batch norm) (paper, Sec. 4)."""

from sca_jax.defenses import DEFENSES, Defense
from sca_jax.models import MODELS, LayerStack, conv_stack


@MODELS.register("no_defense")
def no_defense(cfg, image_shape, num_classes, rngs) -> LayerStack:
  """(conv+ReLU, batch norm) pairs, then linear layers."""
  return conv_stack(cfg, image_shape, num_classes, rngs)


DEFENSES.register("no_defense")(Defense(
    "no_defense", lca_fields=False,
    description="undefended target of the same depth"))
