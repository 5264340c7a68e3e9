"""Latent optimisation of the Plug-&-Play attack (Struppek et al., ICML
2022): PPA's Poincare loss, its random resized crops and flips, and the jitted
functions (mapping, rendering, selection scores, Adam step on w) that
`plug_and_play.run` drives. The target's and generator's states are only
read.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from sca_jax import generator as gen_lib


def poincare_loss(logits_BK: jax.Array, labels_B: jax.Array,
                  xi: float = 1e-4) -> jax.Array:
  """PPA's Poincare loss per example: hyperbolic distance to the one-hot.

  u = logits / ||logits||_1 lies inside the unit ball; v = clip(one_hot - xi)
  keeps the target just inside too, so the distance stays finite.
  """
  u = logits_BK / jnp.sum(jnp.abs(logits_BK), axis=-1, keepdims=True)
  v = jnp.clip(jax.nn.one_hot(labels_B, logits_BK.shape[-1]) - xi, 0.0, 1.0)
  u2 = jnp.sum(u * u, axis=-1)
  v2 = jnp.sum(v * v, axis=-1)
  d2 = jnp.sum(jnp.square(u - v), axis=-1)
  return jnp.arccosh(1.0 + 2.0 * d2 / ((1.0 - u2) * (1.0 - v2)))


def augment(x_BHWC: jax.Array, key: jax.Array, scale: tuple[float, float],
            ratio: tuple[float, float], flip: bool) -> jax.Array:
  """Random resized crops (back to the same size) and flips, differentiable."""
  b, h, w, c = x_BHWC.shape
  ks, kr, ky, kx, kf = jax.random.split(key, 5)
  area = h * w * jax.random.uniform(ks, (b,), minval=scale[0],
                                    maxval=scale[1])
  r = jnp.exp(jax.random.uniform(kr, (b,), minval=np.log(ratio[0]),
                                 maxval=np.log(ratio[1])))
  ch = jnp.clip(jnp.sqrt(area / r), 1.0, h)
  cw = jnp.clip(jnp.sqrt(area * r), 1.0, w)
  y0 = jax.random.uniform(ky, (b,)) * (h - ch)
  x0 = jax.random.uniform(kx, (b,)) * (w - cw)

  def crop(img, ch, cw, y0, x0):
    s = jnp.stack([h / ch, w / cw])
    return jax.image.scale_and_translate(
        img, (h, w, c), (0, 1), s, -jnp.stack([y0, x0]) * s, "linear")

  x = jax.vmap(crop)(x_BHWC, ch, cw, y0, x0)
  if flip:
    flips = jax.random.bernoulli(kf, 0.5, (b,))[:, None, None, None]
    x = jnp.where(flips, x[:, :, ::-1], x)
  return x


def make_fns(model: nnx.Module, gen, image_shape, center_crop, cfg
             ) -> tuple[Any, Any, dict[str, Callable]]:
  """Target/generator states and the jitted pure functions over them."""
  t_graph, t_state = nnx.split(model)
  g_graph, g_state = nnx.split(gen)
  takes_key = "key" in inspect.signature(type(model).__call__).parameters

  def logits(ts, x, key):
    target = nnx.merge(t_graph, ts)
    out = target(x, train=False, key=key) if takes_key else target(
        x, train=False)
    return out[0]

  def images(gs, ws):
    return gen_lib.render(nnx.merge(g_graph, gs).synthesis(ws), image_shape,
                          center_crop)

  def mapping(gs, z):
    return nnx.merge(g_graph, gs).mapping(
        z, None, truncation_psi=float(cfg.truncation_psi),
        truncation_cutoff=cfg.truncation_cutoff)

  def expand(w, num_ws):
    return jnp.repeat(w, num_ws, axis=1) if w.shape[1] == 1 else w

  # Scoring works on rendered images, so the synthesis network compiles
  # only twice (`images`, `step`): its compile dominates on CPU.
  def initial_scores(ts, x, key):
    p = jax.nn.softmax(logits(ts, x, key))
    if cfg.flip:
      p = p + jax.nn.softmax(logits(ts, x[:, :, ::-1], key))
    return p

  def confidence(ts, x, labels, key, views, scale, ratio):
    """Mean softmax confidence of `labels` over `views` augmented views."""

    def one(k):
      k_aug, k_t = jax.random.split(k)
      xa = x if views == 0 else augment(x, k_aug, scale, ratio,
                                        bool(cfg.flip))
      p = jax.nn.softmax(logits(ts, xa, k_t))
      return jnp.take_along_axis(p, labels[:, None], axis=1)[:, 0]

    if views == 0:
      return one(key)
    return jax.lax.map(one, jax.random.split(key, views)).mean(axis=0)

  tx = optax.adam(float(cfg.lr), b1=float(cfg.beta1), b2=float(cfg.beta2))
  scale = tuple(float(s) for s in cfg.crop_scale)

  def step(ts, gs, w, opt_state, labels, key):
    k_aug, k_t = jax.random.split(key)

    def loss_fn(w):
      x = augment(images(gs, expand(w, gen.num_ws)), k_aug, scale,
                  (1.0, 1.0), bool(cfg.flip))
      # Summed, so each candidate's gradient ignores the batch size/padding.
      return poincare_loss(logits(ts, x, k_t), labels,
                           float(cfg.poincare_xi)).sum()

    loss, grads = jax.value_and_grad(loss_fn)(w)
    updates, opt_state = tx.update(grads, opt_state, w)
    return optax.apply_updates(w, updates), opt_state, loss / w.shape[0]

  fns = dict(
      mapping=jax.jit(mapping),
      images=jax.jit(lambda gs, w: images(gs, expand(w, gen.num_ws))),
      initial_scores=jax.jit(initial_scores),
      confidence=jax.jit(confidence, static_argnums=(4, 5, 6)),
      step=jax.jit(step), init_opt=tx.init)
  return t_state, g_state, fns


def batches(n: int, bs: int):
  for i in range(0, n, bs):
    idx = np.arange(i, min(i + bs, n))
    # Pad to a fixed shape: one compilation per function.
    yield idx, np.concatenate([idx, np.full(bs - len(idx), idx[-1])])


def mapped(fns, g_state, key, n, z_dim, bs) -> np.ndarray:
  z = np.asarray(jax.random.normal(key, (n, z_dim)))
  out = [np.asarray(fns["mapping"](g_state, z[pad]))[:len(idx)]
         for idx, pad in batches(n, bs)]
  return np.concatenate(out)
