"""scripts/gan_collapse_probe.py: spread history on a tiny config; bad flags."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import gan_collapse_probe  # pylint: disable=g-import-not-at-top

from sca_jax.gan import trainer

TINY = dict(channel_base=64, channel_max=8, d_channel_base=64,
            d_channel_max=8, z_dim=8, w_dim=8, batch_size=8)


def test_probe_reports_spread_and_losses():
  x = np.random.default_rng(0).uniform(-1, 1, (16, 8, 8, 1)).astype("f4")
  history = gan_collapse_probe.probe(trainer.GanConfig(**TINY), x, 4, 2,
                                     log=lambda e: None)
  assert [h["step"] for h in history] == [0, 2, 4]
  assert all(h["spread"] > 0 for h in history)  # random latents differ
  assert all(np.isfinite(h["d_loss"]) for h in history[1:])


def test_bad_overrides_are_named(capsys):
  with pytest.raises(SystemExit):
    gan_collapse_probe.main(["--name", "x", "--overrides",
                             json.dumps(dict(no_such_field=1))])
  assert "--overrides" in capsys.readouterr().err


def test_dcgan_control_runs_the_same_loop():
  x = np.random.default_rng(0).uniform(-1, 1, (16, 16, 16, 1)).astype("f4")
  history = gan_collapse_probe.probe(trainer.GanConfig(**TINY), x, 2, 2,
                                     log=lambda e: None, generator="dcgan")
  assert [h["step"] for h in history] == [0, 2]
  assert history[-1]["spread"] > 0 and np.isfinite(history[-1]["d_loss"])
  with pytest.raises(ValueError, match="stylegan2 or dcgan"):
    gan_collapse_probe.probe(trainer.GanConfig(**TINY), x, 1, 1,
                             generator="biggan")
