"""SCA: the sparse coding architecture of the paper (Sec. 3).

(sparse coding, batch norm) pairs, then linear layers (on 32x32 RGB data the
authors' CIFAR-10/CelebA shape, `models.cifar_layers`). The sparse layers'
settings (`lam`, `tau`, `num_iters`, `solver`, ...) are the shared
`config.defense` fields of `config_lib.base_config`; the Hebbian dictionary
rule is a training switch (`defense.hebbian`, see train.py).
"""

import ml_collections

from sca_jax.defenses import DEFENSES, SPARSE_ADAPTIVE, Defense
from sca_jax.models import (MODELS, LayerStack, arch, cifar_layers,
                            lca_config, lca_layer_iters, stack_spec)


def check_sparse(cfg: ml_collections.ConfigDict) -> None:
  """The LCA settings of a sparse defense, checked before any compute."""
  lca_config(cfg)
  lca_layer_iters(cfg, len(cfg.features))


@MODELS.register("sca")
def sca(cfg, image_shape, num_classes, rngs) -> LayerStack:
  """SCA: (sparse coding, batch norm) pairs, then linear layers; "cifar":
  two sparse blocks, then the conv blocks (`models.cifar_layers`)."""
  if arch(cfg) == "cifar":
    layers, _ = cifar_layers(cfg, ("lca", "lca"))
  else:
    layers = []
    for f in cfg.features:
      layers += [f"lca:{f}", "bn"]
  spec = stack_spec(cfg, layers, image_shape, lca=lca_config(cfg),
                    lca_strides=tuple(cfg.strides),
                    lca_iters=lca_layer_iters(cfg, len(cfg.features)))
  return LayerStack(spec, image_shape, num_classes, rngs=rngs)


DEFENSES.register("sca")(Defense(
    "sca", description="sparse coding architecture (this paper)",
    adaptive_attacks=SPARSE_ADAPTIVE, check=check_sparse))
