"""Flax NNX layers: the sparse coding layer, the layer-kind registry and a
named-layer classifier stack built from it.

A `LayerStack` is built from layer specs such as `("lca:16", "bn", "lca:28",
"bn")` (feature layers), ReLU linear layers of widths `hidden`, optional
layers after each hidden layer (`after_hidden`) and before the head
(`before_head`), then a linear head. Every layer's output is recorded under a
stable name (`layer0_lca`, `layer1_bn`, ..., `hidden0`, ...) so attacks can
name the representation they steal. Aliases name the threat models
(docs/threat_models.md): `first` (the first feature layer's output: the
stricter `first_layer` attack), `first_linear` (the first linear layer after
the feature layers, post-ReLU: the paper's split leak) and `last_hidden` (the
end-to-end leak).

Layer kinds are registered in `LAYERS` (`register_layer`): a builder that
creates the module and says the output shape, and an apply function. Generic
kinds are registered here; a defense's own kinds (noise, bottlenecks) by its
module under `sca_jax.defenses`. Settings a kind needs beyond its `:arg`
(e.g. a noise scale) come from `StackSpec.options`, filled by the defense's
model builder from `config.defense`. Stochastic layers draw from the key of
their slot: feature layer i `fold_in(key, i)`, after-hidden layer of hidden
layer i `fold_in(key, 1000 + i)`, before-head layer j `fold_in(key, 2000 + j)`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import jax
from flax import nnx

from sca_jax import lca
from sca_jax.registry import Registry


class Dictionary(nnx.Param):
  """A sparse coding dictionary: a parameter with its own update rules.

  A subclass of `nnx.Param` so the optimiser can include or exclude it
  (backprop into dictionaries is a config choice) and the Hebbian rule can
  find it by type.
  """


class SparseCoding(nnx.Module):
  """Convolutional LCA layer: input (B,H,W,C) -> non-negative codes (B,H/s,W/s,F)."""

  def __init__(self, in_channels: int, features: int, cfg: lca.LCAConfig,
               kernel: int, *, rngs: nnx.Rngs):
    self.cfg = cfg
    self.dictionary = Dictionary(
        lca.init_dictionary(rngs.params(), kernel, in_channels, features))

  def solve(self, x_BHWC: jax.Array) -> lca.LCAResult:
    return lca.solve(x_BHWC, self.dictionary.get_value(), self.cfg)

  def __call__(self, x_BHWC: jax.Array) -> jax.Array:
    return self.solve(x_BHWC).codes_BHWF


@dataclasses.dataclass(frozen=True)
class StackSpec:
  """What a `LayerStack` is made of (all static, so hashable for jit)."""

  # e.g. ("lca:16", "bn", "conv:28"); "conv" includes its ReLU.
  layers: tuple[str, ...]
  hidden: tuple[int, ...] = (500,)   # widths of the linear layers before logits
  kernel: int = 5
  lca: lca.LCAConfig = lca.LCAConfig()
  lca_strides: tuple[int, ...] = ()  # per sparse layer; default cfg.stride
  lca_iters: tuple[int, ...] = ()    # per sparse layer; default num_iters
  conv_stride: int = 1
  input_mean: float = 0.0            # normalisation applied inside the model
  input_std: float = 1.0
  dropout: float = 0.0
  first_index: int = 0               # which feature layer `first` aliases
  after_hidden: tuple[str, ...] = ()  # applied after every hidden layer
  before_head: tuple[str, ...] = ()   # between the last hidden layer and head
  # Settings of layer kinds, as sorted (name, value) pairs (hashable).
  options: tuple[tuple[str, Any], ...] = ()

  def option(self, name: str) -> Any:
    """A layer kind's setting; a clear error when the model builder left it
    out."""
    for key, value in self.options:
      if key == name:
        return value
    raise ValueError(f"layer setting {name!r} missing from StackSpec.options "
                     f"{dict(self.options)} (the defense's model builder "
                     "passes it from config.defense)")


@dataclasses.dataclass
class BuildContext:
  """What a layer builder sees: its argument, the incoming shape, the spec."""
  arg: int | None             # "conv:28" -> 28
  shape: tuple[int, ...]      # (H, W, C) for feature layers, (D,) after
  spec: StackSpec
  index: int                  # position among the feature layers (or slot)
  rngs: nnx.Rngs
  num_sparse: int = 0         # sparse layers built before this one


@dataclasses.dataclass
class CallContext:
  """What a layer's apply function sees besides its module and input."""
  name: str                   # the representation name of its output
  train: bool
  key: jax.Array              # this layer's own key
  spec: StackSpec
  reps: dict[str, jax.Array]  # extra representations may be added here


