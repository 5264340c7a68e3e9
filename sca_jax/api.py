"""SCA in your own model: the sparse coding layer, its Hebbian step, and a
one-call attack of any Flax NNX classifier (docs/own_model.md).

  from sca_jax import SparseCoding, hebbian_step, attack_model

  class Net(nnx.Module):
    def __init__(self, rngs):
      self.sparse = SparseCoding(1, 16, kernel=5, lam=0.5, stride=2, rngs=rngs)
      ...
    def __call__(self, x):
      h = self.sparse(x)            # non-negative sparse codes
      ...

The dictionary is an `nnx.Param` (`sca_jax.models.Dictionary`), so any optax
optimiser over `nnx.Param` trains it by backprop; its atoms are used
unit-norm (normalised in the forward pass), so no step is needed after the
update. `hebbian_step(model, x)` adds SCA's Hebbian rule in one call.
"""

from __future__ import annotations

import contextlib
import zlib
from pathlib import Path
from typing import Any, Callable, Sequence

import jax
import ml_collections
from flax import nnx

from sca_jax import lca
from sca_jax.models import layers

# (layer, coded input, codes) of every SparseCoding call while recording.
_RECORD: list[tuple[Any, jax.Array, jax.Array]] | None = None


class SparseCoding(layers.SparseCoding):
  """Convolutional sparse coding (LCA) layer for any Flax NNX model.

  Input (B, H, W, in_channels) -> non-negative codes (B, H/stride, W/stride,
  features) minimising 0.5 ||x - D * a||^2 + lam ||a||_1 (the paper's Eq. 1)
  with `num_iters` steps of `solver` ("fista": the same codes as the LCA
  dynamics in far fewer steps; "lca": the paper's dynamics with step 1/tau).
  Each sample is standardised first (`normalize_input`), as in SCA.

  Args:
    in_channels: channels of the input.
    features: number of dictionary atoms (output channels).
    kernel: atom size (kernel x kernel).
    lam: sparsity weight; larger gives sparser codes (the paper: 0.1-1.5).
    stride: stride of the convolutional dictionary.
    solver, num_iters, tau, threshold, normalize_input: see `lca.LCAConfig`.
    rngs: initialisation randomness (`nnx.Rngs`).
  """

  def __init__(self, in_channels: int, features: int, *, kernel: int = 5,
               lam: float = 0.5, stride: int = 1, solver: str = "fista",
               num_iters: int = 15, tau: float = 10.0,
               threshold: str = "soft_nonneg", normalize_input: bool = True,
               rngs: nnx.Rngs):
    cfg = lca.LCAConfig(lam=float(lam), tau=float(tau),
                        num_iters=int(num_iters), stride=int(stride),
                        threshold=threshold, normalize_input=normalize_input,
                        solver=solver)
    super().__init__(int(in_channels), int(features), cfg, int(kernel),
                     rngs=rngs)

  def solve(self, x_BHWC: jax.Array) -> lca.LCAResult:
    # Unit-norm atoms whatever the optimiser did to the stored ones.
    D = lca.normalize_dictionary(self.dictionary.get_value())
    result = lca.solve(x_BHWC, D, self.cfg)
    if _RECORD is not None:
      _RECORD.append((self, result.input_BHWC, result.codes_BHWF))
    return result


@contextlib.contextmanager
def _recording():
  global _RECORD
  outer, _RECORD = _RECORD, []
  try:
    yield _RECORD
  finally:
    _RECORD = outer


def hebbian_step(model: nnx.Module, x_BHWC: jax.Array, lr: float = 0.01,
                 forward: Callable[[nnx.Module, jax.Array], Any] | None = None
                 ) -> int:
  """SCA's Hebbian dictionary rule on every `SparseCoding` layer of `model`.

  Runs `forward(model, x)` (default `model(x)`) once, and moves each layer's
  dictionary by `lr * a^T (x - D a) / (n_active + 1)` on what it coded
  (`lca.hebbian_update`), in place. Call it in your training step, inside or
  outside `nnx.jit`. Returns the number of layers updated.
  """
  with _recording() as calls:
    (forward or (lambda m, x: m(x)))(model, x_BHWC)
  for layer, coded, codes in calls:
    D = lca.normalize_dictionary(layer.dictionary.get_value())
    layer.dictionary.set_value(lca.hebbian_update(
        D, coded, codes, lr, layer.cfg.stride))
  return len(calls)


class _Leaky(nnx.Module):
  """A classifier plus named leak functions, as the attacks query it."""

  def __init__(self, model: nnx.Module,
               leaks: tuple[tuple[str, Callable[..., jax.Array]], ...]):
    self.model = model
    self.leaks = leaks

  def __call__(self, x_BHWC: jax.Array, train: bool = False):
    del train  # the target is frozen in eval mode (`attack_model`)
    return self.model(x_BHWC), {n: fn(self.model, x_BHWC)
                                for n, fn in self.leaks}

  def representation_names(self) -> list[str]:
    return [n for n, _ in self.leaks]


def attack_model(model: nnx.Module, splits, leaks: dict[str, Callable],
                 workdir: str | Path, seed: int = 0,
                 settings: dict[str, dict[str, Any]] | None = None
                 ) -> dict[str, dict]:
  """Runs our attacks on your trained classifier; returns their results.

  Args:
    model: a Flax NNX classifier, `model(x_BHWC) -> logits`; put in eval
      mode here (`model.eval()`: dropout off, batch norm running averages).
    splits: `sca_jax.data.Splits` (e.g. `data.make_splits(config.data,
      seed)`): attacks train on `aux_*` and reconstruct `train_*`.
    leaks: {attack name: fn(model, x_BHWC) -> what that attacker sees}, e.g.
      {"end_to_end": lambda m, x: m.features(x), "split": lambda m, x:
      m.first_block(x)}; any learned-inversion attack (`attacks.ATTACKS`).
    workdir: pictures go to `<workdir>/attacks/<name>.png`.
    seed: the attacks' randomness.
    settings: {attack name: {field: value}} over its defaults (e.g.
      {"end_to_end": {"epochs": 5}}); "eval_classifier" for the judge.

  Returns:
    {attack name: results}, each with psnr, ssim, fid, attack_accuracy and
    their floors (the mean auxiliary image) as in results.json.
  """
  from sca_jax import attacks, config_lib  # pylint: disable=g-import-not-at-top
  settings = dict(settings or {})
  c = config_lib.base_config()
  c.attacks = tuple(leaks)
  for name in leaks:
    attacks.ATTACKS.get(name, field="leaks")
    c.attack[name] = ml_collections.ConfigDict(
        {**c.attack[name].to_dict(), **settings.pop(name, {}), "leak": name})
  c.eval_classifier.update(settings.pop("eval_classifier", {}))
  if settings:
    raise ValueError(f"settings for {sorted(settings)}: not attacks in "
                     f"leaks {sorted(leaks)} nor 'eval_classifier'")
  model.eval()
  target = _Leaky(model, tuple(leaks.items()))
  key = jax.random.key(seed)
  return attacks.run_attacks(c, target, splits, workdir, jax.random.fold_in(
      key, zlib.crc32(b"attack_model")))


__all__ = ["SparseCoding", "attack_model", "hebbian_step"]
