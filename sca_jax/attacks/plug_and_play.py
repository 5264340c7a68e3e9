"""Plug-&-Play model inversion (Struppek et al., ICML 2022) against the target.

A white-box attacker with a StyleGAN2 trained on public (auxiliary) data
synthesises images the frozen target assigns to each class:
  1. initial selection: sample `search_space` w = mapping(z) (truncation psi,
     cutoff), score each image's target confidence (plus its flip) for every
     class, keep the `candidates_per_class` best per class;
  2. optimisation: Adam on w (one w broadcast to all layers if `single_w`, as
     PPA's default) minimising the Poincare loss of the target's logits under
     random resized crops and flips; one jitted step per batch, the target's
     and generator's states are only read;
  3. final selection: mean target confidence over `final_views` augmented
     views; the `keep_per_class` best images per class are the attack's output.
Scores per class (as PPA and the paper): attack accuracy by the independent
evaluation classifier, FID between the class's training images and the attack
images (evaluation-classifier features), PSNR/SSIM against the nearest (pixel
L2) training image of the class; the floor is unoptimised random generator
samples, as many per class, scored alike.

Config `config.attack.plug_and_play` (besides `contract.COMMON_DEFAULTS`:
`grid_per_group` (images per class in the picture) and `eval_batch_size`): see `DEFAULTS`; the defaults are sized for CPU, PPA's
values are in `PAPER_OVERRIDES`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from sca_jax import generator as gen_lib
from sca_jax import metrics
from sca_jax.attacks import pnp_latents
from sca_jax.attacks.contract import ATTACKS, AttackSpec
from sca_jax.convert import stylegan
from sca_jax.evaluation import EvalClassifier

NAME = "plug_and_play"
DEFAULTS = dict(
    generator_path=None,    # folder from scripts/train_generator.py or
                            # scripts/convert_stylegan.py (required)
    center_crop=None,       # crop generator images first; None: the saved
                            # generator's `source.center_crop` if any
    classes=None,           # target classes; None: all
    search_space=64,        # PPA 2,000 (5,000 for faces)
    candidates_per_class=8,  # PPA 200
    truncation_psi=0.5,
    truncation_cutoff=8,
    single_w=True,          # PPA: one w for all synthesis layers
    steps=10,               # PPA 50
    lr=0.005,               # Adam, betas (0.1, 0.1) as PPA
    beta1=0.1,
    beta2=0.1,
    poincare_xi=1e-4,
    crop_scale=(0.9, 1.0),  # optimisation: random resized crop, ratio 1
    flip=True,              # random horizontal flips (and flip in selection)
    final_views=8,          # PPA 100
    final_crop_scale=(0.5, 0.9),  # final selection views, ratio 0.8-1.2
    keep_per_class=4,       # PPA 50
    batch_size=32,          # candidates per optimisation batch
    fid_max_real=5000,      # training images per FID reference set
    log_every=5,            # optimisation steps between progress lines
)
PAPER_OVERRIDES = dict(search_space=2000, candidates_per_class=200, steps=50,
                       final_views=100, keep_per_class=50)


def _check(cfg: ml_collections.ConfigDict, where: str) -> None:
  for key in ("search_space", "candidates_per_class", "steps", "final_views",
              "keep_per_class", "batch_size", "fid_max_real", "log_every"):
    if int(cfg[key]) < 1:
      raise ValueError(f"config.{where}.{key} must be >= 1, got {cfg[key]}")
  if int(cfg.keep_per_class) < 2:
    raise ValueError(f"config.{where}.keep_per_class must be >= 2 (per-class "
                     f"FID needs a covariance), got {cfg.keep_per_class}")
  if int(cfg.candidates_per_class) > int(cfg.search_space):
    raise ValueError(f"config.{where}.candidates_per_class must be <= "
                     "search_space")
  if int(cfg.keep_per_class) > int(cfg.candidates_per_class):
    raise ValueError(f"config.{where}.keep_per_class must be <= "
                     "candidates_per_class")
  for key in ("crop_scale", "final_crop_scale"):
    lo, hi = (float(s) for s in cfg[key])
    if not 0 < lo <= hi <= 1:
      raise ValueError(f"config.{where}.{key} must be 0 < lo <= hi <= 1")
  if not float(cfg.lr) > 0:
    raise ValueError(f"config.{where}.lr must be > 0")
  crop = cfg.center_crop
  if crop is not None and (isinstance(crop, bool) or not isinstance(crop, int)
                           or crop < 1):
    raise ValueError(f"config.{where}.center_crop must be None or a size "
                     f">= 1 in pixels, got {crop!r}")
  classes = cfg.classes
  # Their upper bound (the data's classes) is checked when the attack starts.
  if classes is not None and (
      isinstance(classes, (str, bytes)) or not hasattr(classes, "__len__")
      or not classes or not all(isinstance(c, int) and not isinstance(c, bool)
                                and c >= 0 for c in classes)):
    raise ValueError(f"config.{where}.classes must be None (every class) or "
                     f"a non-empty list of class indices >= 0, got "
                     f"{classes!r}")
  if cfg.generator_path is not None:
    if not isinstance(cfg.generator_path, str):
      raise ValueError(f"config.{where}.generator_path must be a folder path")
    # A wrong path fails at config time; an unset one (the default, so
    # `default_config` stays valid) fails when the attack starts.
    gen_lib.check_generator_path(cfg.generator_path, f"{where}.generator_path")


def _snapshot(state) -> Any:
  def host(x):
    if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
      x = jax.random.key_data(x)
    return np.array(x)
  return jax.tree.map(host, nnx.to_pure_dict(state))


def nearest(x_NHWC: np.ndarray, ref_MHWC: np.ndarray) -> np.ndarray:
  """For each image, the reference image nearest in pixel L2."""
  a = x_NHWC.reshape(len(x_NHWC), -1).astype(np.float32)
  b = ref_MHWC.reshape(len(ref_MHWC), -1).astype(np.float32)
  d = (a * a).sum(1)[:, None] - 2 * a @ b.T + (b * b).sum(1)[None]
  return ref_MHWC[np.argmin(d, axis=1)]


def _scores(x, y, classes, splits, evaluator, feats, cap):
  """Overall and per-class scores of images `x` labelled `y`.

  The evaluation classifier runs once over all images (features, labels);
  per-class numbers slice those, as `contract.score` computes them.
  """
  metrics.check_unit_range(x, "attack images")
  near = np.empty_like(x)
  for c in classes:
    near[y == c] = nearest(x[y == c], splits.train_x[splits.train_y == c])
  psnr = np.asarray(metrics.psnr(x, near))
  ssim = np.asarray(metrics.ssim(x, near))
  fx = evaluator.features(x)
  correct = evaluator.correct(x, y).astype(np.float64)

  def part(m, real):
    return dict(psnr=metrics.summarize(psnr[m]),
                ssim=metrics.summarize(ssim[m]),
                fid=metrics.fid_from_features(real, fx[m]),
                attack_accuracy=metrics.summarize(correct[m]))

  per_class = {str(c): part(y == c, feats[c]) for c in classes}
  all_real = np.concatenate([feats[c] for c in classes])[:cap]
  return part(np.ones(len(y), bool), all_real), per_class, near, psnr


def evaluate(name, cfg, attack_x, attack_y, floor_x, classes, splits,
             evaluator: EvalClassifier, workdir) -> dict[str, Any]:
  """Scores, random-sample floor, per-class breakdown and picture."""
  cap = int(cfg.fid_max_real)
  feats = {c: evaluator.features(splits.train_x[splits.train_y == c][:cap])
           for c in classes}
  scores, per_class, near, psnr = _scores(attack_x, attack_y, classes, splits,
                                          evaluator, feats, cap)
  floor, floor_per_class, _, _ = _scores(floor_x, attack_y, classes, splits,
                                         evaluator, feats, cap)
  floor["name"] = "random_generator_samples"
  for c in per_class:
    per_class[c]["floor"] = floor_per_class[c]
  grid = None
  if int(cfg.grid_per_group):
    path = Path(workdir) / "attacks" / f"{name}.png"
    save_class_grid(path, attack_x, attack_y, near, psnr, classes,
                    int(cfg.grid_per_group),
                    f"{name}: attack acc "
                    f"{scores['attack_accuracy']['mean']:.2f} (random "
                    f"samples {floor['attack_accuracy']['mean']:.2f})")
    grid = dict(path=str(path))
  print(f"[{name}] attack acc {scores['attack_accuracy']['mean']:.3f} (floor "
        f"{floor['attack_accuracy']['mean']:.3f}), FID {scores['fid']:.2f} "
        f"(floor {floor['fid']:.2f}), PSNR {scores['psnr']['mean']:.2f} dB "
        f"(floor {floor['psnr']['mean']:.2f}), SSIM "
        f"{scores['ssim']['mean']:.3f} (floor {floor['ssim']['mean']:.3f})",
        flush=True)
  return dict(**scores, floor=floor, per_class=per_class,
              fid_feature_network=evaluator.name,
              eval_classifier=evaluator.info(), num_images=len(attack_x),
              grid=grid)


def save_class_grid(path: Path, x, y, near, psnr, classes, per_class: int,
                    title: str) -> None:
  """One row per class: attack images, each beside its nearest train image."""
  cols = 2 * min(per_class, int(min((y == c).sum() for c in classes)))
  grey = x.shape[-1] == 1
  # Plotting only when a picture is asked for: importing the attack is cheap.
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=g-import-not-at-top
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  fig = Figure(figsize=(0.9 * cols, 1.0 * len(classes) + 0.5))
  FigureCanvasAgg(fig)
  axes = fig.subplots(len(classes), cols, squeeze=False)
  for r, c in enumerate(classes):
    idx = np.flatnonzero(y == c)[:cols // 2]
    for j, i in enumerate(idx):
      for k, img in enumerate((x[i], near[i])):
        ax = axes[r, 2 * j + k]
        img = np.clip(img, 0.0, 1.0)
        ax.imshow(img[..., 0] if grey else img, cmap="gray" if grey else None,
                  vmin=0.0, vmax=1.0, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        if r == 0:
          ax.set_title("attack" if k == 0 else "nearest", fontsize=7)
      axes[r, 2 * j].set_xlabel(f"{psnr[i]:.1f} dB", fontsize=6)
    axes[r, 0].set_ylabel(f"class {c}", fontsize=7)
  fig.suptitle(title, fontsize=8)
  fig.tight_layout()
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(path.stem + ".tmp.png")
  fig.savefig(tmp, dpi=100)
  tmp.replace(path)


def _over_batches(fn: Callable[[int, np.ndarray], jax.Array], n: int,
                  bs: int, what: str | None, every_s: float = 60.0
                  ) -> np.ndarray:
  """`fn(i, pad)` over the padded batches of n items, concatenated; with
  `what`, a progress line about once a minute (the target's passes over
  thousands of augmented views take many minutes on a stride-1 SCA)."""
  out, t0, last = [], time.time(), time.time()
  chunks = list(pnp_latents.batches(n, bs))
  for i, (idx, pad) in enumerate(chunks):
    out.append(np.asarray(fn(i, pad))[:len(idx)])
    if what and (time.time() - last > every_s or i + 1 == len(chunks)):
      last = time.time()
      rate = (i + 1) / (last - t0)
      print(f"[{NAME}] {what}: batch {i + 1}/{len(chunks)} (ETA "
            f"{(len(chunks) - i - 1) / rate:.0f}s)", flush=True)
  return np.concatenate(out)


def run(cfg: ml_collections.ConfigDict, model: nnx.Module, splits,
        evaluator: EvalClassifier, workdir: str | Path, key: jax.Array
        ) -> dict[str, Any]:
  """Runs the attack (module docstring); JSON-ready results dict."""
  path = gen_lib.check_generator_path(cfg.generator_path,
                                      f"attack.{NAME}.generator_path")
  classes = (list(range(splits.num_classes)) if cfg.classes is None
             else [int(c) for c in cfg.classes])
  if not classes or not all(0 <= c < splits.num_classes for c in classes):
    raise ValueError(f"config.attack.{NAME}.classes must name classes in "
                     f"[0, {splits.num_classes}), got {cfg.classes!r}")
  t0 = time.time()
  gen = stylegan.load_generator(path)
  if gen.c_dim:
    raise ValueError(f"config.attack.{NAME}.generator_path: a conditional "
                     f"generator (c_dim {gen.c_dim}); PPA needs c_dim 0")
  crop = cfg.center_crop or gen_lib.saved_source(path).get("center_crop")
  t_state, g_state, fns = pnp_latents.make_fns(model, gen, splits.image_shape, crop, cfg)
  before = _snapshot(t_state)
  k_search, k_init, k_opt, k_final, k_floor, k_view = jax.random.split(key, 6)
  bs, k = int(cfg.batch_size), int(cfg.candidates_per_class)

  def render(w_N):
    return _over_batches(lambda _, pad: fns["images"](g_state, w_N[pad]),
                         len(w_N), bs, None)

  def conf(x_N, key, views, scale, ratio, what=None):
    return _over_batches(
        lambda i, pad: fns["confidence"](t_state, x_N[pad], labels[pad],
                                         jax.random.fold_in(key, i), views,
                                         scale, ratio), len(x_N), bs, what)

  # 1. Initial selection.
  ws_all = pnp_latents.mapped(fns, g_state, k_search, int(cfg.search_space), gen.z_dim,
                   bs)
  x_all = render(ws_all)
  scores = _over_batches(
      lambda i, pad: fns["initial_scores"](t_state, x_all[pad],
                                           jax.random.fold_in(k_init, i)),
      len(ws_all), bs, "initial selection")
  pick = np.concatenate([np.argsort(-scores[:, c], kind="stable")[:k]
                         for c in classes])
  labels = np.repeat(np.asarray(classes, np.int32), k)
  w = ws_all[pick][:, :1] if cfg.single_w else ws_all[pick]
  # The images the optimisation starts from (single_w: layer 0's w only).
  conf_initial = conf(render(w), k_view, 0, (1.0, 1.0), (1.0, 1.0))

  # 2. Optimisation, batch by batch as PPA.
  t_opt = time.time()
  w = w.copy()
  for b, (idx, pad) in enumerate(pnp_latents.batches(len(w), bs)):
    wb, lb = jnp.asarray(w[pad]), jnp.asarray(labels[pad])
    opt_state = fns["init_opt"](wb)
    for s in range(1, int(cfg.steps) + 1):
      wb, opt_state, loss = fns["step"](
          t_state, g_state, wb, opt_state, lb,
          jax.random.fold_in(jax.random.fold_in(k_opt, b), s))
      if s % int(cfg.log_every) == 0 or s == int(cfg.steps):
        done = b * int(cfg.steps) + s
        total = -(-len(w) // bs) * int(cfg.steps)
        rate = done / max(time.time() - t_opt, 1e-9)
        print(f"[{NAME}] batch {b + 1} step {s}/{cfg.steps} Poincare "
              f"{float(loss):.4f} ({rate:.2f} steps/s, ETA "
              f"{(total - done) / rate:.0f}s)", flush=True)
    w[idx] = np.asarray(wb)[:len(idx)]
  opt_time = time.time() - t_opt
  x_opt = render(w)
  conf_opt = conf(x_opt, k_view, 0, (1.0, 1.0), (1.0, 1.0))

  # 3. Final selection by mean confidence over augmented views.
  final_scale = tuple(float(s) for s in cfg.final_crop_scale)
  conf_views = conf(x_opt, k_final, int(cfg.final_views), final_scale,
                    (0.8, 1.2), f"final selection ({cfg.final_views} views)")
  keep = int(cfg.keep_per_class)
  chosen = np.concatenate([
      np.flatnonzero(labels == c)[np.argsort(-conf_views[labels == c],
                                             kind="stable")[:keep]]
      for c in classes])

  attack_x, attack_y = x_opt[chosen], labels[chosen]
  floor_ws = pnp_latents.mapped(fns, g_state, k_floor, len(chosen), gen.z_dim, bs)
  floor_x = render(floor_ws[:, :1] if cfg.single_w else floor_ws)

  jax.tree.map(np.testing.assert_array_equal, before,
               _snapshot(nnx.state(model)))  # the target stayed frozen

  evaluated = evaluate(NAME, cfg, attack_x, attack_y, floor_x, classes,
                       splits, evaluator, workdir)
  print(f"[{NAME}] target confidence: initial "
        f"{conf_initial.mean():.3f} -> optimised {conf_opt.mean():.3f} "
        f"(selected {conf_opt[chosen].mean():.3f})", flush=True)
  return dict(
      attack=NAME, **evaluated,
      generator=dict(path=str(path), kwargs=gen.init_kwargs,
                     num_ws=gen.num_ws, center_crop=crop),
      target_confidence=dict(
          initial=float(conf_initial.mean()), optimized=float(conf_opt.mean()),
          selected=float(conf_opt[chosen].mean()),
          selected_views=float(conf_views[chosen].mean())),
      num_candidates=len(w), train_time_s=opt_time,
      total_time_s=time.time() - t0, config=cfg.to_dict())


def _generator_id(cfg: ml_collections.ConfigDict) -> dict[str, str]:
  path = gen_lib.check_generator_path(cfg.generator_path,
                                      f"attack.{NAME}.generator_path")
  return {"generator_sha256": gen_lib.digest(path)}


ATTACKS.register(NAME)(AttackSpec(
    NAME, "Plug-&-Play: optimise StyleGAN2 latents against the target",
    dict(DEFAULTS), run, _check, paper_overrides=PAPER_OVERRIDES,
    inputs_id=_generator_id))
