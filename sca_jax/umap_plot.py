"""2-D UMAP maps of a target's leaked representations, coloured by class.

The paper's Figure 6 shows UMAP embeddings of what each target leaks; the
point of the picture is whether the leak still separates the classes (and so
carries what an inversion network needs). `write_umaps` draws one map per
threat model (`end_to_end`, `split`, `first_layer`: the leak each of them
reads, from the attack configs) for the first `num_images` target training
images, the images the attacks reconstruct, and writes
`<workdir>/umap_<leak>.png`. Opt-in: `config.umap = True` (the faithful
protocol turns it on). UMAP is umap-learn (McInnes et al.), seeded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=wrong-import-position

# The threat models whose leaks get a map (docs/threat_models.md).
THREAT_MODELS = ("end_to_end", "split", "first_layer")
NUM_IMAGES = 1000


def embed(reps_NX: np.ndarray, seed: int = 0,
          n_neighbors: int = 15) -> np.ndarray:
  """UMAP of flattened representations to 2-D (N, 2); seeded."""
  import umap  # pylint: disable=g-import-not-at-top  (slow import: numba)
  x = np.asarray(reps_NX, np.float32).reshape(len(reps_NX), -1)
  if len(x) <= n_neighbors:
    raise ValueError(f"UMAP needs more than n_neighbors={n_neighbors} "
                     f"points, got {len(x)}")
  reducer = umap.UMAP(n_components=2, n_neighbors=n_neighbors,
                      random_state=seed)
  return reducer.fit_transform(x)


def plot_embedding(emb_N2: np.ndarray, y_N: np.ndarray, title: str,
                   path: str | Path) -> Path:
  """Scatter of the 2-D embedding coloured by class label, saved as PNG."""
  fig, ax = plt.subplots(figsize=(4.2, 4.0), dpi=100)
  sc = ax.scatter(emb_N2[:, 0], emb_N2[:, 1], c=y_N, cmap="tab10", s=4,
                  vmin=-0.5, vmax=9.5)
  ax.set_title(title, fontsize=9)
  ax.set_xticks([])
  ax.set_yticks([])
  fig.colorbar(sc, ax=ax, ticks=range(10), fraction=0.046, pad=0.02)
  fig.tight_layout()
  path = Path(path)
  fig.savefig(path)
  plt.close(fig)
  return path


def write_umaps(config, model, splits, workdir: str | Path,
                num_images: int = NUM_IMAGES) -> dict[str, Any]:
  """One map per threat model of `config.attacks`; returns {leak: file}."""
  from sca_jax import attacks  # pylint: disable=g-import-not-at-top
  from sca_jax.attacks import contract  # pylint: disable=g-import-not-at-top
  cfgs = attacks.validate(config)
  leaks = {name: cfgs[name].leak for name in THREAT_MODELS if name in cfgs}
  x, y = splits.train_x[:num_images], splits.train_y[:num_images]
  out = {}
  for name, leak in leaks.items():
    if leak in out:
      continue
    contract.check_leak(name, leak, model)
    reps = contract.query(contract.make_represent(model, leak), x, 256,
                          jax.random.key(int(config.seed)))
    emb = embed(reps, seed=int(config.seed))
    title = (f"{config.data.name} {config.defense.name}: {name} "
             f"({leak}, {np.prod(reps.shape[1:])}-d), n={len(x)}")
    out[leak] = plot_embedding(emb, y, title,
                               Path(workdir) / f"umap_{leak}.png").name
  return out
