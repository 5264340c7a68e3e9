"""Data parallelism: one step on 8 (virtual CPU) devices equals 1 device."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sca_jax import parallel

ROOT = Path(__file__).resolve().parents[1]

_SCRIPT = textwrap.dedent("""
    import jax, jax.numpy as jnp, numpy as np
    assert len(jax.devices()) == 8, jax.devices()
    import sys; sys.path.insert(0, "tests")
    from conftest import tiny_config
    from sca_jax import parallel, train
    from sca_jax.models import build_model
    mesh8 = parallel.data_mesh(8)
    parallel.check_batch_size(32, mesh8)
    try:
      parallel.check_batch_size(7, mesh8)
      raise SystemExit("a batch of 7 was accepted on 8 devices")
    except ValueError as e:
      assert "config.train.batch_size=7 must be a multiple of the 8" in str(e)
    cfg = tiny_config("sca")
    cfg.defense.num_iters = 4
    model = build_model(cfg.defense, (28, 28, 1), 10, jax.random.key(0))
    trainer = train.Trainer(model, cfg.defense,
                            train.make_optimizer(cfg.train, 10))
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(32, 28, 28, 1)).astype(np.float32)
    y = rng.integers(0, 10, 32).astype(np.int32)
    out = []
    for n in (1, 8):
      mesh = parallel.data_mesh(n)
      state = parallel.replicate(mesh, jax.tree.map(jnp.copy,
                                                    trainer.init_state))
      xs, ys = parallel.shard_batch(mesh, x, y)
      assert len(xs.sharding.device_set) == n
      for step in range(2):
        state, metrics = trainer.train_step(state, xs, ys,
                                            jax.random.key(step))
      out.append((jax.tree.leaves(state), float(metrics["loss"])))
    (a, la), (b, lb) = out
    np.testing.assert_allclose(la, lb, rtol=1e-5)
    for u, v in zip(a, b):
      np.testing.assert_allclose(np.asarray(u), np.asarray(v),
                                 rtol=2e-4, atol=2e-5)
    print("EQUAL", len(a))
""")


def test_eight_device_step_equals_one_device_step():
  env = dict(os.environ,
             XLA_FLAGS="--xla_force_host_platform_device_count=8",
             JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, "-c", _SCRIPT], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "EQUAL" in out.stdout


def test_one_device_takes_any_batch_and_too_many_devices_fail():
  # The refusal of a batch that does not divide over 8 devices is checked
  # in the 8-device script above (this process sees one device).
  parallel.check_batch_size(7, parallel.data_mesh(1))
  with pytest.raises(ValueError, match="num_devices"):
    parallel.data_mesh(10_000)
