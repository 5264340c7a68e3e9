"""Flax NNX layers: the sparse coding layer and a named-layer classifier stack.

A `LayerStack` is built from a tuple of layer specs such as
`("lca:16", "bn", "lca:28", "bn")`, followed by a linear head. Every layer's
output is recorded under a stable name (`layer0_lca`, `layer1_bn`, ...,
`hidden0`, ...) so attacks can name the representation they steal. Aliases
name the threat models (docs/threat_models.md): `first` (the first feature
layer's output: the stricter `first_layer` attack), `first_linear` (the first
linear layer after the feature layers, post-ReLU: the paper's split leak) and
`last_hidden` (the end-to-end leak).

Stochastic parts (defenses): a "laplace" layer kind (noise on what crosses the
split), Gaussian noise on the hidden linear layers at inference
(`hidden_noise_std`), and a variational bottleneck before the head
(`bottleneck`). Layer i draws from `fold_in(key, i)`.
"""

from __future__ import annotations

import dataclasses
import math
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
  first_index: int = 0               # which feature layer `first` aliases
  gn_groups: int = 4                 # GroupNorm groups ("gn", DP-SGD models)
  laplace_scale: float = 0.5         # b of the "laplace" layer kind
  hidden_noise_std: float = 0.0      # N(0, s) on hidden layers, eval mode only
  bottleneck: int = 0                # >0: stochastic VIB layer of that width
  bottleneck_sample_eval: bool = False  # VIB: sample (True) or use mu at eval


LAYER_KINDS = ("lca", "conv", "bn", "gn", "relu", "pool", "dropout", "laplace")
# Salt so noise keys of the hidden layers and the bottleneck never collide with
# those of feature layers (which use their index).
_HIDDEN_SALT, _BOTTLENECK_SALT = 1000, 2000


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
      elif kind == "gn":
        # Per-example normalisation: no batch statistics, so per-example
        # gradients (DP-SGD) are well defined (Opacus requires the same).
        module = nnx.GroupNorm(c, num_groups=math.gcd(spec.gn_groups, c),
                               rngs=rngs)
      elif kind == "dropout":
        module = nnx.Dropout(spec.dropout, rngs=rngs)
      elif kind == "pool":
        h, w = h // 2, w // 2
      self.feature_layers.append(module)
      self.names.append(f"layer{i}_{kind}")
    widths = (h * w * c, *spec.hidden)
    self.hidden_layers = nnx.List(
        [nnx.Linear(a, b, rngs=rngs) for a, b in zip(widths[:-1], widths[1:])])
    head_in = widths[-1]
    if spec.bottleneck:
      # Encoder statistics: mean and pre-softplus std of the code.
      self.bottleneck_stats = nnx.Linear(widths[-1], 2 * spec.bottleneck,
                                         rngs=rngs)
      head_in = spec.bottleneck
    self.head = nnx.Linear(head_in, num_classes, rngs=rngs)
    if not 0 <= spec.first_index < max(len(spec.layers), 1):
      raise ValueError(f"first_index {spec.first_index} outside the "
                       f"{len(spec.layers)} feature layers")
    self.kinds = tuple(_parse(s)[0] for s in spec.layers)

  def __call__(self, x_BHWC: jax.Array, train: bool = False,
               key: jax.Array | None = None
               ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Returns logits and every named representation (after each layer).

    `key` feeds stochastic layers (noise defenses, information bottlenecks):
    layer i draws from `fold_in(key, i)`, so every call with a fresh key sees
    fresh noise, as a queried deployed model would.
    """
    # No key (e.g. layer statistics): a fixed one, so noise is never skipped.
    key = jax.random.key(0) if key is None else key
    reps: dict[str, jax.Array] = {}
    h = (x_BHWC - self.spec.input_mean) / self.spec.input_std
    for i, (name, kind, module) in enumerate(
        zip(self.names, self.kinds, self.feature_layers)):
      if kind == "lca":
        result = module.solve(h)
        # What the layer coded (normalised input), for the Hebbian rule.
        reps[f"{name}_input"] = result.input_BHWC
        h = result.codes_BHWF
      elif kind == "conv":
        h = jax.nn.relu(module(h))
      elif kind == "bn":
        h = module(h, use_running_average=not train)
      elif kind == "gn":
        h = module(h)
      elif kind == "laplace":
        # Titcombe et al.: noise in training and at inference alike.
        h = h + self.spec.laplace_scale * jax.random.laplace(
            jax.random.fold_in(key, i), h.shape, h.dtype)
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
      if self.spec.hidden_noise_std and not train:
        # Post-training noise on dense layers: deployed model only.
        h = h + self.spec.hidden_noise_std * jax.random.normal(
            jax.random.fold_in(key, _HIDDEN_SALT + i), h.shape, h.dtype)
      reps[f"hidden{i}"] = h
    if self.spec.bottleneck:
      h = self._bottleneck(h, reps, train, key)
    logits = self.head(h)
    if self.names:
      reps["first"] = reps[self.names[self.spec.first_index]]
    if self.hidden_layers:
      # The paper's split leak (Sec. 3): the first linear layer after the
      # feature layers, with its ReLU as the authors' `first_part` ends.
      reps["first_linear"] = reps["hidden0"]
    reps["last_hidden"] = h
    return logits, reps

  def _bottleneck(self, h, reps, train: bool, key) -> jax.Array:
    """Variational information bottleneck (Alemi et al.; MID, Wang et al.)."""
    k = self.spec.bottleneck
    stats = self.bottleneck_stats(h)
    # MID's code: std = softplus(s - 5), so training starts nearly noiseless.
    mu, std = stats[:, :k], jax.nn.softplus(stats[:, k:] - 5.0)
    reps["bottleneck_mu"], reps["bottleneck_std"] = mu, std
    if train or self.spec.bottleneck_sample_eval:
      eps = jax.random.normal(jax.random.fold_in(key, _BOTTLENECK_SALT),
                              mu.shape, mu.dtype)
      z = mu + std * eps
    else:
      z = mu
    reps["bottleneck"] = z
    return z

  def sparse_layers(self) -> list[tuple[str, SparseCoding]]:
    """(name, layer) for every sparse coding layer, input side first."""
    return [(n, m) for n, k, m in zip(self.names, self.kinds,
                                      self.feature_layers) if k == "lca"]

  def representation_names(self) -> list[str]:
    """Names a threat model may leak (the aliases and every layer)."""
    hidden = [f"hidden{i}" for i in range(len(self.hidden_layers))]
    if self.spec.bottleneck:
      hidden.append("bottleneck")
    aliases = ["first", "first_linear"] if self.hidden_layers else ["first"]
    return [*aliases, "last_hidden", *self.names, *hidden]
