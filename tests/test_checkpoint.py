"""Checkpoints: fingerprint per step, finite-only saves, fallback, metrics log."""

import json

import jax.numpy as jnp
import numpy as np
import pytest

from sca_jax import checkpoint
from sca_jax.checkpoint import CheckpointError, Checkpointer


def _tree(value: float):
  return {"w": jnp.full((3, 2), value), "step": jnp.array(1, jnp.int32)}


def test_every_step_carries_the_fingerprint_and_a_foreign_one_is_refused(
    tmp_path):
  ckpt = Checkpointer(tmp_path, fingerprint={"lam": 0.5})
  for step in (1, 2):
    ckpt.save(step, _tree(float(step)))
  ckpt.wait()
  assert checkpoint.read_fingerprints(tmp_path) == {1: {"lam": 0.5},
                                                    2: {"lam": 0.5}}
  other = Checkpointer(tmp_path, fingerprint={"lam": 0.25})
  with pytest.raises(CheckpointError, match="different experiment"):
    other.restore_latest(_tree(0.0))
  assert sorted(p.name for p in tmp_path.iterdir()) == ["1", "2"]
  same = Checkpointer(tmp_path, fingerprint={"lam": 0.5})
  np.testing.assert_array_equal(same.restore_latest(_tree(0.0))["w"], 2.0)


def test_a_step_without_a_readable_fingerprint_is_never_used(tmp_path):
  ckpt = Checkpointer(tmp_path / "c", fingerprint={"a": 1})
  ckpt.save(1, _tree(1.0))
  ckpt.save(2, _tree(2.0))
  ckpt.wait()
  (tmp_path / "c" / "2" / "fingerprint" / "metadata").write_text("{broken")
  assert checkpoint.read_fingerprints(tmp_path / "c")[2] is None
  lines = []
  restored = Checkpointer(tmp_path / "c", fingerprint={"a": 1},
                          log=lines.append).restore_latest(_tree(0.0))
  np.testing.assert_array_equal(restored["w"], 1.0)
  assert len([s for s in lines if "unreadable" in s]) == 1


def test_all_finite_looks_at_float_leaves_only():
  assert checkpoint.all_finite(_tree(1.0))
  assert not checkpoint.all_finite(_tree(np.inf))
  assert not checkpoint.all_finite({"a": jnp.array([0.0, jnp.nan])})
  assert checkpoint.all_finite({"n": jnp.arange(3)})


def test_truncate_metrics_keeps_each_step_once(tmp_path):
  path = tmp_path / "m.jsonl"
  rows = [{"step": s, "loss": 1.0 / s} for s in (1, 2, 3, 2, 3, 4)]
  path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 5')
  checkpoint.truncate_metrics(path, 3)
  steps = [json.loads(s)["step"] for s in path.read_text().splitlines()]
  assert steps == [1, 2, 3]
  checkpoint.truncate_metrics(tmp_path / "absent.jsonl", 3)  # no file: no-op
