"""Looks at the conditional GAN behind GAN augmentation and Gong et al.'s
defense: trains it as the defense does and draws a class-by-sample grid.

  python scripts/gan_samples.py --dataset=mnist --images=10000 --epochs=25 \\
      --out=results/baselines/gan_samples_mnist.png

Each row is one class (the label the generator is asked for); beside the
picture, `--out` with `.json` gets the share of samples a logistic
regression fitted on other real images assigns to the asked class, its
accuracy on held-out real images, and the pixel spread of the samples
against the real images' (a collapsed GAN: agreement ~1/classes, spread ~0).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# pylint: disable=g-import-not-at-top,wrong-import-position
import jax
import numpy as np
from matplotlib.figure import Figure
from sklearn.linear_model import LogisticRegression

from sca_jax.data import SOURCES, load_source
from sca_jax.defenses import gan
# pylint: enable=g-import-not-at-top,wrong-import-position


def main(argv=None) -> dict:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--dataset", default="mnist", choices=SOURCES.names())
  p.add_argument("--data_dir", default=os.environ.get("SCA_JAX_DATA_DIR"))
  p.add_argument("--images", type=int, default=10000,
                 help="GAN training images (the judge fits on as many others)")
  p.add_argument("--epochs", type=int, default=25, help="the defense's default")
  p.add_argument("--per_class", type=int, default=10)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--out", required=True, help="the picture (.png)")
  args = p.parse_args(argv)
  raw = load_source(args.dataset, args.data_dir)
  x = raw.images.astype(np.float32) / np.float32(255)  # sources are uint8
  y = raw.labels.astype(np.int32)
  n = args.images
  if 2 * n > len(x):
    raise ValueError(f"--images={n}: {args.dataset} has {len(x)} images, "
                     f"needs 2 x {n} (GAN training + the judge's)")
  k = raw.num_classes
  t0 = time.time()
  gen = gan.train_gan(x[:n], y[:n], k, args.epochs, jax.random.key(args.seed))
  y_fake = np.repeat(np.arange(k, dtype=np.int32), args.per_class)
  fake = gan.sample(gen, y_fake, x.shape[1:], jax.random.key(args.seed + 1))
  judge = LogisticRegression(max_iter=300).fit(
      x[n:n + n // 2].reshape(n // 2, -1), y[n:n + n // 2])
  held = x[n + n // 2:2 * n].reshape(-1, x[0].size), y[n + n // 2:2 * n]
  report = dict(
      dataset=args.dataset, images=n, epochs=args.epochs, seed=args.seed,
      train_s=round(time.time() - t0, 1),
      agreement=float(np.mean(judge.predict(fake.reshape(len(fake), -1))
                              == y_fake)),
      judge_accuracy_real=float(judge.score(*held)),
      pixel_std_fake=float(fake.std(0).mean()),
      pixel_std_real=float(x[:n].std(0).mean()))
  fig = Figure(figsize=(args.per_class * 0.6, k * 0.6 + 0.4))
  axes = fig.subplots(k, args.per_class, squeeze=False)
  for ax, img in zip(axes.ravel(), fake):
    ax.imshow(img.squeeze(), cmap="gray", vmin=0, vmax=1)
    ax.axis("off")
  fig.suptitle(f"{args.dataset}: row = asked class; judge agrees "
               f"{report['agreement']:.0%}", fontsize=8)
  out = Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(out, dpi=80)
  out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
  print(json.dumps(report))
  return report


if __name__ == "__main__":
  main()
