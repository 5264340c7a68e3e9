"""sca_jax/gan/run.py's export: what a fresh clone needs to run Plug-&-Play
(the training loop itself: test_generator_trainer.py)."""

import json

import jax
import numpy as np
import pytest
from conftest import random_generator
from flax import nnx

from sca_jax.convert import stylegan
from sca_jax.gan import run


def _fake_run(out, seed: int, step: int):
  """A run folder as `run.run` leaves it: exported generator, run.json,
  quality history and the latest evaluation's samples."""
  stylegan.save_generator(random_generator(seed), out,
                          dict(dataset="mnist", steps=step))
  (out / "run.json").write_text(json.dumps({"dataset": "mnist"}))
  (out / "quality.json").write_text(json.dumps([{
      "step": step, "fid": 50.0, "wall_s": 1.0,
      "coverage": {"entropy_ratio": 0.96, "meets_bar": True}}]))
  (out / "samples").mkdir(exist_ok=True)
  (out / "samples" / f"{step:06d}.png").write_bytes(b"png")


def _leaves(gen):
  return [np.asarray(v) for v in jax.tree.leaves(nnx.state(gen))]


def test_export_copies_a_loadable_generator_and_replaces_it_whole(tmp_path):
  dest = tmp_path / "results"
  for seed, step in ((0, 500), (1, 1500)):
    out = tmp_path / f"run{seed}"
    out.mkdir()
    _fake_run(out, seed, step)
    summary = json.loads(run.export_summary(out, dest, "mnist").read_text())
    loaded = stylegan.load_generator(dest / "mnist_generator")
    for a, b in zip(_leaves(loaded), _leaves(stylegan.load_generator(out)),
                    strict=True):
      np.testing.assert_array_equal(a, b)
    assert summary["generator"] == f"mnist_generator (step {step})"
    assert summary["latest"]["step"] == step
  # The second export replaced the first, leaving no temporary folders.
  assert sorted(p.name for p in dest.iterdir()) == [
      "mnist_generator", "mnist_quality.json", "mnist_samples.png"]
  first = _leaves(stylegan.load_generator(tmp_path / "run0"))
  assert any(not np.array_equal(a, b) for a, b in zip(_leaves(loaded), first))


def test_export_without_a_generator_fails_and_keeps_the_last_one(tmp_path):
  dest = tmp_path / "results"
  good = tmp_path / "good"
  good.mkdir()
  _fake_run(good, 0, 500)
  run.export_summary(good, dest, "mnist")
  before = sorted(p.relative_to(dest) for p in dest.rglob("*"))
  with pytest.raises(FileNotFoundError, match="no exported generator"):
    run.export_generator(tmp_path / "empty", dest / "mnist_generator")
  assert sorted(p.relative_to(dest) for p in dest.rglob("*")) == before
