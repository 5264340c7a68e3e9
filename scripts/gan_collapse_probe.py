"""Early-collapse probe for the StyleGAN2 trainer: the first few hundred steps
of one GanConfig variant, with the generator's pixel spread over fixed
latents every `--every` steps (real padded MNIST digits: ~0.28 in [-1, 1];
a generator that ignores its latent falls towards 0).

  python scripts/gan_collapse_probe.py --name lr1e-3 \\
      --overrides '{"lr": 0.001, "d_lr": 0.001}' --steps 400 --every 50
  # control: the same loop, D and losses with a plain DCGAN generator
  python scripts/gan_collapse_probe.py --name dcgan --generator dcgan

Appends one JSON line per variant to `--out`. Steps exactly as
`sca_jax.gan.trainer.train` takes them (`Setup.train_step`), without
checkpoints or evaluations; single-threaded, ~5 min per 250 steps on one
core at the default widths. Used in docs/plug_and_play.md (session 5).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# pylint: disable=g-import-not-at-top,wrong-import-position
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sca_jax.data.sources import SOURCES
from sca_jax.gan import quality
from sca_jax.gan import run as gan_run
from sca_jax.gan import trainer
# pylint: enable=g-import-not-at-top,wrong-import-position


class _NoMapping(nnx.Module):
  """w = z, with the `w_avg` buffer the trainer updates."""

  def __init__(self, z_dim: int):
    self.w_avg = nnx.Variable(jnp.zeros((z_dim,)))

  def __call__(self, z: jax.Array, c: None) -> jax.Array:
    del c
    return z[:, None, :]


class _DCGANSynthesis(nnx.Module):
  """Dense to 4x4, then stride-2 transposed convolutions, tanh."""

  def __init__(self, z_dim: int, resolution: int, channels: int, width: int,
               rngs: nnx.Rngs):
    self.ups = int(np.log2(resolution)) - 2
    self.fc = nnx.Linear(z_dim, 16 * width * 2 ** (self.ups - 1), rngs=rngs)
    self.convs = nnx.List([
        nnx.ConvTranspose(width * 2 ** (self.ups - 1 - i),
                          channels if i == self.ups - 1
                          else width * 2 ** (self.ups - 2 - i),
                          (4, 4), (2, 2), rngs=rngs)
        for i in range(self.ups)])

  def __call__(self, ws: jax.Array) -> jax.Array:
    h = self.fc(ws[:, 0]).reshape(ws.shape[0], 4, 4, -1)
    for conv in self.convs:
      h = conv(jax.nn.leaky_relu(h, 0.2))
    return jnp.tanh(h)


class DCGAN(nnx.Module):
  """A plain DCGAN generator with the StyleGAN2 port's interface (control
  for the loop: same D, losses, optimiser, augmentation)."""

  def __init__(self, z_dim: int, resolution: int, channels: int,
               width: int = 32, *, rngs: nnx.Rngs):
    self.mapping = _NoMapping(z_dim)
    self.synthesis = _DCGANSynthesis(z_dim, resolution, channels, width, rngs)


def probe(cfg: trainer.GanConfig, train_NHWC: np.ndarray, steps: int,
          every: int, log=print, generator: str = "stylegan2") -> list[dict]:
  """Trains `steps` steps; every `every`: pixel spread and mean of 64
  samples of the raw generator, mean D and G loss since the last entry.
  generator: 'stylegan2' (the port, sized by cfg) or 'dcgan' (control)."""
  res, ch = train_NHWC.shape[1], train_NHWC.shape[3]
  make = None
  if generator == "dcgan":
    make = lambda rngs: DCGAN(cfg.z_dim, res, ch, rngs=rngs)
  elif generator != "stylegan2":
    raise ValueError(f"generator must be stylegan2 or dcgan, got "
                     f"{generator!r}")
  setup = trainer.Setup(cfg, res, ch, make_generator=make)
  state = jax.tree.map(jnp.copy, setup.initial_state)
  data = jnp.asarray(train_NHWC)
  z = jax.random.normal(jax.random.key(5), (64, cfg.z_dim))

  @jax.jit
  def render(g, g_rest):
    gen = nnx.merge(setup.g_graph, g, g_rest)
    return gen.synthesis(gen.mapping(z, None))

  def entry(step: int, **extra) -> dict:
    x = np.asarray(render(state["g"], state["g_rest"]))
    return dict(step=step, spread=quality.pixel_spread(x),
                mean=float(x.mean()), **extra)

  history = [entry(0)]
  losses, start = [], time.time()
  for step in range(steps):
    state, m = setup.train_step(state, data, step)
    losses.append((float(m["d_loss"]), float(m["g_loss"])))
    if (step + 1) % every == 0:
      d, g = np.mean(losses[-every:], axis=0)
      history.append(entry(step + 1, d_loss=float(d), g_loss=float(g),
                           wall_s=round(time.time() - start, 1)))
      log(history[-1])
      if not np.isfinite(d):
        break
  return history


def main(argv=None) -> dict:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--name", required=True)
  p.add_argument("--overrides", default="{}",
                 help="JSON object of GanConfig fields")
  p.add_argument("--generator", default="stylegan2",
                 choices=("stylegan2", "dcgan"))
  p.add_argument("--dataset", default="mnist", choices=SOURCES.names())
  p.add_argument("--holdout", type=int, default=2000)
  p.add_argument("--steps", type=int, default=400)
  p.add_argument("--every", type=int, default=50)
  p.add_argument("--out", type=Path, default=Path("gan_collapse_probe.jsonl"))
  args = p.parse_args(argv)
  try:
    cfg = trainer.GanConfig(**json.loads(args.overrides))
    cfg.validate()
  except (TypeError, ValueError) as e:
    p.error(f"--overrides: {e}")
  if args.steps < 1 or args.every < 1:
    p.error("--steps and --every must be >= 1")
  _, _, train_x, _ = gan_run.auxiliary_images(args.dataset,
                                             holdout=args.holdout)
  real = float(train_x[:64].std(0).mean())
  print(f"{args.name}: {json.loads(args.overrides)}, real spread {real:.3f}",
        flush=True)
  record = dict(name=args.name, overrides=json.loads(args.overrides),
                generator=args.generator, dataset=args.dataset,
                real_spread=real,
                history=probe(cfg, train_x, args.steps, args.every,
                              lambda e: print(e, flush=True), args.generator))
  with args.out.open("a") as f:
    f.write(json.dumps(record) + "\n")
  return record


if __name__ == "__main__":
  main()
