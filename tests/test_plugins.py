"""A defense and an attack outside sca_jax, registered by import only
(`config.imports`), run end to end: "one file per component" holds."""

import json
from pathlib import Path

import pytest

from conftest import tiny_config
from sca_jax import experiment

PLUGINS = Path(__file__).resolve().parent / "plugins"


def test_toy_defense_and_attack_run_through_the_experiment(
    data_dir, tmp_path, monkeypatch):
  monkeypatch.syspath_prepend(str(PLUGINS))
  monkeypatch.setenv("SCA_JAX_CACHE_DIR", str(tmp_path / "cache"))
  c = tiny_config("no_defense", data_dir)
  # Nothing in the package knows these names: the run imports the modules.
  c.imports = ("toy_shift_defense", "toy_nearest_attack")
  c.defense.name, c.defense.model = "toy_shift", None
  c.attacks = ("toy_nearest",)
  c.eval_classifier.update(epochs=1, max_train=256)
  results = experiment.run(c, tmp_path / "w")

  saved = json.loads((tmp_path / "w" / "results.json").read_text())
  toy = saved["attacks"]["toy_nearest"]
  # The toy layer is in the model and is what leaked: its shift (100) shows.
  assert "layer2_toy_shift" in toy["representations"]
  assert toy["leak_mean"] > 50
  assert toy["num_images"] == 32 and "floor" in toy
  # The toy loss term ran in every logged training step.
  logged = [json.loads(line) for line in
            (tmp_path / "w" / "train_metrics.jsonl").read_text().splitlines()]
  assert logged and all(r["toy_penalty"] > 0 for r in logged)
  assert results["defense"] == "toy_shift"


def test_a_missing_plugin_module_is_named(tmp_path):
  c = tiny_config("no_defense")
  c.imports = ("no_such_plugin_module",)
  with pytest.raises(ValueError, match="config.imports.*no_such_plugin"):
    experiment.validate(c)
