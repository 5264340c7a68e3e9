"""Target models, built by name from the config (`config.defense`).

Model builders are registered in `MODELS` by the defense modules under
`sca_jax.defenses` (each defense registers the model it trains); the helpers
here (`stack_spec`, `conv_stack`, `cifar_layers`) are what they share.

Two architectures (`config.defense.arch`, chosen by `config_lib.make_config`
from the data set): "mnist", the authors' MNIST-type models ((sparse coding
or conv, norm) pairs, then linear layers of widths `hidden`), and "cifar",
the authors' CIFAR-10/CelebA code for 32x32 RGB data (`cifar_layers`).
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
ARCHS = ("mnist", "cifar")


def lca_config(cfg: ml_collections.ConfigDict) -> lca.LCAConfig:
  """The LCA settings of a defense config, validated with field names."""
  try:
    return lca.LCAConfig(
        lam=float(cfg.lam), tau=float(cfg.tau), num_iters=int(cfg.num_iters),
        stride=1, threshold=cfg.get("threshold", "soft_nonneg"),
        normalize_input=bool(cfg.get("normalize_input", True)),
        remat=bool(cfg.get("remat", False)),
        solver=cfg.get("solver", "lca"), conv=cfg.get("conv", "direct"))
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
                   dropout=float(cfg.get("dropout", 0.0)),
                   options=tuple(sorted((options or {}).items())), **kw)


def arch(cfg: ml_collections.ConfigDict) -> str:
  """`config.defense.arch` ("mnist" when a hand-built config has none)."""
  name = cfg.get("arch", "mnist")
  if name not in ARCHS:
    raise ValueError(f"config.defense.arch={name!r}: allowed {ARCHS}")
  return name


def cifar_layers(cfg: ml_collections.ConfigDict, kinds: tuple[str, str],
                 norm: str = "bn", extra: tuple[str, ...] = ()
                 ) -> tuple[list[str], int]:
  """The feature layers of the authors' CIFAR-10/CelebA code.

  Two blocks of `kinds` with `features` (16, 32) channels: kind -> ReLU ->
  Dropout -> norm, the second with MaxPool2 before its norm; then one
  Conv(kernel) -> ReLU -> Dropout -> MaxPool2 -> norm block per entry of
  `conv_features` (64, 128, 256). On 32x32 images the head sees 2x2x256 =
  1024 values (Linear(1024, 512) with `hidden` = (512,)). `extra` layers
  follow the first block; returns (layers, index of the first extra layer).
  """
  if len(cfg.features) != 2:
    raise ValueError(f"config.defense.features={tuple(cfg.features)}: the "
                     "cifar architecture has two leading blocks, e.g. (16, 32)")

  def block(kind: str, features: int, pool: bool) -> list[str]:
    # "conv" includes its ReLU; a sparse layer gets an explicit one (a no-op
    # on non-negative codes, kept to mirror the authors' code).
    return ([f"{kind}:{features}"] + (["relu"] if kind != "conv" else [])
            + ["dropout"] + (["pool"] if pool else []) + [norm])

  layers = block(kinds[0], int(cfg.features[0]), False)
  first_extra = len(layers)
  layers += list(extra) + block(kinds[1], int(cfg.features[1]), True)
  for f in cfg.get("conv_features", (64, 128, 256)):
    layers += block("conv", int(f), True)
  return layers, first_extra


def conv_stack(cfg, image_shape, num_classes, rngs, norm: str = "bn",
               extra: tuple[str, ...] = (), **kw) -> LayerStack:
  """(conv+ReLU, norm) pairs (or the cifar blocks, `cifar_layers`); `extra`
  layers right after the first pair (block), and `first` aliases the first
  of them unless `first_index` is given."""
  if arch(cfg) == "cifar":
    layers, first_extra = cifar_layers(cfg, ("conv", "conv"), norm, extra)
    stride = 1  # the blocks pool instead
  else:
    layers = []
    for f in cfg.features:
      layers += [f"conv:{f}", norm]
      if len(layers) == 2:
        layers += list(extra)
    first_extra = 2
    if len(set(cfg.strides)) > 1:
      raise ValueError("config.defense.strides: conv models use one stride")
    stride = int(cfg.strides[0])
  if extra:
    kw.setdefault("first_index", first_extra)
  spec = stack_spec(cfg, layers, image_shape, conv_stride=stride, **kw)
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


__all__ = ["ARCHS", "LAYERS", "MODELS", "Dictionary", "LayerStack",
           "SparseCoding", "StackSpec", "arch", "build_model", "cifar_layers",
           "conv_stack", "lca_config",
           "register_layer", "stack_spec"]
