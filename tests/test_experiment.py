"""The whole run: validation before compute, results.json, resume, main."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sca_jax import checkpoint, config_lib, experiment, validation
from sca_jax.defenses import DEFENSES
from conftest import tiny_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("field,value,match", [
    ("defense.name", "magic", "defense.name"),
    ("defense.lam", -0.5, "lam"),
    ("defense.strides", (1,), "strides"),
    ("train.optimizer", "rmsprop", "config.train.optimizer"),
    ("train.epochs", 0, "config.train.epochs"),
    ("solver_gap.max_relative_gap", 0.0, "solver_gap.max_relative_gap"),
])
def test_bad_config_fails_before_loading_data(tmp_path, field, value, match):
  (tmp_path / "no_data_here").mkdir()  # an empty folder: loading would fail
  c = tiny_config("sca", data_dir=str(tmp_path / "no_data_here"))
  section, name = field.split(".")
  c[section][name] = value
  with pytest.raises(ValueError, match=match):
    experiment.run(c, tmp_path / "w")
  assert not (tmp_path / "w").exists()


def test_run_writes_results_and_resumes_to_the_same_numbers(tiny, tmp_path,
                                                            capsys):
  c = tiny("sca")
  # A criterion the tiny solve (5 iterations) misses, so the warning shows;
  # it reads nothing that decides the checkpoint.
  c.solver_gap.max_relative_gap = 1e-6
  first = experiment.run(c, tmp_path)
  saved = json.loads((tmp_path / "results.json").read_text())
  # Every layer beyond the gap criterion was named while the run went on.
  out = capsys.readouterr().out
  warned = [l for l in out.splitlines() if l.startswith("WARNING: layer")]
  assert warned and warned == experiment.warn_solver_gaps(
      saved["sparse_layers"], c.solver_gap.max_relative_gap)
  assert saved["test_accuracy"] == first["test_accuracy"]
  assert saved["train"]["num_steps"] == 8
  layer = saved["sparse_layers"]["layer0_lca"]
  assert 0 < layer["active_fraction"] < 1
  assert layer["relative_gap_to_optimum"] >= -1e-3
  assert layer["reference"] == "fista x50"  # config.solver_gap, from TINY
  # Rerun in the same workdir: nothing left to train, same answer.
  again = experiment.run(c, tmp_path)
  assert again["train"]["steps_this_run"] == 0
  assert again["test_accuracy"] == first["test_accuracy"]
  # Same config and seed in a fresh workdir: the same run.
  fresh = experiment.run(c, tmp_path / "fresh")
  assert fresh["test_accuracy"] == first["test_accuracy"]


def test_layers_far_from_their_optimum_are_warned(capsys):
  # MNIST SCA lambda 0.1 seed 0 at the faithful protocol's 50 iterations.
  stats = {"layer0_lca": {"relative_gap_to_optimum": 0.0545},
           "layer2_lca": {"relative_gap_to_optimum": 0.0071}}
  warnings = experiment.warn_solver_gaps(stats, 0.02)
  assert len(warnings) == 1
  assert warnings[0].startswith("WARNING: layer0_lca is 5.45% from the optimum")
  assert "defense.layer_num_iters" in warnings[0]
  assert capsys.readouterr().out.splitlines() == warnings
  assert not experiment.warn_solver_gaps(stats, 0.06)


def test_another_experiment_in_the_same_workdir_is_refused(tiny, tmp_path):
  c = tiny("no_defense")
  experiment.run(c, tmp_path)
  before = (tmp_path / "results.json").read_text()
  c.seed = 1
  with pytest.raises(validation.ConfigError, match="another experiment"):
    experiment.run(c, tmp_path)
  assert (tmp_path / "results.json").read_text() == before


def _files(root: Path) -> dict[str, bytes]:
  return {str(p.relative_to(root)): p.read_bytes()
          for p in sorted(root.rglob("*")) if p.is_file()}


def test_foreign_checkpoints_are_refused_with_config_and_results_gone(
    tiny, tmp_path, monkeypatch):
  c = tiny("sca")
  experiment.run(c, tmp_path)
  (tmp_path / "config.json").unlink()
  (tmp_path / "results.json").unlink()
  before = _files(tmp_path)
  c.defense.lam = 0.25
  monkeypatch.setattr(experiment, "make_splits", None)  # never reached
  with pytest.raises(validation.ConfigError, match="checkpoint steps"):
    experiment.run(c, tmp_path)
  assert _files(tmp_path) == before


def test_a_failed_run_changes_nothing_in_its_workdir(tiny, tmp_path):
  c = tiny("no_defense")
  experiment.run(c, tmp_path)
  before = _files(tmp_path)
  bad = tiny("no_defense")
  bad.defense.kernel = 0  # fails before loading
  with pytest.raises(validation.ConfigError, match="defense.kernel"):
    experiment.run(bad, tmp_path)
  assert _files(tmp_path) == before
  bad = tiny("no_defense")
  bad.train.batch_size = 512  # more than the 256 training images: after
  with pytest.raises(validation.ConfigError, match="train.batch_size"):
    experiment.run(bad, tmp_path / "new")  # loading, before training
  assert not (tmp_path / "new").exists()


def test_nan_run_then_retry_with_a_lower_learning_rate(tiny, tmp_path):
  c = tiny("no_defense")
  c.train.optimizer, c.train.schedule = "sgd", "constant"
  c.train.learning_rate, c.train.log_every = 1e30, 1
  with pytest.raises(checkpoint.TrainingDiverged, match="no checkpoint"):
    experiment.run(c, tmp_path)
  assert sorted(p.name for p in tmp_path.iterdir()) == ["diverged"]
  c.train.learning_rate = 1e-2
  results = experiment.run(c, tmp_path)
  assert results["train"]["resumed_from_step"] == 0


def test_skip_training_evaluates_the_checkpoint(tiny, tmp_path):
  c = tiny("no_defense")
  with pytest.raises(validation.ConfigError, match="no checkpoint"):
    c.train.skip = True
    experiment.run(c, tmp_path)
  c.train.skip = False
  trained = experiment.run(c, tmp_path)
  c.train.skip = True
  evaluated = experiment.run(c, tmp_path)
  assert evaluated["test_accuracy"] == trained["test_accuracy"]
  assert evaluated["train"]["restored_step"] == 8


def test_run_with_attacks_reports_them_beside_accuracy(tiny, tmp_path,
                                                       monkeypatch):
  monkeypatch.setenv("SCA_JAX_CACHE_DIR", str(tmp_path / "cache"))
  c = tiny("no_defense")
  c.attacks = ("end_to_end", "split")
  for name in c.attacks:
    c.attack[name].update(epochs=2, num_images=32, grid_per_group=2)
  c.eval_classifier.update(epochs=1, max_train=256)
  results = experiment.run(c, tmp_path / "w")
  for name in c.attacks:
    r = results["attacks"][name]
    assert r["num_images"] == 32 and np.isfinite(r["psnr"]["mean"])
    assert "floor" in r and r["fid_feature_network"].startswith("eval_cnn")
    assert (tmp_path / "w" / "attacks" / f"{name}.png").exists()
  saved = json.loads((tmp_path / "w" / "results.json").read_text())
  assert set(saved["attacks"]) == {"end_to_end", "split"}


def _load_config_file(name: str):
  ns = {}
  exec((ROOT / "configs" / name).read_text(), ns)  # pylint: disable=exec-used
  return ns["get_config"]


def test_mnist_sca_config_file_is_the_experiment_config():
  get_config = _load_config_file("mnist_sca.py")
  for arg, protocol in ((None, "default"), ("paper", "paper")):
    c = get_config(arg)
    experiment.validate(c)
    assert c.to_dict() == _load_config_file("experiment.py")(
        f"defense=sca,dataset=mnist,protocol={protocol}").to_dict()
  assert c.defense.num_iters == 500 and c.train.epochs == 25
  with pytest.raises(ValueError, match="paper"):
    get_config("huge")


@pytest.mark.parametrize("defense", DEFENSES.names())
def test_every_defense_reachable_from_the_experiment_config(defense):
  get_config = _load_config_file("experiment.py")
  for protocol in ("default", "paper"):
    c = get_config(f"defense={defense},dataset=fashion_mnist,"
                   f"protocol={protocol}")
    experiment.validate(c)
    assert (c.defense.name, c.data.name) == (defense, "fashion_mnist")


def test_main_entry_point_with_overrides(data_dir, tmp_path):
  cmd = [sys.executable, "-m", "sca_jax.main",
         "--config=configs/experiment.py:defense=no_defense",
         f"--workdir={tmp_path}",
         "--config.data.max_train=128", "--config.data.max_test=64",
         "--config.data.max_aux=64", "--config.train.epochs=1",
         "--config.train.batch_size=32", "--config.defense.hidden=(16,)",
         "--config.train.checkpoint_every=2"]
  env = dict(os.environ, SCA_JAX_DATA_DIR=data_dir)
  # One attack of the default list: the rest run in test_attacks.
  out = subprocess.run(cmd + ["--config.attacks=('end_to_end',)"], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  assert "ETA" in out.stdout and "test accuracy" in out.stdout
  assert "attack 1 of 1: end_to_end" in out.stdout
  results = json.loads((tmp_path / "results.json").read_text())
  assert results["config"]["defense"]["hidden"] == [16]
  assert list(results["attacks"]) == ["end_to_end"]
  bad = subprocess.run(cmd[:4] + [f"--workdir={tmp_path / 'x'}",
                                  "--config.defense.name=nope"],
                       cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=300)
  assert bad.returncode == 2 and "allowed" in bad.stderr
  assert "Traceback" not in bad.stderr
  assert [s for s in bad.stderr.splitlines() if s.startswith("error:")] == [
      bad.stderr.strip()]
  debug = subprocess.run(bad.args + ["--debug"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
  assert debug.returncode != 0 and "Traceback" in debug.stderr
  # The newest checkpoint corrupt: one line, the older one used, no noise.
  steps = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir())
  assert steps == [2, 4]
  for p in (tmp_path / "checkpoints" / "4").rglob("*"):
    if p.is_file() and p.stat().st_size:
      p.write_bytes(b"garbage")
  again = subprocess.run(cmd + ["--config.attacks=()"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=300)
  out = again.stdout + again.stderr
  assert again.returncode == 0, out[-2000:]
  assert "Traceback" not in out and out.count("is unreadable") == 1
  assert "resuming from step 2" in out


def test_fingerprint_counts_only_the_fields_the_defense_reads():
  def fp(defense, **fields):
    c = config_lib.make_config(defense, "mnist")
    c.defense.update(fields)
    return experiment.fingerprint(c)

  # No sparse layers: the LCA settings are not part of the experiment.
  assert fp("no_defense") == fp("no_defense", lam=0.1, layer_num_iters=(9,))
  # Sparse layers: they are, except how the solver convolves (same maps).
  assert fp("sca") != fp("sca", lam=0.1)
  assert fp("sca") != fp("sca", layer_num_iters=(50, 40))
  assert fp("sca") == fp("sca", conv="auto")
