"""Glue for `scripts/train_generator.py`: data, quality probe, outputs.

Trains on the attacker's auxiliary split only (`make_splits(...).aux_x`),
less its last `holdout` images, which FID is measured against. Writes to
`out` (the script's default: `sca_jax.generator.cache_dir(name)`):
  params/ + config.json   the EMA generator, loadable by the attack
                          (`config.attack.plug_and_play.generator_path`);
  checkpoints/<step>/     the full training state, for resuming;
  samples.png, samples/   the same 64 latents at every evaluation;
  quality.json            FID / class coverage / pixel spread history with
                          steps, wall time.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np
from flax import nnx

from sca_jax import config_lib
from sca_jax import evaluation
from sca_jax import generator as gen_lib
from sca_jax import machine
from sca_jax.convert import stylegan
from sca_jax.data import make_splits
from sca_jax.gan import quality
from sca_jax.gan import trainer


def make_sampler(setup: trainer.Setup, image_shape: tuple[int, int, int],
                 center_crop: int | None, batch: int = 250
                 ) -> Callable[[dict[str, Any], int, int], np.ndarray]:
  """sample(state, n, seed): n EMA-generator images (psi 1) in the target's
  [0, 1] shape; compiled once, the weights are an argument."""

  @jax.jit
  def render(g_ema, g_rest, z):
    gen = nnx.merge(setup.g_graph, g_ema, g_rest)
    return gen_lib.render(gen(z, None), image_shape, center_crop)

  def sample(state: dict[str, Any], n: int, seed: int) -> np.ndarray:
    z = jax.random.normal(jax.random.key(seed), (n, setup.cfg.z_dim))
    return np.concatenate([
        np.asarray(render(state["g_ema"], state["g_rest"], z[i:i + batch]))
        for i in range(0, n, batch)])

  return sample


def write_grid(path: Path, images: np.ndarray, cols: int = 8) -> None:
  """[0, 1] NHWC images as a cols-wide grid PNG."""
  n, h, w, c = images.shape
  rows = n // cols
  grid = images[:rows * cols].reshape(rows, cols, h, w, c).transpose(
      0, 2, 1, 3, 4).reshape(rows * h, cols * w, c)
  path.parent.mkdir(parents=True, exist_ok=True)
  plt.imsave(path, grid[..., 0] if c == 1 else grid, cmap="gray", vmin=0.0,
             vmax=1.0)


def auxiliary_images(dataset: str, data_dir: str | None = None,
                     split_seed: int = 0, holdout: int = 2000):
  """(experiment config, splits, training images padded to [-1, 1] powers
  of two, their crop): the attacker's auxiliary split less its last
  `holdout` images."""
  exp = config_lib.get_config(None, name="no_defense", dataset=dataset)
  if data_dir:
    exp.data.data_dir = data_dir
  splits = make_splits(exp.data, split_seed)
  aux = splits.aux_x  # the attacker's data only
  if not 2 <= holdout < len(aux) // 2:
    raise ValueError(f"holdout={holdout} must be in [2, {len(aux) // 2}) "
                     f"(the auxiliary split has {len(aux)} images)")
  return (exp, splits, *trainer.pad_to_power_of_two(aux[:-holdout]))


def run(cfg: trainer.GanConfig, dataset: str, out: Path,
        data_dir: str | None = None, split_seed: int = 0,
        holdout: int = 2000) -> dict[str, Any]:
  """Trains (or resumes) the generator of `dataset` into `out`."""
  exp, splits, train_x, crop = auxiliary_images(dataset, data_dir,
                                                split_seed, holdout)
  aux = splits.aux_x
  out = Path(out)
  out.mkdir(parents=True, exist_ok=True)
  print(f"{len(train_x)} auxiliary images {aux.shape[1:]} -> "
        f"{train_x.shape[1:]}, {holdout} held out for FID; output {out}",
        flush=True)
  classifier = evaluation.get_eval_classifier(splits, exp.get(
      "eval_classifier"))
  probe = quality.QualityProbe(classifier, aux[-holdout:], splits.num_classes)
  reference = probe.reference()
  spread_real = reference["pixel_spread_real"]
  shape = tuple(aux.shape[1:])
  t_start = time.time()
  meta = dict(dataset=dataset, split="aux", split_seed=split_seed,
              num_train_images=len(train_x), holdout=holdout,
              fid_features=classifier.name, center_crop=crop,
              config=dataclasses.asdict(cfg), cpu=f"{machine.cpu_model()} x{os.cpu_count()}",
              reference=reference)
  (out / "run.json").write_text(json.dumps(meta, indent=1) + "\n")

  samplers = {}

  def sampler(setup):
    if id(setup) not in samplers:
      samplers[id(setup)] = make_sampler(setup, shape, crop)
    return samplers[id(setup)]

  def on_eval(step, setup, state):
    fake = sampler(setup)(state, cfg.eval_samples, cfg.seed + 1)
    q = probe.measure(fake)
    cov = q["coverage"]
    quality_entry = dict(step=step, images_seen=step * cfg.batch_size,
                         wall_s=round(time.time() - t_start, 1),
                         load_avg=[round(v, 2) for v in os.getloadavg()],
                         **q)
    trainer.save_history(out / "quality.json", quality_entry)
    write_grid(out / "samples" / f"{step:06d}.png", fake[:64])
    return dict(FID=f"{q['fid']:.2f}",
                coverage=f"{cov['entropy_ratio']:.3f}/{cov['classes_hit']}cl",
                spread=f"{q['pixel_spread']:.3f}/{spread_real:.3f} real")

  def on_checkpoint(step, setup, state):
    gen = setup.generator(state)
    stylegan.save_generator(gen, out, dict(
        trained_by="scripts/train_generator.py", dataset=dataset, split="aux",
        split_seed=split_seed, num_images=len(train_x), steps=step,
        images_seen=step * cfg.batch_size, center_crop=crop))
    # The same 64 latents every time: watch samples.png improve.
    write_grid(out / "samples.png", sampler(setup)(state, 64, 1))

  _, step = trainer.train(cfg, train_x, out, on_eval=on_eval,
                          on_checkpoint=on_checkpoint,
                          log=lambda s: print(s, flush=True))
  print(f"saved generator at step {step} to {out}", flush=True)
  return dict(step=step, out=str(out))


def export_summary(out: Path, dest: Path, prefix: str) -> Path:
  """Copies the small artefacts of run `out` into `dest` (the repository's
  results/generator/): `<prefix>_quality.json` (setup, reference floor and
  the whole FID/coverage history), `<prefix>_samples.png` (the latest
  evaluation's first 64 samples) and `<prefix>_generator/` (the exported EMA
  generator, `params/` + `config.json`: ~1 MB at the recipe's width), so a
  fresh clone can run Plug-&-Play without training it again."""
  history = json.loads((out / "quality.json").read_text())
  meta = json.loads((out / "run.json").read_text())
  dest.mkdir(parents=True, exist_ok=True)
  # First: without a generator nothing of the last export is replaced.
  generator = export_generator(out, dest / f"{prefix}_generator")
  last = history[-1]
  grid = out / "samples" / f"{last['step']:06d}.png"
  (dest / f"{prefix}_samples.png").write_bytes(grid.read_bytes())
  summary = dict(meta, latest=dict(
      step=last["step"], fid=last["fid"],
      coverage_entropy_ratio=last["coverage"]["entropy_ratio"],
      meets_coverage_bar=last["coverage"]["meets_bar"],
      wall_s=last["wall_s"]), history=history,
      samples=f"{prefix}_samples.png (step {last['step']})",
      generator=f"{generator.name} (step {_generator_step(generator)})")
  path = dest / f"{prefix}_quality.json"
  path.write_text(json.dumps(summary, indent=1) + "\n")
  return path


def _generator_step(path: Path) -> int | None:
  return json.loads((path / "config.json").read_text())["source"].get("steps")


def export_generator(out: Path, dest: Path) -> Path:
  """Copies run `out`'s exported generator (`params/`, `config.json`) to
  `dest`, replacing what was there only once the copy is complete."""
  if not (out / "config.json").is_file() or not (out / "params").is_dir():
    raise FileNotFoundError(f"{out}: no exported generator (params/ and "
                            "config.json are written at each checkpoint)")
  tmp = dest.with_name(f"{dest.name}.tmp-{os.getpid()}")
  shutil.rmtree(tmp, ignore_errors=True)
  tmp.mkdir(parents=True)
  shutil.copytree(out / "params", tmp / "params")
  shutil.copy2(out / "config.json", tmp / "config.json")
  old = dest.with_name(f"{dest.name}.old-{os.getpid()}")
  if dest.exists():
    dest.rename(old)
  tmp.rename(dest)
  shutil.rmtree(old, ignore_errors=True)
  return dest
