"""The independent evaluation classifier that judges reconstructions.

A small CNN (conv5x5(32)/2 - conv5x5(64)/2 - dense128, no batch norm; unlike
the targets in widths, depth and normalisation),
trained with optax on data DISJOINT from the target's training split: a judge
must never have seen the images being reconstructed (those are the target's
training images), or it would recognise them rather than judge them. It
trains on the target's test split, less its last `holdout_fraction`, on which
its accuracy is reported (`info()`: `trained_on`). It gives
  * attack accuracy: the share of reconstructions it assigns to the true label;
  * FID features: its 128-d penultimate activations. FID over these features
    is "FID over eval-classifier features", not Inception FID; results name the
    network in `fid_feature_network`, e.g. "eval_cnn:mnist:seed0:1a2b3c4d".

Trained parameters are cached under `$SCA_JAX_CACHE_DIR/eval_classifiers/`
(default `~/.cache/sca_jax/eval_classifiers/`) in a folder named after the
data set and a hash of everything that decides the weights: architecture
version, config, seed, and the training images and labels themselves.

Config (`config.eval_classifier`, every field optional; `DEFAULTS` below).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from sca_jax import batching, metrics
from sca_jax.cache import CACHE_ENV, cache_dir

# Bump when the architecture or training procedure changes: old caches then
# stop matching instead of being loaded into a different network.
ARCH_VERSION = "eval_cnn_v4"  # v4: trained on the test split, not train

DEFAULTS = dict(
    epochs=3,            # passes over the (capped) training split
    batch_size=32,
    learning_rate=2e-3,  # Adam, cosine-decayed to 0 over training
    max_train=10_000,    # cap on the judge's training images (0/None: all)
    holdout_fraction=0.2,  # of the test split: the judge's accuracy, unseen
    seed=0,              # fixed across defenses, so all are judged alike
    cache=True,          # load/save trained parameters
    eval_batch_size=500,
)


def with_defaults(defaults: Mapping[str, Any], overrides: Any,
                  where: str) -> ml_collections.ConfigDict:
  """`defaults` updated by `overrides`; unknown fields raise ValueError.

  Args:
    defaults: every allowed field with its default value.
    overrides: a ConfigDict, dict or None.
    where: the config path for messages, e.g. "eval_classifier".
  """
  cfg = ml_collections.ConfigDict(dict(defaults))
  if overrides is None:
    return cfg
  items = overrides.items() if hasattr(overrides, "items") else None
  if items is None:
    raise ValueError(f"config.{where} must be a ConfigDict or dict, got "
                     f"{type(overrides).__name__}")
  for key, value in items:
    if key not in cfg:
      raise ValueError(f"unknown field config.{where}.{key}; allowed: "
                       f"{sorted(cfg.keys())}")
    if isinstance(value, ml_collections.ConfigDict):
      value = value.to_dict()
    try:
      cfg[key] = value
    except TypeError as e:
      raise ValueError(f"config.{where}.{key}: {e}") from None
  return cfg


def check_config(cfg: ml_collections.ConfigDict,
                 where: str = "eval_classifier") -> None:
  for key in ("epochs", "batch_size", "eval_batch_size"):
    if int(cfg[key]) < 1:
      raise ValueError(f"config.{where}.{key} must be >= 1, got {cfg[key]}")
  if not float(cfg.learning_rate) > 0:
    raise ValueError(f"config.{where}.learning_rate must be > 0, got "
                     f"{cfg.learning_rate}")
  if not 0 < float(cfg.holdout_fraction) < 1:
    raise ValueError(f"config.{where}.holdout_fraction must be in (0, 1), "
                     f"got {cfg.holdout_fraction}")
  if cfg.max_train is not None and int(cfg.max_train) < 0:
    raise ValueError(f"config.{where}.max_train must be >= 0 or None")


class EvalCNN(nnx.Module):
  """conv5x5(32)/2-ReLU-conv5x5(64)/2-ReLU-dense(128)-ReLU-logits.

  Strided convolutions rather than conv + max-pool: on CPU, XLA's full-size
  convolution gradients made the pooled variant 8x slower per image.
  """

  def __init__(self, image_shape: tuple[int, int, int], num_classes: int, *,
               rngs: nnx.Rngs):
    h, w, c = image_shape
    self.conv1 = nnx.Conv(c, 32, (5, 5), strides=2, padding="SAME", rngs=rngs)
    self.conv2 = nnx.Conv(32, 64, (5, 5), strides=2, padding="SAME",
                          rngs=rngs)
    self.dense = nnx.Linear(-(-h // 4) * -(-w // 4) * 64, 128, rngs=rngs)
    self.head = nnx.Linear(128, num_classes, rngs=rngs)

  def features(self, x_BHWC: jax.Array) -> jax.Array:
    h = (x_BHWC - 0.5) / 0.5
    h = jax.nn.relu(self.conv2(jax.nn.relu(self.conv1(h))))
    return jax.nn.relu(self.dense(h.reshape(h.shape[0], -1)))

  def __call__(self, x_BHWC: jax.Array) -> jax.Array:
    return self.head(self.features(x_BHWC))


def batched(fn: Callable[..., Any], batch_size: int, *arrays: np.ndarray
            ) -> Any:
  """`fn(*batches)` over fixed-size batches of `arrays`, outputs concatenated.

  The last batch is zero-padded to `batch_size` (and its padding dropped from
  the outputs), so a jitted `fn` compiles once. `fn` may return an array or a
  tuple/dict of arrays with a leading batch axis; host NumPy comes back.
  """
  n = len(arrays[0])
  if n == 0 or any(len(a) != n for a in arrays):
    raise ValueError(f"batched: need non-empty arrays of equal length, got "
                     f"{[len(a) for a in arrays]}")
  bs = min(int(batch_size), n)
  outs = []
  for i in range(0, n, bs):
    chunks = [np.asarray(a[i:i + bs]) for a in arrays]
    real = len(chunks[0])
    chunks = [np.concatenate([c, np.zeros((bs - real,) + c.shape[1:], c.dtype)])
              if real < bs else c for c in chunks]
    outs.append(jax.tree.map(lambda o, r=real: np.asarray(o)[:r],
                             fn(*chunks)))
  return jax.tree.map(lambda *o: np.concatenate(o), *outs)


@dataclasses.dataclass
class EvalClassifier:
  """A trained evaluation CNN; all outputs are host NumPy arrays."""

  name: str
  graphdef: Any
  state: Any
  test_accuracy: float
  cached: bool
  train_time_s: float
  batch_size: int = 500
  # Which images the judge trained on and was tested on (results.json).
  trained_on: dict[str, Any] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    graphdef = self.graphdef
    self._logits = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))
    self._features = jax.jit(lambda s, x: nnx.merge(graphdef, s).features(x))

  def logits(self, x_BHWC: np.ndarray) -> np.ndarray:
    return batched(lambda b: self._logits(self.state, b), self.batch_size,
                   x_BHWC)

  def features(self, x_BHWC: np.ndarray) -> np.ndarray:
    return batched(lambda b: self._features(self.state, b), self.batch_size,
                   x_BHWC)

  def correct(self, x_BHWC: np.ndarray, labels_B: np.ndarray) -> np.ndarray:
    """Per-image flags: does the classifier give each image its label?"""
    return np.asarray(metrics.per_example_correct(
        self.logits(x_BHWC), jnp.asarray(labels_B)))

  def info(self) -> dict[str, Any]:
    return dict(name=self.name, test_accuracy=self.test_accuracy,
                cached=self.cached, train_time_s=self.train_time_s,
                trained_on=self.trained_on)


def _fingerprint(splits, cfg, n_train: int) -> str:
  """Hash of what decides the weights; the judge trains on `test_*[:n_train]`."""
  h = hashlib.sha256()
  h.update(json.dumps(dict(
      arch=ARCH_VERSION, epochs=int(cfg.epochs), batch_size=int(cfg.batch_size),
      learning_rate=float(cfg.learning_rate), seed=int(cfg.seed),
      n_train=n_train, image_shape=list(splits.image_shape),
      num_classes=int(splits.num_classes)), sort_keys=True).encode())
  h.update(np.ascontiguousarray(splits.test_x[:n_train]).tobytes())
  h.update(np.ascontiguousarray(splits.test_y[:n_train]).tobytes())
  return h.hexdigest()[:16]


def cache_root() -> Path:
  return cache_dir("eval_classifiers")


def _flat_params(state: nnx.State) -> dict[str, np.ndarray]:
  return {jax.tree_util.keystr(path): np.asarray(leaf)
          for path, leaf in jax.tree_util.tree_leaves_with_path(state)}


def _load(path: Path, template: nnx.State) -> nnx.State | None:
  """Parameters from `path` laid onto `template`, or None if they don't fit."""
  try:
    with np.load(path, allow_pickle=False) as f:
      saved = {k: f[k] for k in f.files}
  except (OSError, ValueError):
    return None
  flat = _flat_params(template)
  if set(saved) != set(flat) or any(
      saved[k].shape != v.shape for k, v in flat.items()):
    return None
  return jax.tree_util.tree_map_with_path(
      lambda p, _: jnp.asarray(saved[jax.tree_util.keystr(p)]), template)


