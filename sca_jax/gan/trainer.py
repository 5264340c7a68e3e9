"""The StyleGAN2 training loop for Plug-&-Play generators, resumable.

Recipe (StyleGAN2 / StyleGAN2-ADA's small-data configuration, shrunk for a
CPU): the `third_party/stylegan2` generator, the residual equalised-lr
discriminator of `discriminator.py` with minibatch std, non-saturating
logistic loss, lazy R1 every `r1_every` steps (gamma from the ADA heuristic
unless given; D's Adam rescaled for the interval as the official code does),
Adam (0, 0.99), an EMA of G whose half-life ramps up with the images seen,
and DiffAugment (translation + cutout) on every image D sees. Unlike the
official loop, D sees G's images clipped to [-1, 1] (`clip_fakes`).

Every step draws its batch, latents and augmentation from
fold_in(key, step), so a resumed run continues exactly as an uninterrupted
one. Losses are checked every step: a non-finite loss, or a D loss near zero
for `collapse_window` steps (D wins outright; G gets no signal), stops the
run with `DivergenceError`, leaving the last checkpoint, which holds a
finite state, untouched.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from sca_jax import checkpoint
from sca_jax.convert import import_stylegan2
from sca_jax.gan import augment
from sca_jax.gan import losses
from sca_jax.gan.discriminator import Discriminator


class DivergenceError(RuntimeError):
  """Training diverged; the last good checkpoint was kept."""


@dataclasses.dataclass
class GanConfig:
  """Hyper-parameters; names double as `scripts/train_generator.py` flags."""

  z_dim: int = 64
  w_dim: int = 64
  mapping_layers: int = 2        # official 'cifar'/'auto' configs use 2
  channel_base: int = 1024       # G width at resolution r: base / r, capped
  channel_max: int = 64
  d_channel_base: int = 512
  d_channel_max: int = 64
  batch_size: int = 32
  lr: float = 0.0025             # official, both networks (equalised lr)
  d_lr: float = 0.0025
  r1_gamma: float = -1.0         # < 0: ADA heuristic 0.0002 R^2 / batch
  r1_every: int = 16             # lazy regularisation interval
  mbstd_group: int = 4
  ema_kimg: float = 10.0         # EMA half-life (official 'auto': B * 10/32)
  ema_rampup: float = 0.05       # half-life <= rampup * images seen
  augment: str = "translation,cutout"  # DiffAugment ops ('' for none)
  augment_strength: float = 1.0
  augment_fill: float = -1.0     # DiffAugment's fill: the [-1, 1] background
  # D sees G's images clipped to [-1, 1], as the attack renders them
  # (`generator.render`). Unclipped, G cannot make MNIST's background
  # exactly -1 (as 85% of real pixels are), D tells fakes by it, and G
  # collapses to near-blank images (docs/plug_and_play.md, session 6).
  clip_fakes: bool = True
  steps: int = 20_000
  minutes: float = 0.0           # wall-time budget of this call (0: none)
  seed: int = 0
  log_every: int = 50
  save_every: int = 500
  eval_every: int = 1000
  eval_samples: int = 2000
  d_loss_floor: float = 0.02     # mean D loss below this ...
  collapse_window: int = 500     # ... over this many steps: collapse

  @property
  def augment_ops(self) -> tuple[str, ...]:
    return tuple(op for op in self.augment.split(",") if op)

  def validate(self) -> None:
    positive = ("z_dim", "w_dim", "mapping_layers", "channel_base",
                "channel_max", "d_channel_base", "d_channel_max", "batch_size",
                "r1_every", "mbstd_group", "steps", "log_every", "save_every",
                "eval_every", "eval_samples", "collapse_window")
    for name in positive:
      if getattr(self, name) < 1:
        raise ValueError(f"GanConfig.{name} must be >= 1, got "
                         f"{getattr(self, name)}")
    for name in ("lr", "d_lr", "ema_kimg"):
      if not getattr(self, name) > 0:
        raise ValueError(f"GanConfig.{name} must be > 0, got "
                         f"{getattr(self, name)}")
    if self.batch_size % min(self.mbstd_group, self.batch_size):
      raise ValueError(f"GanConfig.batch_size={self.batch_size} must be a "
                       f"multiple of mbstd_group={self.mbstd_group}")
    if not 0 <= self.augment_strength <= 1:
      raise ValueError(f"GanConfig.augment_strength must be in [0, 1], got "
                       f"{self.augment_strength}")
    augment.check_policy(self.augment_ops, "GanConfig.augment")

  def gamma(self, resolution: int) -> float:
    return (self.r1_gamma if self.r1_gamma >= 0 else
            losses.r1_gamma_heuristic(resolution, self.batch_size))


def pad_to_power_of_two(images: np.ndarray) -> tuple[np.ndarray, int | None]:
  """[0, 1] NHWC -> [-1, 1] zero(-1)-padded square power of two; + crop size.

  MNIST's 28x28 becomes 32x32 with a black border; the crop size (28) is
  recorded with the generator so the attack cuts the border off again.
  """
  h, w = images.shape[1:3]
  res = max(8, 1 << (max(h, w) - 1).bit_length())
  top, left = (res - h) // 2, (res - w) // 2
  x = np.pad(images * 2.0 - 1.0, ((0, 0), (top, res - h - top),
                                  (left, res - w - left), (0, 0)),
             constant_values=-1.0)
  return x.astype(np.float32), (h if (h == w and h != res) else None)


def generator_kwargs(cfg: GanConfig, resolution: int, channels: int
                     ) -> dict[str, Any]:
  return dict(z_dim=cfg.z_dim, c_dim=0, w_dim=cfg.w_dim,
              img_resolution=resolution, img_channels=channels,
              mapping_kwargs=dict(num_layers=cfg.mapping_layers),
              synthesis_kwargs=dict(channel_base=cfg.channel_base,
                                    channel_max=cfg.channel_max,
                                    conv_clamp=256))


class Setup:
  """Networks, optimisers, the initial state and the jitted train step."""

  def __init__(self, cfg: GanConfig, resolution: int, channels: int,
               make_generator: Callable[[nnx.Rngs], nnx.Module] | None = None):
    """make_generator: another G for diagnostics (same interface as the
    StyleGAN2 port: `.mapping(z, None)` with a `w_avg` buffer, and
    `.synthesis(ws)`); default the port, sized by `cfg`."""
    cfg.validate()
    self.cfg, self.resolution = cfg, resolution
    if make_generator is None:
      sg2 = import_stylegan2()
      kwargs = generator_kwargs(cfg, resolution, channels)
      make_generator = lambda rngs: sg2.Generator(**kwargs, rngs=rngs)
    k_g, k_d, self.key = jax.random.split(jax.random.key(cfg.seed), 3)
    # One compiled initialiser instead of hundreds of eager dispatches.
    gen = nnx.jit(lambda k: make_generator(nnx.Rngs(k)))(k_g)
    disc = nnx.jit(lambda k: Discriminator(
        resolution, channels, cfg.d_channel_base, cfg.d_channel_max,
        cfg.mbstd_group, rngs=nnx.Rngs(k)))(k_d)
    self.g_graph, g_params, g_rest = nnx.split(gen, nnx.Param, ...)
    self.d_graph, d_params = nnx.split(disc)
    self.g_tx = optax.adam(cfg.lr, b1=0.0, b2=0.99, eps=1e-8)
    # Lazy R1: the official code shrinks D's learning rate and beta2 so that
    # the regularised steps do not move D further per image seen.
    c = cfg.r1_every / (cfg.r1_every + 1)
    self.d_tx = optax.adam(cfg.d_lr * c, b1=0.0, b2=0.99 ** c, eps=1e-8)
    # The EMA starts as a copy: donated buffers must not alias.
    self.initial_state = dict(
        g=g_params, g_rest=g_rest, g_ema=jax.tree.map(jnp.copy, g_params),
        d=d_params, g_opt=self.g_tx.init(g_params),
        d_opt=self.d_tx.init(d_params))
    self.step = jax.jit(self._step, donate_argnums=0)

  def generator(self, state: dict[str, Any]) -> Any:
    """The EMA generator (what gets saved and evaluated)."""
    return nnx.merge(self.g_graph, state["g_ema"], state["g_rest"])

  def fakes(self, g_params, g_rest, key: jax.Array, n: int
            ) -> tuple[jax.Array, jax.Array]:
    """n images of raw G as D sees them (clipped if `clip_fakes`), and
    their ws."""
    gen = nnx.merge(self.g_graph, g_params, g_rest)
    ws = gen.mapping(jax.random.normal(key, (n, self.cfg.z_dim)), None)
    x = gen.synthesis(ws)
    return (jnp.clip(x, -1.0, 1.0) if self.cfg.clip_fakes else x), ws

  def train_step(self, state, data_NHWC, step: int):
    """Step `step` of a run (its randomness from `fold_in(key, step)`),
    with lazy R1 on every `r1_every`-th step."""
    return self.step(state, data_NHWC, self.key, jnp.int32(step),
                     jnp.bool_((step + 1) % self.cfg.r1_every == 0))

  def _step(self, state, data_NHWC, key, step, r1):
    """One D then one G step; `r1` (a traced bool) adds the lazy R1 term.

    R1 under `lax.cond` rather than as a static flag: one compiled program
    instead of two, and the penalty's double backward runs only when due.
    """
    cfg, batch = self.cfg, self.cfg.batch_size
    gamma = self.cfg.gamma(self.resolution)
    k_real, k_zd, k_ar, k_af, k_zg, k_ag = jax.random.split(
        jax.random.fold_in(key, step), 6)
    # One draw per minibatch-std group (see diff_augment).
    aug = lambda x, k: augment.diff_augment(
        x, k, cfg.augment_ops, cfg.augment_strength, cfg.augment_fill,
        groups_of=min(cfg.mbstd_group, batch))
    real = data_NHWC[jax.random.randint(k_real, (batch,), 0,
                                        data_NHWC.shape[0])]

    generate = lambda g, k: self.fakes(g, state["g_rest"], k, batch)
    fake = jax.lax.stop_gradient(generate(state["g"], k_zd)[0])

    def d_loss_fn(d_params):
      disc = nnx.merge(self.d_graph, d_params)
      d_real = lambda x: disc(aug(x, k_ar))
      main = losses.d_logistic(d_real(real), disc(aug(fake, k_af)))
      penalty = jax.lax.cond(r1, lambda: losses.r1_penalty(d_real, real),
                             lambda: jnp.zeros(()))
      # Lazy regularisation: r1_every times the weight, 1/r1_every as often.
      return main + 0.5 * gamma * cfg.r1_every * penalty, (main, penalty)

    (_, (d_main, r1_value)), d_grads = jax.value_and_grad(
        d_loss_fn, has_aux=True)(state["d"])
    d_updates, d_opt = self.d_tx.update(d_grads, state["d_opt"], state["d"])
    d_params = optax.apply_updates(state["d"], d_updates)

    def g_loss_fn(g_params):
      x, ws = generate(g_params, k_zg)
      disc = nnx.merge(self.d_graph, d_params)
      return losses.g_nonsaturating(disc(aug(x, k_ag))), ws

    (g_loss, ws), g_grads = jax.value_and_grad(g_loss_fn, has_aux=True)(
        state["g"])
    g_updates, g_opt = self.g_tx.update(g_grads, state["g_opt"], state["g"])
    g_params = optax.apply_updates(state["g"], g_updates)
    # Track the mean w (truncation pulls towards it), as the official G does.
    gen = nnx.merge(self.g_graph, g_params, state["g_rest"])
    mean_w = jax.lax.stop_gradient(ws[:, 0].mean(axis=0))
    gen.mapping.w_avg[...] = mean_w + 0.995 * (gen.mapping.w_avg[...] - mean_w)
    g_rest = nnx.state(gen, nnx.Not(nnx.Param))
    seen = (step + 1) * batch
    half_life = jnp.minimum(cfg.ema_kimg * 1000.0, cfg.ema_rampup * seen)
    beta = 0.5 ** (batch / jnp.maximum(half_life, 1e-8))
    g_ema = jax.tree.map(lambda e, p: p + beta * (e - p), state["g_ema"],
                         g_params)
    new_state = dict(g=g_params, g_rest=g_rest, g_ema=g_ema, d=d_params,
                     g_opt=g_opt, d_opt=d_opt)
    return new_state, dict(d_loss=d_main, g_loss=g_loss, r1=r1_value)


# Fields only the Python loop reads: configs differing in these alone share
# one `Setup` (and its compiled step).
_LOOP_FIELDS = frozenset(("steps", "minutes", "log_every", "save_every",
                          "eval_every", "eval_samples", "d_loss_floor",
                          "collapse_window"))


def _step_fields(cfg: GanConfig) -> tuple[tuple[str, Any], ...]:
  return tuple((f.name, getattr(cfg, f.name)) for f in dataclasses.fields(cfg)
               if f.name not in _LOOP_FIELDS)


def get_setup(cfg: GanConfig, resolution: int, channels: int) -> Setup:
  """A `Setup` for `cfg`, reused across calls (tests, resumed runs)."""
  cfg.validate()
  return _cached_setup(_step_fields(cfg), resolution, channels)


@functools.lru_cache(maxsize=4)
def _cached_setup(fields: tuple[tuple[str, Any], ...], resolution: int,
                  channels: int) -> Setup:
  return Setup(GanConfig(**dict(fields)), resolution, channels)


def open_checkpoints(cfg: GanConfig, out_dir: str | Path,
                     image_shape: tuple[int, ...],
                     log: Callable[[str], None] = print
                     ) -> checkpoint.Checkpointer:
  """`out_dir/checkpoints`, stamped with what decides the weights, so
  another config's checkpoints there are refused, not half-loaded."""
  return checkpoint.Checkpointer(
      Path(out_dir) / "checkpoints", log=log, fingerprint=dict(
          _step_fields(cfg), image_shape=list(image_shape)))


