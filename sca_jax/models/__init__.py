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


def _conv_stack(cfg, image_shape, num_classes, rngs, norm: str = "bn",
                extra: tuple[str, ...] = (), **kw) -> LayerStack:
  """(conv+ReLU, norm) pairs; `extra` layers right after the first pair."""
  layers = []
  for f in cfg.features:
    layers += [f"conv:{f}", norm]
    if len(layers) == 2:
      layers += list(extra)
  if len(set(cfg.strides)) > 1:
    raise ValueError("config.defense.strides: conv models use one stride")
  spec = _spec(cfg, layers, image_shape, conv_stride=int(cfg.strides[0]), **kw)
  return LayerStack(spec, image_shape, num_classes, rngs=rngs)


@MODELS.register("no_defense")
def no_defense(cfg, image_shape, num_classes, rngs) -> LayerStack:
  """The undefended control: SCA's shape with (conv+ReLU, batch norm) pairs."""
  return _conv_stack(cfg, image_shape, num_classes, rngs)


@MODELS.register("no_defense_gn")
def no_defense_gn(cfg, image_shape, num_classes, rngs) -> LayerStack:
  """no_defense with GroupNorm for batch norm: per-example gradients (DP)."""
  return _conv_stack(cfg, image_shape, num_classes, rngs, norm="gn",
                     gn_groups=int(cfg.get("gn_groups", 4)))


@MODELS.register("laplace_noise")
def laplace_noise(cfg, image_shape, num_classes, rngs) -> LayerStack:
  """no_defense with Laplace noise on the first pair's output (the split)."""
  # Layers: conv, bn, laplace, ...: `first` is the noised output (index 2).
  return _conv_stack(cfg, image_shape, num_classes, rngs, extra=("laplace",),
                     first_index=2,
                     laplace_scale=float(cfg.get("laplace_scale", 0.5)))


@MODELS.register("gaussian_noise")
def gaussian_noise(cfg, image_shape, num_classes, rngs) -> LayerStack:
  """no_defense with N(0, sigma) on the hidden linear layers at inference."""
  return _conv_stack(cfg, image_shape, num_classes, rngs,
                     hidden_noise_std=float(cfg.get("noise_std", 0.5)))


@MODELS.register("mid")
def mid(cfg, image_shape, num_classes, rngs) -> LayerStack:
  """no_defense with a variational bottleneck before the head (MID)."""
  return _conv_stack(
      cfg, image_shape, num_classes, rngs,
      bottleneck=int(cfg.get("bottleneck", 256)),
      bottleneck_sample_eval=bool(cfg.get("sample_at_inference", False)))


def build_model(defense_cfg: ml_collections.ConfigDict,
                image_shape: tuple[int, int, int], num_classes: int,
                seed_key) -> LayerStack:
  """Builds `defense_cfg.model` (default: the defense's name)."""
  name = defense_cfg.get("model", None) or defense_cfg.name
  builder = MODELS.get(name, field="defense.model")
  return builder(defense_cfg, image_shape, num_classes, nnx.Rngs(seed_key))


__all__ = ["MODELS", "Dictionary", "LayerStack", "SparseCoding", "StackSpec",
           "build_model", "lca_config"]
