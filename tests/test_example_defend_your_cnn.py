"""examples/defend_your_cnn.py runs end to end on tiny data."""

import importlib.util
import time
from pathlib import Path

import numpy as np

_EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "defend_your_cnn.py"


def test_example_runs_on_tiny_data(data_dir, monkeypatch):
  monkeypatch.setenv("SCA_JAX_DATA_DIR", data_dir)
  # Without the Fashion-MNIST files, the synthetic MNIST set of conftest.
  dataset = ("fashion_mnist" if (Path(data_dir) / "fashion_mnist").is_dir()
             else "mnist")
  spec = importlib.util.spec_from_file_location("defend_your_cnn", _EXAMPLE)
  example = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(example)
  assert len(_EXAMPLE.read_text().splitlines()) < 100
  start = time.perf_counter()
  out = example.main(tiny=True, dataset=dataset)
  assert out["test_accuracy"] > 0.3  # 10 classes: chance is 0.1
  for name in ("end_to_end", "split"):
    r = out["attacks"][name]
    assert r["num_images"] == 64 and np.isfinite(r["psnr"]["mean"])
    assert "floor" in r and Path(r["grid"]["path"]).is_file()
  print(f"example: {time.perf_counter() - start:.1f} s")
