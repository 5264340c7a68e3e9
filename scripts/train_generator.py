r"""Trains a small StyleGAN2 on the attacker's AUXILIARY split, for Plug-&-Play.

The generator is the Flax port in `third_party/stylegan2` (the same network
the attack loads); the discriminator is a plain conv net written here. Loss:
non-saturating logistic GAN loss with R1 regularisation on real images
(lazy: every `--r1_every` steps, scaled up to match), Adam (0, 0.99) as the
official code, and an exponential moving average of the generator's weights,
which is what gets saved. Only `make_splits(cfg.data, seed).aux_x` is used:
never the target's training images.

Output (default `$SCA_JAX_CACHE_DIR/generators/<name>`, else
`~/.cache/sca_jax/generators/<name>`): `params/` + `config.json` in the format
of `sca_jax.convert.stylegan.save_generator`, so
`config.attack.plug_and_play.generator_path` can point at it; `train_state/`
(orbax) + `train_state.json` for resuming (rerun the same command; pass
`--restart` to start over). Images smaller than a power of two are zero-padded
(MNIST 28 -> 32); `config.json` records `source.center_crop` so the attack
crops them back.

  python scripts/train_generator.py --dataset mnist --data_dir /path/to/data \
      --name mnist_aux --minutes 60     # about an hour on a laptop CPU
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import jax
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax import nnx

from sca_jax import config_lib
from sca_jax import generator as gen_lib
from sca_jax.convert import import_stylegan2
from sca_jax.convert import stylegan
from sca_jax.data import make_splits


class Discriminator(nnx.Module):
  """conv3x3 pairs halving the resolution down to 4x4, minibatch std, dense."""

  def __init__(self, resolution: int, channels: int, channel_base: int,
               channel_max: int, *, rngs: nnx.Rngs):
    width = lambda res: min(channel_base // res, channel_max)
    self.from_rgb = nnx.Conv(channels, width(resolution), (1, 1), rngs=rngs)
    self.blocks = nnx.List()
    res = resolution
    while res > 4:
      self.blocks.append(nnx.List([
          nnx.Conv(width(res), width(res), (3, 3), rngs=rngs),
          nnx.Conv(width(res), width(res // 2), (3, 3), strides=2,
                   rngs=rngs)]))
      res //= 2
    self.conv = nnx.Conv(width(4) + 1, width(4), (3, 3), rngs=rngs)
    self.fc = nnx.Linear(16 * width(4), width(4), rngs=rngs)
    self.out = nnx.Linear(width(4), 1, rngs=rngs)

  def __call__(self, x_NHWC: jax.Array) -> jax.Array:
    act = lambda h: jax.nn.leaky_relu(h, 0.2)
    h = act(self.from_rgb(x_NHWC))
    for conv, down in self.blocks:
      h = act(down(act(conv(h))))
    # Minibatch standard deviation (as StyleGAN2): one extra feature map
    # telling D how varied the batch is, against mode collapse.
    std = jnp.sqrt(h.var(axis=0) + 1e-8).mean()
    h = jnp.concatenate([h, jnp.full(h.shape[:3] + (1,), std)], axis=-1)
    h = act(self.conv(h))
    return self.out(act(self.fc(h.reshape(h.shape[0], -1))))[:, 0]


def make_steps(g_graph, d_graph, g_tx, d_tx, args):
  """Pure jitted D and G steps over the state dict (donated: in place)."""

  def fake(g_params, g_rest, z):
    gen = nnx.merge(g_graph, g_params, g_rest)
    ws = gen.mapping(z, None)
    return gen.synthesis(ws), ws

  def d_step(state, real, key, r1: bool):
    g_params, g_rest, d_params, d_opt = state["g"], state["g_rest"], \
        state["d"], state["d_opt"]
    z = jax.random.normal(key, (real.shape[0], args.z_dim))
    x_fake = jax.lax.stop_gradient(fake(g_params, g_rest, z)[0])

    def loss_fn(dp):
      d = nnx.merge(d_graph, dp)
      loss = (jax.nn.softplus(d(x_fake)) + jax.nn.softplus(-d(real))).mean()
      penalty = jnp.zeros(())
      if r1:
        grad = jax.grad(lambda x: d(x).sum())(real)
        penalty = jnp.square(grad).sum(axis=(1, 2, 3)).mean()
        loss = loss + 0.5 * args.r1_gamma * args.r1_every * penalty
      return loss, penalty

    (loss, penalty), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        d_params)
    updates, d_opt = d_tx.update(grads, d_opt, d_params)
    return dict(state, d=optax.apply_updates(d_params, updates),
                d_opt=d_opt), dict(d_loss=loss, r1=penalty)

  def g_step(state, key):
    def loss_fn(gp):
      z = jax.random.normal(key, (args.batch_size, args.z_dim))
      x, ws = fake(gp, state["g_rest"], z)
      d = nnx.merge(d_graph, state["d"])
      return jax.nn.softplus(-d(x)).mean(), ws

    (loss, ws), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["g"])
    updates, g_opt = g_tx.update(grads, state["g_opt"], state["g"])
    g = optax.apply_updates(state["g"], updates)
    # Track the mean w, which truncation (psi < 1) pulls towards.
    gen = nnx.merge(g_graph, g, state["g_rest"])
    mean_w = jax.lax.stop_gradient(ws[:, 0].mean(axis=0))
    gen.mapping.w_avg[...] = mean_w + 0.995 * (gen.mapping.w_avg[...] - mean_w)
    rest = nnx.state(gen, nnx.Not(nnx.Param))
    beta = 0.5 ** (args.batch_size / args.ema_half_life)
    ema = jax.tree.map(lambda e, p: p + beta * (e - p), state["g_ema"], g)
    return dict(state, g=g, g_rest=rest, g_opt=g_opt, g_ema=ema), dict(
        g_loss=loss)

  return (jax.jit(d_step, static_argnums=3, donate_argnums=0),
          jax.jit(g_step, donate_argnums=0))


def prepare(images: np.ndarray) -> tuple[np.ndarray, int, int | None]:
  """[0, 1] NHWC -> [-1, 1], zero-padded to a square power of two."""
  h, w = images.shape[1:3]
  res = max(4, 1 << (max(h, w) - 1).bit_length())
  top, left = (res - h) // 2, (res - w) // 2
  x = np.pad(images * 2.0 - 1.0, ((0, 0), (top, res - h - top),
                                  (left, res - w - left), (0, 0)),
             constant_values=-1.0)
  return x.astype(np.float32), res, (h if (h == w and h != res) else None)


def _save_state(folder: Path, state: Any, meta: dict[str, Any]) -> None:
  leaves = jax.tree.leaves(state)
  ckpt = ocp.StandardCheckpointer()
  ckpt.save(folder / "train_state", {f"{i:05d}": np.asarray(v) for i, v in
                                     enumerate(leaves)}, force=True)
  ckpt.wait_until_finished()
  ckpt.close()
  (folder / "train_state.json").write_text(json.dumps(meta, indent=2) + "\n")


def _restore_state(folder: Path, template: Any) -> Any:
  leaves, treedef = jax.tree.flatten(template)
  ckpt = ocp.StandardCheckpointer()
  try:
    restored = ckpt.restore(folder / "train_state", {
        f"{i:05d}": jax.ShapeDtypeStruct(v.shape, v.dtype)
        for i, v in enumerate(leaves)})
  finally:
    ckpt.close()
  return jax.tree.unflatten(treedef, [jnp.asarray(restored[f"{i:05d}"])
                                      for i in range(len(leaves))])


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--dataset", default="mnist")
  p.add_argument("--data_dir", default=None)
  p.add_argument("--seed", type=int, default=0, help="split seed (config.seed)")
  p.add_argument("--name", default=None, help="default: <dataset>_aux")
  p.add_argument("--out", default=None, help="default: cache dir / <name>")
  p.add_argument("--steps", type=int, default=20_000)
  p.add_argument("--minutes", type=float, default=60.0, help="time budget")
  p.add_argument("--batch_size", type=int, default=32)
  p.add_argument("--z_dim", type=int, default=64)
  p.add_argument("--w_dim", type=int, default=64)
  p.add_argument("--channel_base", type=int, default=512)
  p.add_argument("--channel_max", type=int, default=64)
  p.add_argument("--mapping_layers", type=int, default=2)
  p.add_argument("--lr", type=float, default=0.0025,
                 help="generator Adam lr (its layers use equalised lr)")
  p.add_argument("--d_lr", type=float, default=0.0002,
                 help="discriminator Adam lr: D uses plain layers, so the "
                      "official 0.0025 (meant for equalised-lr layers, whose "
                      "stored weights are ~sqrt(fan_in) larger) diverges here")
  p.add_argument("--r1_gamma", type=float, default=0.1)
  p.add_argument("--r1_every", type=int, default=16)
  p.add_argument("--ema_half_life", type=float, default=10_000.0,
                 help="images (official ema_kimg 10)")
  p.add_argument("--log_every", type=int, default=50)
  p.add_argument("--save_every", type=int, default=500)
  p.add_argument("--restart", action="store_true")
  args = p.parse_args(argv)

  cfg = config_lib.get_config(None, name="no_defense", dataset=args.dataset)
  if args.data_dir:
    cfg.data.data_dir = args.data_dir
  splits = make_splits(cfg.data, args.seed)
  x_all, res, crop = prepare(splits.aux_x)  # the attacker's data only
  name = args.name or f"{args.dataset}_aux"
  out = Path(args.out) if args.out else gen_lib.cache_dir(name)
  out.mkdir(parents=True, exist_ok=True)
  print(f"{len(x_all)} auxiliary images {splits.aux_x.shape[1:]} -> {res}x"
        f"{res}; output {out}", flush=True)

  kwargs = dict(z_dim=args.z_dim, c_dim=0, w_dim=args.w_dim,
                img_resolution=res, img_channels=x_all.shape[-1],
                mapping_kwargs=dict(num_layers=args.mapping_layers),
                synthesis_kwargs=dict(channel_base=args.channel_base,
                                      channel_max=args.channel_max,
                                      conv_clamp=256))
  sg2 = import_stylegan2()
  key = jax.random.key(args.seed)
  k_g, k_d, key = jax.random.split(key, 3)
  # One compiled initialiser instead of hundreds of eager dispatches.
  gen = nnx.jit(lambda k: sg2.Generator(**kwargs, rngs=nnx.Rngs(k)))(k_g)
  disc = nnx.jit(lambda k: Discriminator(
      res, x_all.shape[-1], args.channel_base, args.channel_max,
      rngs=nnx.Rngs(k)))(k_d)
  g_graph, g_params, g_rest = nnx.split(gen, nnx.Param, ...)
  d_graph, d_params = nnx.split(disc)
  g_tx = optax.adam(args.lr, b1=0.0, b2=0.99)
  # Lazy R1: the official rescales D's Adam for its regularisation interval.
  c = args.r1_every / (args.r1_every + 1)
  d_tx = optax.adam(args.d_lr * c, b1=0.0, b2=0.99 ** c)
  # The EMA starts as a copy: donated buffers must not alias.
  state = dict(g=g_params, g_rest=g_rest,
               g_ema=jax.tree.map(jnp.copy, g_params), d=d_params,
               g_opt=g_tx.init(g_params), d_opt=d_tx.init(d_params))
  start = 0
  if (out / "train_state.json").is_file() and not args.restart:
    state = _restore_state(out, state)
    start = json.loads((out / "train_state.json").read_text())["step"]
    print(f"resumed at step {start}", flush=True)
  d_step, g_step = make_steps(g_graph, d_graph, g_tx, d_tx, args)

  z_show = jax.random.normal(jax.random.key(1), (64, args.z_dim))

  def save(step: int) -> None:
    _save_state(out, state, dict(step=step, args=vars(args)))
    ema = nnx.merge(g_graph, state["g_ema"], state["g_rest"])
    # The same 64 latents every time: watch samples.png improve.
    shown = np.asarray(gen_lib.render(ema(z_show, None), x_all.shape[1:],
                                      None))
    _, h, w, c = shown.shape
    grid = shown.reshape(8, 8, h, w, c).transpose(0, 2, 1, 3, 4).reshape(
        8 * h, 8 * w, c)
    plt.imsave(out / "samples.png", grid[..., 0] if c == 1 else grid,
               cmap="gray", vmin=0.0, vmax=1.0)
    stylegan.save_generator(ema, out, dict(
        trained_by="scripts/train_generator.py", dataset=args.dataset,
        split="aux", split_seed=args.seed, num_images=len(x_all), steps=step,
        images_seen=step * args.batch_size, center_crop=crop))

  rng = np.random.default_rng(args.seed + start)
  t0, t_log, step = time.time(), time.time(), start
  budget = args.minutes * 60.0
  while step < args.steps and time.time() - t0 < budget:
    step += 1
    real = x_all[rng.integers(0, len(x_all), args.batch_size)]
    k = jax.random.fold_in(key, step)
    state, dm = d_step(state, real, jax.random.fold_in(k, 0),
                       step % args.r1_every == 0)
    state, gm = g_step(state, jax.random.fold_in(k, 1))
    if step % args.log_every == 0 or step == start + 1:
      now = time.time()
      rate = (args.log_every if step > start + 1 else 1) / max(now - t_log,
                                                                1e-9)
      t_log = now
      left = min((args.steps - step) / rate, budget - (now - t0))
      print(f"step {step}/{args.steps} D {float(dm['d_loss']):.4f} G "
            f"{float(gm['g_loss']):.4f} R1 {float(dm['r1']):.4f} "
            f"({rate:.2f} steps/s, {rate * args.batch_size:.0f} img/s, ETA "
            f"{max(left, 0) / 60:.1f} min)", flush=True)
      if not math.isfinite(float(dm["d_loss"]) + float(gm["g_loss"])):
        raise FloatingPointError(f"non-finite loss at step {step}")
    if step % args.save_every == 0:
      save(step)
  save(step)
  print(f"saved generator at step {step} to {out}", flush=True)


if __name__ == "__main__":
  main()
