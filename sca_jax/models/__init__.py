"""Target models, built by name from the config (`config.defense`)."""

from __future__ import annotations

import dataclasses

from flax import nnx
import ml_collections

from sca_jax import lca
from sca_jax.models.layers import Dictionary, LayerStack, SparseCoding, StackSpec
from sca_jax.registry import Registry

MODELS: Registry = Registry("model")

# Per-data-set input normalisation applied inside conventional models (the
# paper's (0.1307, 0.3081) for MNIST-type grey images, 0.5/0.5 for RGB). Sparse
# layers standardise each sample themselves.
_GREY, _RGB = (0.1307, 0.3081), (0.5, 0.5)


def lca_config(cfg: ml_collections.ConfigDict) -> lca.LCAConfig:
  """The LCA settings of a defense config, validated with field names."""
  try:
    return lca.LCAConfig(
        lam=float(cfg.lam), tau=float(cfg.tau), num_iters=int(cfg.num_iters),
        stride=1, threshold=cfg.get("threshold", "soft_nonneg"),
        normalize_input=bool(cfg.get("normalize_input", True)),
        remat=bool(cfg.get("remat", False)),
        solver=cfg.get("solver", "lca"))
  except ValueError as e:
    raise ValueError(f"config.defense: {e}") from None


def _spec(cfg, layers, image_shape, **kw) -> StackSpec:
  mean, std = _GREY if image_shape[-1] == 1 else _RGB
  return StackSpec(layers=tuple(layers), hidden=tuple(cfg.hidden),
                   kernel=int(cfg.kernel), input_mean=mean, input_std=std, **kw)


@MODELS.register("sca")
def sca(cfg, image_shape, num_classes, rngs) -> LayerStack:
  """SCA: (sparse coding, batch norm) pairs, then linear layers."""
  layers = []
  for f in cfg.features:
    layers += [f"lca:{f}", "bn"]
  spec = _spec(cfg, layers, image_shape, lca=lca_config(cfg),
               lca_strides=tuple(cfg.strides))
  return LayerStack(spec, image_shape, num_classes, rngs=rngs)


@MODELS.register("sparse_standard")
def sparse_standard(cfg, image_shape, num_classes, rngs) -> LayerStack:
  """Sparse-Standard (Teti et al.): one sparse layer, then conv and linear."""
  f_sparse, f_conv = cfg.features[0], cfg.features[-1]
  spec = _spec(cfg, [f"lca:{f_sparse}", f"conv:{f_conv}"], image_shape,
               lca=lca_config(cfg), lca_strides=tuple(cfg.strides[:1]),
               conv_stride=int(cfg.strides[-1]))
  return LayerStack(spec, image_shape, num_classes, rngs=rngs)


@MODELS.register("no_defense")
def no_defense(cfg, image_shape, num_classes, rngs) -> LayerStack:
  """The undefended control: SCA's shape with (conv+ReLU, batch norm) pairs."""
  layers = []
  for f in cfg.features:
    layers += [f"conv:{f}", "bn"]
  spec = _spec(cfg, layers, image_shape)
  if len(set(cfg.strides)) > 1:
    raise ValueError("config.defense.strides: no_defense uses one conv stride")
  spec = dataclasses.replace(spec, conv_stride=int(cfg.strides[0]))
  return LayerStack(spec, image_shape, num_classes, rngs=rngs)


def build_model(defense_cfg: ml_collections.ConfigDict,
                image_shape: tuple[int, int, int], num_classes: int,
                seed_key) -> LayerStack:
  """Builds `defense_cfg.model` (default: the defense's name)."""
  name = defense_cfg.get("model", None) or defense_cfg.name
  builder = MODELS.get(name, field="defense.model")
  return builder(defense_cfg, image_shape, num_classes, nnx.Rngs(seed_key))


__all__ = ["MODELS", "Dictionary", "LayerStack", "SparseCoding", "StackSpec",
           "build_model", "lca_config"]
