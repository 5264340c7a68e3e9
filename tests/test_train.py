"""Training: dictionary update rules, resume, NaN handling, optimisers."""

import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sca_jax import checkpoint, lca, train
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


def _nan_message_checkpoint(message: str) -> Path:
  return Path(re.search(r"is now (\S+)\)", message).group(1))


def test_nan_loss_sets_the_run_aside_naming_a_finite_checkpoint(tmp_path):
  # Two good steps (one 64-image batch per epoch), then data with NaNs.
  settings = dict(batch_size=64, checkpoint_every=1, log_every=1)
  trainer, cfg = _trainer(hebbian=False, **settings)
  x_good, y_good = _batch(64, seed=1)
  _fit(trainer, cfg, tmp_path, x_good, y_good, epochs=2)
  x, y = _batch(64)
  x[40:] = np.nan
  trainer, cfg = _trainer(hebbian=False, **settings)
  with pytest.raises(checkpoint.TrainingDiverged, match="step 2, finite") as e:
    _fit(trainer, cfg, tmp_path, x, y, epochs=4)
  named = _nan_message_checkpoint(str(e.value))
  assert named.name == "2" and named.is_dir()
  restored = Checkpointer(named.parent).restore_latest(trainer.init_state)
  assert checkpoint.all_finite(restored) and int(restored.step) == 2
  # The workdir is clear: a retry (here: other data, another learning rate)
  # trains from scratch instead of resuming the set-aside run.
  assert not (tmp_path / "checkpoints").exists()
  trainer, cfg = _trainer(hebbian=False, learning_rate=1e-4, **settings)
  _, info = _fit(trainer, cfg, tmp_path, x_good, y_good, epochs=1)
  assert info["resumed_from_step"] == 0


def test_nan_state_is_never_checkpointed_and_none_is_named(tmp_path):
  # The loss is checked only at the end here; the state before each save.
  trainer, cfg = _trainer(hebbian=False, batch_size=64, checkpoint_every=1,
                          log_every=1000)
  x, y = _batch(64)
  x[:] = np.nan
  with pytest.raises(checkpoint.TrainingDiverged,
                     match="NaN or inf at step 1.*no checkpoint"):
    _fit(trainer, cfg, tmp_path, x, y, epochs=2)
  assert not list((tmp_path / "diverged").rglob("commit_success.txt"))
  with pytest.raises(FloatingPointError, match="refusing"):
    Checkpointer(tmp_path / "c").save(1, {"a": jnp.array([1.0, jnp.nan])})


def _corrupt(step_dir: Path) -> None:
  for p in step_dir.rglob("*"):
    if p.is_file() and p.stat().st_size:
      p.write_bytes(b"garbage")


def test_corrupt_newest_checkpoint_falls_back_to_the_newest_intact(tmp_path):
  x, y = _batch(96)
  trainer, cfg = _trainer(checkpoint_every=1)
  straight, _ = _fit(trainer, cfg, tmp_path / "a", x, y, epochs=2)
  trainer, cfg = _trainer(checkpoint_every=1)
  _fit(trainer, cfg, tmp_path / "b", x, y, epochs=2)
  _corrupt(tmp_path / "b" / "checkpoints" / "6")
  lines = []
  trainer, cfg = _trainer(checkpoint_every=1)
  cfg.train.epochs = 2
  resumed, info = train.fit(trainer, cfg.train, x, y, tmp_path / "b",
                            jax.random.key(1), 0, log=lines.append)
  assert info["resumed_from_step"] == 5
  notes = [s for s in lines if "is unreadable" in s]
  assert len(notes) == 1 and "step 6" in notes[0]
  assert any("resuming from step 5" in s for s in lines)
  for a, b in zip(jax.tree.leaves(straight), jax.tree.leaves(resumed)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  moved = list((tmp_path / "b" / "unreadable_checkpoints").iterdir())
  assert len(moved) == 1 and moved[0].name.startswith("6-")


def test_no_intact_checkpoint_is_an_error_and_nothing_is_deleted(tmp_path):
  x, y = _batch(64)
  trainer, cfg = _trainer()
  _fit(trainer, cfg, tmp_path, x, y, epochs=1)
  for step_dir in (tmp_path / "checkpoints").iterdir():
    _corrupt(step_dir)
  trainer, cfg = _trainer()
  with pytest.raises(CheckpointError, match="no intact checkpoint"):
    _fit(trainer, cfg, tmp_path, x, y, epochs=2)
  moved = [p for p in (tmp_path / "unreadable_checkpoints").rglob("*")
           if p.is_file() and p.stat().st_size]
  assert moved and all(p.read_bytes() == b"garbage" for p in moved)


def test_metrics_log_holds_each_step_once_after_resumes(tmp_path):
  x, y = _batch(96)
  trainer, cfg = _trainer(log_every=1, checkpoint_every=2)
  _fit(trainer, cfg, tmp_path, x, y, epochs=2)
  # As if killed after logging steps 5 and 6 but before saving step 6, and
  # in the middle of writing a line.
  shutil.rmtree(tmp_path / "checkpoints" / "6")
  with (tmp_path / "train_metrics.jsonl").open("a") as f:
    f.write('{"step": 7, "lo')
  for _ in range(2):
    trainer, cfg = _trainer(log_every=1, checkpoint_every=2)
    _fit(trainer, cfg, tmp_path, x, y, epochs=2)
  lines = (tmp_path / "train_metrics.jsonl").read_text().splitlines()
  assert [json.loads(s)["step"] for s in lines] == [1, 2, 3, 4, 5, 6]


_CHILD = """
import sys, time
from pathlib import Path
sys.path.insert(0, {tests!r})
import jax
from sca_jax import train
from test_train import _batch, _trainer
x, y = _batch(96)
trainer, cfg = _trainer(checkpoint_every=1, log_every=1)
cfg.train.epochs = 2
# Slow logging, so the parent can kill between two checkpoints.
train.fit(trainer, cfg.train, x, y, Path({workdir!r}), jax.random.key(1), 0,
          log=lambda s: time.sleep(0.5))
"""


def test_kill_9_during_training_then_resume_is_bit_identical(tmp_path):
  x, y = _batch(96)
  trainer, cfg = _trainer(checkpoint_every=1, log_every=1)
  straight, _ = _fit(trainer, cfg, tmp_path / "a", x, y, epochs=2)
  workdir = tmp_path / "b"
  child = subprocess.Popen(
      [sys.executable, "-c", _CHILD.format(tests=str(Path(__file__).parent),
                                           workdir=str(workdir))])
  deadline = time.time() + 240
  while not (workdir / "checkpoints" / "2").exists():
    assert child.poll() is None and time.time() < deadline
    time.sleep(0.05)
  child.send_signal(signal.SIGKILL)
  child.wait()
  trainer, cfg = _trainer(checkpoint_every=1, log_every=1)
  resumed, info = _fit(trainer, cfg, workdir, x, y, epochs=2)
  assert 2 <= info["resumed_from_step"] < 6
  for a, b in zip(jax.tree.leaves(straight), jax.tree.leaves(resumed)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  lines = (workdir / "train_metrics.jsonl").read_text().splitlines()
  assert [json.loads(s)["step"] for s in lines] == [1, 2, 3, 4, 5, 6]
