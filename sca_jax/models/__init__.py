"""Target models, built by name from the config (`config.defense`).

Model builders are registered in `MODELS` by the defense modules under
`sca_jax.defenses` (each defense registers the model it trains); the helpers
here (`stack_spec`, `conv_stack`) are what they share.
"""

from __future__ import annotations

from typing import Any

from flax import nnx
import ml_collections

from sca_jax import lca
from sca_jax.models.layers import (LAYERS, Dictionary, LayerStack,
                                   SparseCoding, StackSpec, register_layer)
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


def lca_layer_iters(cfg: ml_collections.ConfigDict,
                    num_sparse: int) -> tuple[int, ...]:
  """`defense.layer_num_iters`: solver iterations per sparse layer (empty:
  `num_iters` for every layer), checked against the number of layers."""
  iters = tuple(cfg.get("layer_num_iters", ()) or ())
  if len(iters) > num_sparse or not all(
      isinstance(n, int) and not isinstance(n, bool) and n >= 1
      for n in iters):
    raise ValueError(
        f"config.defense.layer_num_iters={iters!r}: allowed: () or up to "
        f"{num_sparse} ints >= 1, one per sparse layer")
  return iters


def stack_spec(cfg: ml_collections.ConfigDict, layers, image_shape,
               options: dict[str, Any] | None = None, **kw) -> StackSpec:
  """A `StackSpec` with the config's widths and the data set's normalisation;
  `options`: settings of the defense's layer kinds."""
  mean, std = _GREY if image_shape[-1] == 1 else _RGB
  return StackSpec(layers=tuple(layers), hidden=tuple(cfg.hidden),
                   kernel=int(cfg.kernel), input_mean=mean, input_std=std,
                   options=tuple(sorted((options or {}).items())), **kw)


def conv_stack(cfg, image_shape, num_classes, rngs, norm: str = "bn",
               extra: tuple[str, ...] = (), **kw) -> LayerStack:
  """(conv+ReLU, norm) pairs; `extra` layers right after the first pair."""
  layers = []
  for f in cfg.features:
    layers += [f"conv:{f}", norm]
    if len(layers) == 2:
      layers += list(extra)
  if len(set(cfg.strides)) > 1:
    raise ValueError("config.defense.strides: conv models use one stride")
  spec = stack_spec(cfg, layers, image_shape, conv_stride=int(cfg.strides[0]),
                    **kw)
  return LayerStack(spec, image_shape, num_classes, rngs=rngs)


def build_model(defense_cfg: ml_collections.ConfigDict,
                image_shape: tuple[int, int, int], num_classes: int,
                seed_key) -> LayerStack:
  """Builds `defense_cfg.model` (default: the defense's model).

  Fields of `config.defense` the config leaves out take the defense's
  registered defaults (`Defense.defaults`), so they are written only there.
  """
  # Defense modules register the model builders and their layer kinds.
  from sca_jax import defenses  # pylint: disable=g-import-not-at-top
  cfg = defenses.with_defaults(defense_cfg)
  name = cfg.get("model", None) or (
      defenses.DEFENSES.get(cfg.name).model if cfg.name in defenses.DEFENSES
      else cfg.name)
  builder = MODELS.get(name, field="defense.model")
  return builder(cfg, image_shape, num_classes, nnx.Rngs(seed_key))


__all__ = ["LAYERS", "MODELS", "Dictionary", "LayerStack", "SparseCoding",
           "StackSpec", "build_model", "conv_stack", "lca_config",
           "register_layer", "stack_spec"]
