"""umap_plot: 2-D maps of leaked representations, coloured by class."""

import jax
import numpy as np
import pytest

from sca_jax import umap_plot
from sca_jax.models import build_model


def test_embedding_keeps_separated_classes_apart_and_maps_are_written(
    tiny, mnist_splits, tmp_path):
  # Three well separated Gaussian clusters in 50-d stay separated in 2-D:
  # every point's nearest 2-D neighbour has its class.
  rng = np.random.default_rng(0)
  y = np.repeat(np.arange(3), 40)
  x = rng.normal(size=(120, 50)) + 20.0 * np.eye(50)[y]
  emb = umap_plot.embed(x, seed=0)
  assert emb.shape == (120, 2) and np.isfinite(emb).all()
  d = ((emb[:, None] - emb[None]) ** 2).sum(-1) + np.diag(np.full(120, np.inf))
  assert (y[d.argmin(1)] == y).mean() > 0.95
  with pytest.raises(ValueError, match="n_neighbors"):
    umap_plot.embed(x[:10])

  # One map per threat model's leak of a (tiny, untrained) SCA target.
  c = tiny("sca")
  c.attacks = ("end_to_end", "split", "first_layer")
  splits = mnist_splits(64, 32, 64)
  model = build_model(c.defense, splits.image_shape, splits.num_classes,
                      jax.random.key(0))
  files = umap_plot.write_umaps(c, model, splits, tmp_path, num_images=40)
  assert files == {"last_hidden": "umap_last_hidden.png",
                   "first_linear": "umap_first_linear.png",
                   "first": "umap_first.png"}
  for name in files.values():
    assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