def _host_copy(tree: Any) -> Any:
  # A real copy: the next step donates (overwrites) the device buffers.
  return jax.tree.map(lambda v: np.array(v, copy=True), tree)


def train(cfg: GanConfig, data_NHWC: np.ndarray, out_dir: str | Path, *,
          on_checkpoint: Callable[[int, Setup, dict[str, Any]], None]
          | None = None,
          on_eval: Callable[[int, Setup, dict[str, Any]], dict[str, Any]]
          | None = None,
          log: Callable[[str], None] = print) -> tuple[dict[str, Any], int]:
  """Trains (or resumes) on `data_NHWC` ([-1, 1], square power of two).

  Checkpoints go to `out_dir/checkpoints` every `save_every` steps and at
  the end; `on_checkpoint(step, setup, state)` runs after each (export the
  generator, a sample grid), `on_eval(step, setup, state)` every
  `eval_every` steps returns quality figures shown in the progress line.
  Returns the final state and step.

  Raises:
    DivergenceError: non-finite losses or a collapsed D loss.
  """
  setup = get_setup(cfg, data_NHWC.shape[1], data_NHWC.shape[3])
  ckpt = open_checkpoints(cfg, out_dir, data_NHWC.shape[1:], log)
  # A copy: the step donates its input, and the Setup may be reused.
  state = jax.tree.map(jnp.copy, setup.initial_state)
  start = 0
  restored = ckpt.restore_latest(state)
  if restored is not None:
    state, start = restored, int(ckpt.latest_step())
    log(f"resumed at step {start} from {ckpt.directory}")
  data = jnp.asarray(data_NHWC)
  recent_d = collections.deque(maxlen=cfg.collapse_window)
  latest: dict[str, Any] = {}
  t0 = t_log = time.time()
  step, n_log, last_r1 = start, 0, "-"

  def save(at: int) -> None:
    host = _host_copy(state)
    if not checkpoint.all_finite(host):
      raise DivergenceError(f"non-finite weights at step {at}; not saved. "
                            f"{_kept(ckpt)}")
    ckpt.save(at, host)
    ckpt.wait()
    if on_checkpoint is not None:
      on_checkpoint(at, setup, state)

  try:
    while step < cfg.steps:
      if cfg.minutes and time.time() - t0 > cfg.minutes * 60:
        log(f"time budget of {cfg.minutes} min reached")
        break
      state, m = setup.train_step(state, data, step)
      step, n_log = step + 1, n_log + 1
      d_loss, g_loss = float(m["d_loss"]), float(m["g_loss"])
      if not (math.isfinite(d_loss) and math.isfinite(g_loss)
              and math.isfinite(float(m["r1"]))):
        raise DivergenceError(
            f"non-finite loss at step {step} (D {d_loss}, G {g_loss}, R1 "
            f"{float(m['r1'])}). {_kept(ckpt)} Lower --lr/--d_lr or raise "
            f"--r1_gamma, then resume.")
      recent_d.append(d_loss)
      if step % cfg.r1_every == 0:
        last_r1 = f"{float(m['r1']):.3g}"
      if (len(recent_d) == recent_d.maxlen
          and np.mean(recent_d) < cfg.d_loss_floor):
        raise DivergenceError(
            f"D loss collapsed: mean {np.mean(recent_d):.4g} < d_loss_floor "
            f"{cfg.d_loss_floor} over the last {cfg.collapse_window} steps "
            f"(step {step}): D rejects every sample and G learns nothing. "
            f"{_kept(ckpt)} Raise --r1_gamma or --augment_strength.")
      if on_eval is not None and step % cfg.eval_every == 0:
        latest = on_eval(step, setup, state)
      if step % cfg.log_every == 0 or step == start + 1:
        now = time.time()
        rate = n_log / max(now - t_log, 1e-9)
        t_log, n_log = now, 0
        eta = (cfg.steps - step) / rate
        if cfg.minutes:
          eta = min(eta, cfg.minutes * 60 - (now - t0))
        shown = "".join(f" {k} {v}" for k, v in latest.items())
        log(f"step {step}/{cfg.steps} D {d_loss:.3f} G {g_loss:.3f} R1 "
            f"{last_r1} | {rate * cfg.batch_size:.0f} img/s, ETA "
            f"{max(eta, 0) / 60:.1f} min |{shown or ' no eval yet'}")
      if step % cfg.save_every == 0:
        save(step)
    if ckpt.latest_step() != step:
      save(step)
  finally:
    ckpt.close()
  return state, step


def _kept(ckpt: checkpoint.Checkpointer) -> str:
  last = ckpt.latest_step()
  if last is None:
    return "No checkpoint was written yet."
  return (f"The last good checkpoint (step {last}, {ckpt.directory}) is "
          f"kept; the same command resumes from it.")


def save_history(path: Path, entry: dict[str, Any]) -> list[dict[str, Any]]:
  """Appends `entry` to the JSON list at `path` (dropping later steps left
  by an interrupted run) and returns the list."""
  history = json.loads(path.read_text()) if path.is_file() else []
  history = [h for h in history if h["step"] < entry["step"]] + [entry]
  path.write_text(json.dumps(history, indent=1) + "\n")
  return history