def _save(folder: Path, state: nnx.State, meta: dict[str, Any]) -> None:
  """Atomic: a crash leaves no half-written parameters under the final name."""
  folder.mkdir(parents=True, exist_ok=True)
  tmp = folder / f"params.{os.getpid()}.tmp.npz"
  np.savez(tmp, **_flat_params(state))
  os.replace(tmp, folder / "params.npz")
  (folder / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")


def _train(model: EvalCNN, x: np.ndarray, y: np.ndarray, cfg, seed: int
           ) -> nnx.State:
  """Adam on cross-entropy over shuffled host batches, one jitted step each.

  Not a `lax.scan` over the epoch: XLA:CPU runs convolutions inside loops
  about 10x slower than as separate programs (measured on this model).
  """
  graphdef, params = nnx.split(model)
  bs = min(int(cfg.batch_size), len(x))
  steps = len(x) // bs
  tx = optax.adam(optax.cosine_decay_schedule(
      float(cfg.learning_rate), max(1, steps * int(cfg.epochs))))
  opt_state = tx.init(params)

  @jax.jit
  def step(params, opt_state, x_BHWC, y_B):
    def loss_fn(p):
      logits = nnx.merge(graphdef, p)(x_BHWC)
      return optax.softmax_cross_entropy_with_integer_labels(logits,
                                                             y_B).mean()

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  rng = np.random.default_rng(seed)
  for e in range(int(cfg.epochs)):
    losses = []
    for idx in batching.epoch_batches(rng, len(x), bs):
      params, opt_state, loss = step(params, opt_state, x[idx], y[idx])
      losses.append(loss)
    print(f"[eval_classifier] epoch {e + 1}/{cfg.epochs} "
          f"loss {float(jnp.mean(jnp.stack(losses))):.4f}")
  return params


def get_eval_classifier(splits, cfg: Any = None,
                        seed: int | None = None) -> EvalClassifier:
  """Trains (or loads from the cache) the evaluation CNN for `splits`.

  Args:
    splits: `sca_jax.data.Splits`; trains on the first `1 - holdout_fraction`
      of `test_x/test_y` (capped at `cfg.max_train`), never on the target's
      training images, and reports accuracy on the held-out rest of the test
      split.
    cfg: `config.eval_classifier` overrides (ConfigDict, dict or None).
    seed: overrides `cfg.seed` if given.
  """
  cfg = with_defaults(DEFAULTS, cfg, "eval_classifier")
  if seed is not None:
    cfg.seed = int(seed)
  check_config(cfg)
  n_test = len(splits.test_x)
  n_heldout = min(max(1, round(n_test * float(cfg.holdout_fraction))),
                  n_test - 1)
  if n_heldout < 1:
    raise ValueError(f"eval_classifier: the test split ({n_test} images) is "
                     "too small to train and test the judge (config.data."
                     "max_test)")
  n_train = n_test - n_heldout
  if cfg.max_train:
    n_train = min(n_train, int(cfg.max_train))
  digest = _fingerprint(splits, cfg, n_train)
  name = f"eval_cnn:{splits.name}:seed{cfg.seed}:{digest[:8]}"
  model = EvalCNN(splits.image_shape, splits.num_classes,
                  rngs=nnx.Rngs(jax.random.key(int(cfg.seed))))
  graphdef, template = nnx.split(model)
  folder = cache_root() / f"{splits.name}-{digest}"
  state = _load(folder / "params.npz", template) if cfg.cache else None
  cached = state is not None
  t0 = time.time()
  if state is None:
    state = _train(model, splits.test_x[:n_train], splits.test_y[:n_train],
                   cfg, int(cfg.seed))
  train_time = time.time() - t0
  trained_on = dict(
      train=f"target test split [0, {n_train})",
      accuracy_on=f"target test split [{n_test - n_heldout}, {n_test})",
      disjoint_from_target_training=True)
  clf = EvalClassifier(name, graphdef, state, float("nan"), cached,
                       train_time, int(cfg.eval_batch_size), trained_on)
  clf.test_accuracy = float(clf.correct(splits.test_x[n_test - n_heldout:],
                                        splits.test_y[n_test - n_heldout:]
                                        ).mean())
  if cfg.cache and not cached:
    _save(folder, state, dict(name=name, n_train=n_train,
                              config=cfg.to_dict(), train_time_s=train_time,
                              test_accuracy=clf.test_accuracy))
  print(f"[eval_classifier] {name}: test accuracy {clf.test_accuracy:.4f} "
        f"({'cached' if cached else f'trained in {train_time:.1f}s'})")
  return clf


__all__ = ["CACHE_ENV", "DEFAULTS", "EvalCNN", "EvalClassifier", "batched",
           "cache_root", "get_eval_classifier", "with_defaults"]
