"""Training: dictionary update rules, resume, NaN handling, optimisers."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sca_jax import lca, train
from sca_jax.checkpoint import CheckpointError, Checkpointer
from sca_jax.models import build_model
from conftest import tiny_config


def _trainer(hebbian=True, backprop=True, name="sca", **train_kw):
  cfg = tiny_config(name)
  cfg.defense.hebbian = hebbian
  cfg.defense.backprop_dictionaries = backprop
  cfg.defense.hebbian_lr = 0.5  # large, so one step visibly moves atoms
  cfg.train.update(train_kw)
  model = build_model(cfg.defense, (28, 28, 1), 10, jax.random.key(0))
  return train.Trainer(model, cfg.defense, train.make_optimizer(cfg.train, 10)
                       ), cfg


def _batch(n=16, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.uniform(size=(n, 28, 28, 1)).astype(np.float32)
  return x, rng.integers(0, 10, n).astype(np.int32)


def _dicts(state):
  return [np.asarray(d) for d in jax.tree.leaves(state.dicts)]


@pytest.mark.parametrize("hebbian,backprop,changes", [
    (False, False, (False, False)),
    (True, False, (False, True)),    # Hebbian skips the image-coding layer
    (False, True, (True, True)),
    (True, True, (True, True)),
])
def test_dictionaries_change_exactly_when_they_should(hebbian, backprop,
                                                      changes):
  trainer, _ = _trainer(hebbian, backprop)
  before = _dicts(trainer.init_state)
  x, y = _batch()
  state, _ = trainer.train_step(
      jax.tree.map(jnp.copy, trainer.init_state), x, y, jax.random.key(0))
  after = _dicts(state)
  for b, a, should_change in zip(before, after, changes):
    assert (not np.allclose(a, b, atol=1e-7)) == should_change
    np.testing.assert_allclose(np.sum(a**2, axis=(0, 1, 2)), 1.0, rtol=1e-5)


def test_hebbian_step_is_the_library_rule_on_the_forward_codes():
  trainer, cfg = _trainer(hebbian=True, backprop=False)
  x, y = _batch()
  model = trainer.model(trainer.init_state)
  _, reps = model(jnp.asarray(x), train=True)
  D1 = _dicts(trainer.init_state)[1]
  expected = lca.hebbian_update(jnp.asarray(D1), reps["layer2_lca_input"],
                                reps["layer2_lca"], 0.5, stride=2)
  state, _ = trainer.train_step(
      jax.tree.map(jnp.copy, trainer.init_state), x, y, jax.random.key(0))
  np.testing.assert_allclose(_dicts(state)[1], expected, atol=1e-5)


def test_optimizer_names_and_weight_decay():
  with pytest.raises(ValueError, match="config.train.optimizer"):
    _trainer(optimizer="lbfgs")
  for name in train.OPTIMIZERS:
    trainer, _ = _trainer(optimizer=name, weight_decay=1e-3)
    x, y = _batch()
    state, metrics = trainer.train_step(
        jax.tree.map(jnp.copy, trainer.init_state), x, y, jax.random.key(0))
    assert np.isfinite(float(metrics["loss"]))


def _fit(trainer, cfg, workdir, x, y, epochs):
  cfg.train.epochs = epochs
  return train.fit(trainer, cfg.train, x, y, workdir, jax.random.key(1), 0,
                   log=lambda s: None)


def test_interrupted_training_resumes_to_the_same_result(tmp_path):
  x, y = _batch(96)
  trainer, cfg = _trainer()
  straight, info = _fit(trainer, cfg, tmp_path / "a", x, y, epochs=2)
  assert info["num_steps"] == 6 and info["resumed_from_step"] == 0
  # "Interrupt" after one epoch, then rerun the full schedule in that workdir.
  trainer, cfg = _trainer()
  _fit(trainer, cfg, tmp_path / "b", x, y, epochs=1)
  trainer, cfg = _trainer()
  resumed, info = _fit(trainer, cfg, tmp_path / "b", x, y, epochs=2)
  assert info["resumed_from_step"] == 3 and info["steps_this_run"] == 3
  for a, b in zip(jax.tree.leaves(straight), jax.tree.leaves(resumed)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  lines = (tmp_path / "a" / "train_metrics.jsonl").read_text().splitlines()
  assert json.loads(lines[-1])["step"] == 6


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_checkpoint(tmp_path):
  # Two good steps (one 64-image batch per epoch), then data with NaNs.
  settings = dict(batch_size=64, checkpoint_every=1, log_every=1)
  trainer, cfg = _trainer(hebbian=False, **settings)
  x_good, y_good = _batch(64, seed=1)
  _fit(trainer, cfg, tmp_path, x_good, y_good, epochs=2)
  x, y = _batch(64)
  x[40:] = np.nan
  trainer, cfg = _trainer(hebbian=False, **settings)
  with pytest.raises(FloatingPointError, match="last good checkpoint"):
    _fit(trainer, cfg, tmp_path, x, y, epochs=4)
  assert Checkpointer(tmp_path / "checkpoints").latest_step() == 2


def test_corrupt_checkpoint_is_refused_and_left_in_place(tmp_path):
  x, y = _batch(64)
  trainer, cfg = _trainer()
  _fit(trainer, cfg, tmp_path, x, y, epochs=1)
  ckpt_dir = tmp_path / "checkpoints"
  files = [p for p in ckpt_dir.rglob("*") if p.is_file() and p.stat().st_size]
  for p in files:
    p.write_bytes(b"garbage")
  trainer, cfg = _trainer()
  with pytest.raises(CheckpointError, match="cannot be restored"):
    _fit(trainer, cfg, tmp_path, x, y, epochs=2)
  assert all(p.read_bytes() == b"garbage" for p in files)
