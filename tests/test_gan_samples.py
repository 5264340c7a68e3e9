"""scripts/gan_samples.py: the picture and its numbers are written; bad
sizes fail before training."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import gan_samples  # pylint: disable=g-import-not-at-top,wrong-import-position


@pytest.mark.real_data
def test_writes_grid_and_report(real_data_dir, tmp_path):
  out = tmp_path / "g.png"
  report = gan_samples.main([f"--data_dir={real_data_dir}", "--images=400",
                             "--epochs=1", "--per_class=2", f"--out={out}"])
  assert out.stat().st_size > 1000
  assert json.loads(out.with_suffix(".json").read_text()) == report
  assert 0.0 <= report["agreement"] <= 1.0
  assert report["judge_accuracy_real"] > 0.5  # a judge that can read digits
  assert report["pixel_std_real"] > 0.1


def test_too_many_images_fail_before_training(data_dir, tmp_path):
  with pytest.raises(ValueError, match="--images=10000000"):
    gan_samples.main([f"--data_dir={data_dir}", "--images=10000000",
                      f"--out={tmp_path / 'g.png'}"])
