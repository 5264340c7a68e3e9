"""Markdown tables from results.json."""

import json

from sca_jax import report


def _run(defense, gap):
  stat = {"mean": 20.0, "std": 1.0}
  attack = {"leak": {"name": "first"}, "psnr": stat, "ssim": stat, "fid": 3.0,
            "attack_accuracy": stat,
            "floor": {"psnr": stat, "ssim": stat, "fid": 800.0,
                      "attack_accuracy": stat}}
  return {"defense": defense, "test_accuracy": 0.97, "train": {
      "train_time_s": 12.0}, "config": {"defense": {
          "solver": "fista", "num_iters": 15}},
          "sparse_layers": {"layer0_lca": {
              "active_fraction": 0.1, "relative_gap_to_optimum": gap}}
          if gap is not None else {}, "attacks": {"split": attack}}


def test_tables_hold_every_run_and_attack(tmp_path):
  paths = []
  for i, (name, gap) in enumerate((("sca", 0.0123), ("no_defense", None))):
    paths.append(tmp_path / f"{i}.json")
    paths[-1].write_text(json.dumps(_run(name, gap)))
  runs = report.load(paths)
  training = report.training_table(runs)
  assert "| sca | fista x15 | 0.9700 | 12 | layer0_lca: 0.100, 1.23% |" in training
  assert "| no_defense | - |" in training
  attacks = report.attack_table(runs).splitlines()
  assert len(attacks) == 4 and "split (first)" in attacks[2]
