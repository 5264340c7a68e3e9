"""scripts/solver_gap.py: a trained target's gap to the optimum by solver
iterations, from its workdir."""

import importlib.util
from pathlib import Path

import pytest

from sca_jax import experiment

_SPEC = importlib.util.spec_from_file_location(
    "solver_gap", Path(__file__).resolve().parents[1] / "scripts" /
    "solver_gap.py")
solver_gap = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(solver_gap)


def test_gap_shrinks_with_iterations_and_matches_the_configured_solve(
    tmp_path, tiny):
  config = tiny("sca")
  config.data.max_train = 64
  experiment.run(config, tmp_path / "run")
  out = solver_gap.main([f"--workdir={tmp_path / 'run'}", "--iters=1,5,100",
                         "--images=16", "--reference=300",
                         f"--out={tmp_path / 'gap.json'}"])
  assert (tmp_path / "gap.json").exists()
  assert set(out["layers"]) == {"layer0_lca", "layer2_lca"}
  for layer in out["layers"].values():
    gaps = layer["gap_by_iterations"]
    assert gaps[1] > gaps[5] > gaps[100] >= -1e-4
    # The configured solve (num_iters 5) is the 5-iteration entry.
    assert layer["relative_gap_to_optimum"] == pytest.approx(gaps[5],
                                                             rel=1e-3)


def test_a_folder_without_a_run_is_a_clear_error(tmp_path, capsys):
  with pytest.raises(SystemExit) as e:
    solver_gap.main([f"--workdir={tmp_path}"])
  assert e.value.code == 2
  assert "config.json" in capsys.readouterr().err
  with pytest.raises(SystemExit):
    solver_gap.main([f"--workdir={tmp_path}", "--iters=0"])
