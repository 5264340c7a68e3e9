"""Sparse-Standard (Teti et al. [63]): one sparse coding layer after the
input, then a convolution and linear layers; on 32x32 RGB data the shape of
the authors' CIFAR-10 SCA with its second sparse layer a convolution."""

from sca_jax.defenses import DEFENSES, SPARSE_ADAPTIVE, Defense
from sca_jax.defenses.sca import check_sparse
from sca_jax.models import (MODELS, LayerStack, arch, cifar_layers,
                            lca_config, lca_layer_iters, stack_spec)


@MODELS.register("sparse_standard")
def sparse_standard(cfg, image_shape, num_classes, rngs) -> LayerStack:
  """One sparse layer, then conv and linear."""
  if arch(cfg) == "cifar":
    layers, _ = cifar_layers(cfg, ("lca", "conv"))
    spec = stack_spec(cfg, layers, image_shape, lca=lca_config(cfg),
                      lca_strides=tuple(cfg.strides[:1]),
                      lca_iters=lca_layer_iters(cfg, len(cfg.features))[:1])
    return LayerStack(spec, image_shape, num_classes, rngs=rngs)
  f_sparse, f_conv = cfg.features[0], cfg.features[-1]
  spec = stack_spec(cfg, [f"lca:{f_sparse}", f"conv:{f_conv}"], image_shape,
                    lca=lca_config(cfg), lca_strides=tuple(cfg.strides[:1]),
                    lca_iters=lca_layer_iters(cfg, len(cfg.features))[:1],
                    conv_stride=int(cfg.strides[-1]))
  return LayerStack(spec, image_shape, num_classes, rngs=rngs)


DEFENSES.register("sparse_standard")(Defense(
    "sparse_standard", description="one sparse layer after the input [63]",
    # The authors' Sparse-Standard lambda for MNIST-type data.
    defaults=lambda paper: {"lam": 0.25}, adaptive_attacks=SPARSE_ADAPTIVE,
    check=check_sparse))