@dataclasses.dataclass(frozen=True)
class LayerKind:
  """A registered layer kind.

  build(ctx) -> (module or None, output shape); apply(module, h, ctx) -> h.
  """
  build: Callable[[BuildContext], tuple[Any, tuple[int, ...]]]
  apply: Callable[[Any, jax.Array, CallContext], jax.Array]
  needs_arg: bool = False  # "kind:N" (a feature count or width) required
  sparse: bool = False     # a sparse coding layer (Hebbian rule, stats)


LAYERS: Registry[LayerKind] = Registry("layer kind")


def register_layer(name: str, build, apply, needs_arg: bool = False,
                   sparse: bool = False) -> LayerKind:
  """Registers a layer kind usable in `StackSpec` layer specs."""
  return LAYERS.register(name)(LayerKind(build, apply, needs_arg, sparse))


def _stateless(ctx: BuildContext):
  return None, ctx.shape


def _build_lca(ctx: BuildContext):
  h, w, c = ctx.shape
  spec = ctx.spec
  stride = (spec.lca_strides[ctx.num_sparse]
            if ctx.num_sparse < len(spec.lca_strides) else spec.lca.stride)
  num_iters = (spec.lca_iters[ctx.num_sparse]
               if ctx.num_sparse < len(spec.lca_iters)
               else spec.lca.num_iters)
  cfg = dataclasses.replace(spec.lca, stride=stride, num_iters=num_iters)
  module = SparseCoding(c, ctx.arg, cfg, spec.kernel, rngs=ctx.rngs)
  return module, (-(-h // stride), -(-w // stride), ctx.arg)


def _apply_lca(module, h, ctx: CallContext):
  result = module.solve(h)
  # What the layer coded (normalised input), for the Hebbian rule.
  ctx.reps[f"{ctx.name}_input"] = result.input_BHWC
  return result.codes_BHWF


def _build_conv(ctx: BuildContext):
  h, w, c = ctx.shape
  s, k = ctx.spec.conv_stride, ctx.spec.kernel
  module = nnx.Conv(c, ctx.arg, (k, k), strides=s, padding="SAME",
                    rngs=ctx.rngs)
  return module, (-(-h // s), -(-w // s), ctx.arg)


def _build_gn(ctx: BuildContext):
  # Per-example normalisation: no batch statistics, so per-example gradients
  # (DP-SGD) are well defined (Opacus requires the same).
  c = ctx.shape[-1]
  groups = math.gcd(int(ctx.spec.option("gn_groups")), c)
  return nnx.GroupNorm(c, num_groups=groups, rngs=ctx.rngs), ctx.shape


def _build_pool(ctx: BuildContext):
  h, w, c = ctx.shape
  return None, (h // 2, w // 2, c)


register_layer("lca", _build_lca, _apply_lca, needs_arg=True, sparse=True)
register_layer("conv", _build_conv,
               lambda m, h, ctx: jax.nn.relu(m(h)), needs_arg=True)
register_layer(
    "bn", lambda ctx: (nnx.BatchNorm(ctx.shape[-1], momentum=0.9,
                                     rngs=ctx.rngs), ctx.shape),
    lambda m, h, ctx: m(h, use_running_average=not ctx.train))
register_layer("gn", _build_gn, lambda m, h, ctx: m(h))
register_layer("relu", _stateless, lambda m, h, ctx: jax.nn.relu(h))
register_layer(
    "dropout", lambda ctx: (nnx.Dropout(ctx.spec.dropout, rngs=ctx.rngs),
                            ctx.shape),
    lambda m, h, ctx: m(h, deterministic=not ctx.train))
register_layer("pool", _build_pool,
               lambda m, h, ctx: nnx.max_pool(h, (2, 2), strides=(2, 2)))

# Key salts so the noise of after-hidden and before-head layers never collides
# with that of feature layers (which use their index).
_AFTER_HIDDEN_SALT, _BEFORE_HEAD_SALT = 1000, 2000


def _parse(spec: str) -> tuple[str, LayerKind, int | None]:
  name, _, arg = spec.partition(":")
  if name not in LAYERS:
    raise ValueError(f"unknown layer {spec!r}; layer kinds: {LAYERS.names()}")
  kind = LAYERS.get(name)
  if kind.needs_arg and not arg.isdigit():
    raise ValueError(f"layer {spec!r} needs a size, e.g. '{name}:16'")
  return name, kind, int(arg) if arg else None


class LayerStack(nnx.Module):
  """Feature layers from `spec.layers`, then ReLU linear layers, then logits."""

  def __init__(self, spec: StackSpec, image_shape: tuple[int, int, int],
               num_classes: int, *, rngs: nnx.Rngs):
    self.spec = spec
    shape: tuple[int, ...] = tuple(image_shape)
    self.names: list[str] = []
    self.feature_layers = nnx.List()
    kinds, n_sparse = [], 0
    for i, layer in enumerate(spec.layers):
      name, kind, arg = _parse(layer)
      module, shape = kind.build(BuildContext(arg, shape, spec, i, rngs,
                                              n_sparse))
      n_sparse += kind.sparse
      self.feature_layers.append(module)
      self.names.append(f"layer{i}_{name}")
      kinds.append(name)
    widths = (math.prod(shape), *spec.hidden)
    self.hidden_layers = nnx.List(
        [nnx.Linear(a, b, rngs=rngs) for a, b in zip(widths[:-1], widths[1:])])
    # One module per (hidden layer, after-hidden kind); built in that order.
    self.after_hidden_layers = nnx.List()
    for i, width in enumerate(widths[1:]):
      for layer in spec.after_hidden:
        _, kind, arg = _parse(layer)
        self.after_hidden_layers.append(kind.build(BuildContext(
            arg, (width,), spec, i, rngs))[0])
    shape = (widths[-1],)
    self.before_head_layers = nnx.List()
    for j, layer in enumerate(spec.before_head):
      _, kind, arg = _parse(layer)
      module, shape = kind.build(BuildContext(arg, shape, spec, j, rngs))
      self.before_head_layers.append(module)
    self.head = nnx.Linear(shape[-1], num_classes, rngs=rngs)
    if not 0 <= spec.first_index < max(len(spec.layers), 1):
      raise ValueError(f"first_index {spec.first_index} outside the "
                       f"{len(spec.layers)} feature layers")
    self.kinds = tuple(kinds)

  def __call__(self, x_BHWC: jax.Array, train: bool = False,
               key: jax.Array | None = None
               ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Returns logits and every named representation (after each layer).

    `key` feeds stochastic layers (noise defenses, information bottlenecks),
    each from its own slot's key (module docstring), so every call with a
    fresh key sees fresh noise, as a queried deployed model would.
    """
    # No key (e.g. layer statistics): a fixed one, so noise is never skipped.
    key = jax.random.key(0) if key is None else key
    reps: dict[str, jax.Array] = {}
    spec = self.spec
    h = (x_BHWC - spec.input_mean) / spec.input_std
    for i, (name, kind, module) in enumerate(
        zip(self.names, self.kinds, self.feature_layers)):
      h = LAYERS.get(kind).apply(module, h, CallContext(
          name, train, jax.random.fold_in(key, i), spec, reps))
      reps[name] = h
    h = h.reshape(h.shape[0], -1)
    n_after = len(spec.after_hidden)
    for i, layer in enumerate(self.hidden_layers):
      h = jax.nn.relu(layer(h))
      for k, kind_spec in enumerate(spec.after_hidden):
        h = _parse(kind_spec)[1].apply(
            self.after_hidden_layers[i * n_after + k], h, CallContext(
                f"hidden{i}", train,
                jax.random.fold_in(key, _AFTER_HIDDEN_SALT + i), spec, reps))
      reps[f"hidden{i}"] = h
    for j, (kind_spec, module) in enumerate(
        zip(spec.before_head, self.before_head_layers)):
      name = kind_spec.partition(":")[0]
      h = _parse(kind_spec)[1].apply(module, h, CallContext(
          name, train, jax.random.fold_in(key, _BEFORE_HEAD_SALT + j), spec,
          reps))
      reps[name] = h
    logits = self.head(h)
    if self.names:
      reps["first"] = reps[self.names[spec.first_index]]
    if self.hidden_layers:
      # The paper's split leak (Sec. 3): the first linear layer after the
      # feature layers, with its ReLU as the authors' `first_part` ends.
      reps["first_linear"] = reps["hidden0"]
    reps["last_hidden"] = h
    return logits, reps

  def sparse_layers(self) -> list[tuple[str, SparseCoding]]:
    """(name, layer) for every sparse coding layer, input side first."""
    return [(n, m) for n, k, m in zip(self.names, self.kinds,
                                      self.feature_layers)
            if LAYERS.get(k).sparse]

  def representation_names(self) -> list[str]:
    """Names a threat model may leak (the aliases and every layer)."""
    hidden = [f"hidden{i}" for i in range(len(self.hidden_layers))]
    hidden += [s.partition(":")[0] for s in self.spec.before_head]
    aliases = ["first", "first_linear"] if self.hidden_layers else ["first"]
    return [*aliases, "last_hidden", *self.names, *hidden]
