"""The generator training loop: exact resume, divergence stop, config checks."""

import dataclasses

import jax
import numpy as np
import pytest

from sca_jax import checkpoint
from sca_jax.gan import trainer

TINY = trainer.GanConfig(
    z_dim=4, w_dim=4, mapping_layers=1, channel_base=32, channel_max=4,
    d_channel_base=32, d_channel_max=4, batch_size=4, mbstd_group=2,
    r1_every=2, steps=4, log_every=1, save_every=2, eval_every=10 ** 6,
    collapse_window=10 ** 6)
DATA = np.random.default_rng(0).uniform(-1, 1, (16, 8, 8, 1)).astype(
    np.float32)


def _leaves(state):
  return [np.asarray(v) for v in jax.tree.leaves(state)]


def test_resume_equals_an_uninterrupted_run(tmp_path):
  straight, step = trainer.train(TINY, DATA, tmp_path / "a", log=lambda s: 0)
  assert step == 4
  half = dataclasses.replace(TINY, steps=2)
  trainer.train(half, DATA, tmp_path / "b", log=lambda s: 0)
  logs = []
  resumed, step = trainer.train(TINY, DATA, tmp_path / "b", log=logs.append)
  assert step == 4 and "resumed at step 2" in logs[0]
  # Step 2 has R1 (r1_every=2): both variants of the step were exercised.
  for a, b in zip(_leaves(straight), _leaves(resumed), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
  assert not np.allclose(_leaves(straight["g"])[0],
                         _leaves(trainer.get_setup(TINY, 8, 1).initial_state[
                             "g"])[0])


def test_nan_stops_and_keeps_the_last_good_checkpoint(tmp_path):
  exported = []
  trainer.train(dataclasses.replace(TINY, steps=2), DATA, tmp_path,
                on_checkpoint=lambda step, *_: exported.append(step),
                log=lambda s: 0)
  with pytest.raises(trainer.DivergenceError,
                     match=r"non-finite loss at step 3.*last good checkpoint "
                           r"\(step 2"):
    trainer.train(TINY, np.full_like(DATA, np.nan), tmp_path,
                  on_checkpoint=lambda step, *_: exported.append(step),
                  log=lambda s: 0)
  assert exported == [2]
  ckpt = trainer.open_checkpoints(TINY, tmp_path, DATA.shape[1:])
  try:
    assert ckpt.latest_step() == 2
    state = ckpt.restore_latest(trainer.get_setup(TINY, 8, 1).initial_state)
  finally:
    ckpt.close()
  assert all(np.isfinite(v).all() for v in _leaves(state)
             if np.issubdtype(v.dtype, np.floating))


def test_another_configs_checkpoint_is_refused(tmp_path):
  trainer.train(dataclasses.replace(TINY, steps=2), DATA, tmp_path,
                log=lambda s: 0)
  other = trainer.open_checkpoints(dataclasses.replace(TINY, z_dim=5),
                                   tmp_path, DATA.shape[1:])
  try:
    with pytest.raises(checkpoint.CheckpointError, match="different"):
      other.restore_latest(trainer.get_setup(TINY, 8, 1).initial_state)
  finally:
    other.close()


def test_d_loss_collapse_stops(tmp_path):
  cfg = dataclasses.replace(TINY, d_loss_floor=100.0, collapse_window=1)
  with pytest.raises(trainer.DivergenceError, match="D loss collapsed.*No "
                                                    "checkpoint"):
    trainer.train(cfg, DATA, tmp_path, log=lambda s: 0)


@pytest.mark.parametrize("field,value,match", [
    ("mbstd_group", 3, "mbstd_group"), ("lr", 0.0, "lr"),
    ("augment", "translation,colour", "colour"),
    ("augment_strength", 2.0, "augment_strength"), ("r1_every", 0, "r1_every")])
def test_bad_config_is_rejected(field, value, match):
  with pytest.raises(ValueError, match=match):
    dataclasses.replace(TINY, **{field: value}).validate()


def test_pad_to_power_of_two():
  x, crop = trainer.pad_to_power_of_two(np.ones((2, 28, 28, 1)))
  assert x.shape == (2, 32, 32, 1) and crop == 28
  np.testing.assert_array_equal(x[:, :2], -1.0)
  np.testing.assert_array_equal(x[:, 2:30, 2:30], 1.0)
  x, crop = trainer.pad_to_power_of_two(np.zeros((1, 16, 16, 3)))
  assert x.shape == (1, 16, 16, 3) and crop is None


@pytest.mark.parametrize("clip", [True, False])
def test_d_sees_fakes_clipped_to_the_data_range(clip):
  setup = trainer.get_setup(dataclasses.replace(TINY, clip_fakes=clip), 8, 1)
  state = setup.initial_state
  # Scaled-up toRGB weights push the raw output far outside [-1, 1].
  g = jax.tree_util.tree_map_with_path(
      lambda path, v: v * 50 if "torgb" in jax.tree_util.keystr(path) else v,
      state["g"])
  x, _ = setup.fakes(g, state["g_rest"], jax.random.key(0), 8)
  x = np.asarray(x)
  assert np.isfinite(x).all()
  if clip:
    assert x.min() >= -1.0 and x.max() <= 1.0 and (np.abs(x) == 1).any()
  else:
    assert np.abs(x).max() > 1.0
