"""Flax NNX layers: the sparse coding layer and a named-layer classifier stack.

A `LayerStack` is built from a tuple of layer specs such as
`("lca:16", "bn", "lca:28", "bn")`, followed by a linear head. Every layer's
output is recorded under a stable name (`layer0_lca`, `layer1_bn`, ...,
`hidden0`, ...) so attacks can name the representation they steal; `first`
and `last_hidden` are aliases for the two threat models of the paper.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from sca_jax import lca


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
  conv_stride: int = 1
  input_mean: float = 0.0            # normalisation applied inside the model
  input_std: float = 1.0
  dropout: float = 0.0


LAYER_KINDS = ("lca", "conv", "bn", "relu", "pool", "dropout")


def _parse(spec: str) -> tuple[str, int | None]:
  kind, _, arg = spec.partition(":")
  if kind not in LAYER_KINDS:
    raise ValueError(f"unknown layer {spec!r}; layer kinds: {LAYER_KINDS}")
  if kind in ("lca", "conv") and not arg.isdigit():
    raise ValueError(f"layer {spec!r} needs a feature count, e.g. '{kind}:16'")
  return kind, int(arg) if arg else None


class LayerStack(nnx.Module):
  """Feature layers from `spec.layers`, then ReLU linear layers, then logits."""

  def __init__(self, spec: StackSpec, image_shape: tuple[int, int, int],
               num_classes: int, *, rngs: nnx.Rngs):
    self.spec = spec
    h, w, c = image_shape
    self.names: list[str] = []
    self.feature_layers = nnx.List()
    n_lca = 0
    for i, layer in enumerate(spec.layers):
      kind, feats = _parse(layer)
      module: Any = None
      if kind == "lca":
        stride = (spec.lca_strides[n_lca] if n_lca < len(spec.lca_strides)
                  else spec.lca.stride)
        cfg = dataclasses.replace(spec.lca, stride=stride)
        module = SparseCoding(c, feats, cfg, spec.kernel, rngs=rngs)
        h, w, c, n_lca = -(-h // stride), -(-w // stride), feats, n_lca + 1
      elif kind == "conv":
        s = spec.conv_stride
        module = nnx.Conv(c, feats, (spec.kernel, spec.kernel), strides=s,
                          padding="SAME", rngs=rngs)
        h, w, c = -(-h // s), -(-w // s), feats
      elif kind == "bn":
        module = nnx.BatchNorm(c, momentum=0.9, rngs=rngs)
      elif kind == "dropout":
        module = nnx.Dropout(spec.dropout, rngs=rngs)
      elif kind == "pool":
        h, w = h // 2, w // 2
      self.feature_layers.append(module)
      self.names.append(f"layer{i}_{kind}")
    widths = (h * w * c, *spec.hidden)
    self.hidden_layers = nnx.List(
        [nnx.Linear(a, b, rngs=rngs) for a, b in zip(widths[:-1], widths[1:])])
    self.head = nnx.Linear(widths[-1], num_classes, rngs=rngs)
    self.kinds = tuple(_parse(s)[0] for s in spec.layers)

  def __call__(self, x_BHWC: jax.Array, train: bool = False,
               key: jax.Array | None = None
               ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Returns logits and every named representation (after each layer).

    `key` feeds stochastic layers (noise defenses, information bottlenecks):
    layer i draws from `fold_in(key, i)`, so every call with a fresh key sees
    fresh noise, as a queried deployed model would.
    """
    del key  # no stochastic layer kinds yet; defenses add them
    reps: dict[str, jax.Array] = {}
    h = (x_BHWC - self.spec.input_mean) / self.spec.input_std
    for name, kind, module in zip(self.names, self.kinds, self.feature_layers):
      if kind == "lca":
        result = module.solve(h)
        # What the layer coded (normalised input), for the Hebbian rule.
        reps[f"{name}_input"] = result.input_BHWC
        h = result.codes_BHWF
      elif kind == "conv":
        h = jax.nn.relu(module(h))
      elif kind == "bn":
        h = module(h, use_running_average=not train)
      elif kind == "relu":
        h = jax.nn.relu(h)
      elif kind == "dropout":
        h = module(h, deterministic=not train)
      elif kind == "pool":
        h = nnx.max_pool(h, (2, 2), strides=(2, 2))
      reps[name] = h
    h = h.reshape(h.shape[0], -1)
    for i, layer in enumerate(self.hidden_layers):
      h = jax.nn.relu(layer(h))
      reps[f"hidden{i}"] = h
    logits = self.head(h)
    if self.names:
      reps["first"] = reps[self.names[0]]
    reps["last_hidden"] = h
    return logits, reps

  def sparse_layers(self) -> list[tuple[str, SparseCoding]]:
    """(name, layer) for every sparse coding layer, input side first."""
    return [(n, m) for n, k, m in zip(self.names, self.kinds,
                                      self.feature_layers) if k == "lca"]

  def representation_names(self) -> list[str]:
    """Names a threat model may leak (`first`, `last_hidden` and every layer)."""
    hidden = [f"hidden{i}" for i in range(len(self.hidden_layers))]
    return ["first", "last_hidden", *self.names, *hidden]
