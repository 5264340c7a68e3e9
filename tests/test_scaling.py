"""scripts/scaling.py: with one device it warns and says how to get more."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import jax

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "scaling.py"


def _script_module():
  spec = importlib.util.spec_from_file_location("scaling", SCRIPT)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_warning_only_with_one_device():
  warn = _script_module().one_device_warning
  device = jax.devices()[0]
  message = warn([device])
  assert "XLA_FLAGS=--xla_force_host_platform_device_count=" in message
  assert '".[gpu]"' in message and '".[tpu]"' in message
  assert warn([device, device]) is None


def test_script_warns_and_still_measures_one_device(tmp_path):
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env.update(PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
  out = tmp_path / "scaling.json"
  done = subprocess.run(
      [sys.executable, str(SCRIPT), f"--out={out}", "--steps=1",
       "--num_iters=1", "--per_device_batch=4"],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr
  assert "warning: one device visible (cpu)" in done.stderr
  assert "xla_force_host_platform_device_count" in done.stderr
  rows = json.loads(out.read_text())["rows"]
  assert [r["devices"] for r in rows] == [1] and rows[0]["images_per_s"] > 0
