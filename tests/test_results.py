"""sca_jax.results: metrics found in results.json (new ones flow through),
targets named by the sweep's cell.json or the directory."""

import json

from sca_jax import results


def _stat(mean):
  return {"mean": mean, "std": 0.1, "n": 8}


def _results(defense="sca", seed=0, **extra):
  attack = {"leak": {"name": "first"}, "psnr": _stat(20.0),
            "ssim": _stat(0.8), "fid": 3.0, "attack_accuracy": _stat(0.9),
            "made_up_metric": _stat(0.4),  # a metric this code never names
            "reidentification": {"pixel": 0.5, "feature": 0.25,
                                 "chance": 1 / 512},
            "num_images": 512, "train_time_s": 9.0,
            "floor": {"psnr": _stat(11.0), "fid": 800.0, "name": "mean"},
            "floors": {"mean_image": {"psnr": _stat(11.0)},
                       "retrieval_oracle": {
                           "psnr": _stat(14.0),
                           "reidentification": {"pixel": 0.75,
                                                "chance": 1 / 512}}}}
  return {"dataset": "mnist", "defense": defense, "seed": seed,
          "test_accuracy": 0.97, "train_accuracy": 0.99,
          "config": {"defense": {"lam": 0.25}}, "attacks": {"split": attack},
          **extra}


def test_attack_metrics_are_the_recorded_statistics_and_fid():
  got = results.attack_metrics(_results()["attacks"]["split"])
  assert got == {"psnr": 20.0, "ssim": 0.8, "fid": 3.0,
                 "attack_accuracy": 0.9, "made_up_metric": 0.4,
                 "reid_pixel": 0.5, "reid_feature": 0.25,
                 "psnr_floor": 11.0, "fid_floor": 800.0,
                 "psnr_floor_retrieval_oracle": 14.0,
                 "reid_pixel_floor_retrieval_oracle": 0.75}


def test_a_floor_other_than_the_image_floors_keeps_its_name():
  # Plug-&-Play's floor is random generator samples, not the mean image.
  ppa = {"attack_accuracy": _stat(0.9), "fid": 180.0,
         "floor": {"attack_accuracy": _stat(0.1), "fid": 360.0,
                   "name": "random_generator_samples"}}
  assert results.attack_metrics(ppa) == {
      "attack_accuracy": 0.9, "fid": 180.0,
      "attack_accuracy_floor_random_generator_samples": 0.1,
      "fid_floor_random_generator_samples": 360.0}


def test_load_results_names_targets_and_reads_dp(tmp_path):
  cell = tmp_path / "mnist" / "sca_lam0.25" / "seed1"
  cell.mkdir(parents=True)
  (cell / "results.json").write_text(json.dumps(_results(seed=1)))
  (cell / "cell.json").write_text(json.dumps({"labels": {
      "dataset": "mnist", "target": "sca_lam0.25", "seed": "seed1"}}))
  plain = tmp_path / "mnist" / "dp" / "seed0"  # no cell.json: from the path
  plain.mkdir(parents=True)
  (plain / "results.json").write_text(json.dumps(_results(
      "dp_sgd", dp={"epsilon": 2.5, "noise_multiplier": 1.1})))
  (tmp_path / ".submitit").mkdir()
  (tmp_path / ".submitit" / "results.json").write_text("{}")  # not a run

  rows = results.load_results(tmp_path)
  assert {(r["cell"], r["target"]) for r in rows} == {
      ("mnist/dp/seed0", "dp"), ("mnist/sca_lam0.25/seed1", "sca_lam0.25")}
  sca = [r for r in rows if r["target"] == "sca_lam0.25"]
  assert all(r["lam"] == 0.25 and r["seed"] == 1 for r in sca)
  assert {(r["threat_model"], r["metric"]) for r in sca} >= {
      ("target", "test_accuracy"), ("split", "made_up_metric"),
      ("split", "psnr_floor")}
  dp = [r for r in rows if r["target"] == "dp"]
  assert all(r["lam"] is None and r["dp_epsilon"] == 2.5 for r in dp)
  assert [r["value"] for r in dp if r["metric"] == "dp_epsilon"] == [2.5]


def test_sparse_layer_gaps_become_target_rows(tmp_path):
  cell = tmp_path / "mnist" / "sca" / "seed0"
  cell.mkdir(parents=True)
  (cell / "results.json").write_text(json.dumps(_results(sparse_layers={
      "layer0_lca": {"relative_gap_to_optimum": 0.0545, "objective": 1.0},
      "layer2_lca": {"relative_gap_to_optimum": 0.0071}})))
  gaps = {r["metric"]: r["value"] for r in results.load_results(tmp_path)
          if r["metric"].startswith(results.GAP_PREFIX)}
  assert gaps == {"solver_gap_layer0_lca": 0.0545,
                  "solver_gap_layer2_lca": 0.0071}
