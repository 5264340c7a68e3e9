"""sca_jax.bench (LCA benchmarks): FISTA against plain LCA on the benchmark's
own shapes, the script's bookkeeping (skipping lcapt, --update), and the
training-step benchmark's FLOP count, and the per-op profiler."""

import importlib.util
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

from sca_jax import lca
from sca_jax.bench import common, profile, solver, train_step
from sca_jax.models import build_model

_REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
  spec = importlib.util.spec_from_file_location(
      "bench_lca", _REPO / "scripts" / "bench_lca.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


# Batch 4 of the benchmark's problems (first MNIST images, kernel 5,
# lambda 0.25, tau 100). Budgets: enough for the reference to sit at the
# optimum and for LCA to get within 1% (it needs ~1,900, ~2,100 and ~190
# iterations here; FISTA ~65, ~110 and 5).
@pytest.mark.parametrize("shape,ref_iters,fista_iters,lca_iters", [
    ("1->16", 600, 150, 2300),
    ("1->64", 1000, 150, 2300),
    ("16->28", 100, 20, 600)])
def test_fista_needs_5x_fewer_iterations_than_lca_on_benchmark_shapes(
    data_dir, shape, ref_iters, fista_iters, lca_iters):
  x, D = common.problem(shape, data_dir, 4)
  r = solver.iterations_to_1pct(x, D, ref_iters, lca_iters, fista_iters,
                               distances_at_1pct=False)
  # The reference is the optimum: converged, and nothing gets below it.
  assert r["reference_kkt_residual_rel_max"] < 1e-4, r
  assert r["lowest_objective_rel_to_reference"] > -1e-5, r
  n_fista, n_lca = r["fista_iters_to_1pct"], r["lca_iters_to_1pct"]
  assert n_fista is not None and n_lca is not None, r
  assert 5 * n_fista <= n_lca, r
  # The same fixed point: the minimiser FISTA finds is one of the LCA update
  # (one step from its potentials gives it back) and both objectives
  # converge to its value. In the codes, both approach it slowly on one
  # channel (30-40% off when within 1% in the objective); on 16 channels
  # quickly enough to watch.
  assert r["lca_fixed_point_residual_at_reference"] < 1e-4, r
  assert r["fista_final_rel_gap"] < 0.01, r  # plain FISTA is not monotone
  assert r["lca_final_rel_gap"] < 0.01, r
  if shape == "16->28":
    dist = r["codes_rel_dist_to_reference"]
    assert dist["fista_at_max"] < 0.05 and dist["lca_at_max"] < 0.1, r


def test_lcapt_is_skipped_without_a_checkout_and_update_keeps_sections(
    bench, tmp_path):
  out = tmp_path / "bench.json"
  out.write_text(json.dumps({"meta": {"date": "then"},
                             "forward": {"results": "kept"}}))
  bench.main(["--out", str(out), "--parts", "lcapt", "--update"])
  report = json.loads(out.read_text())
  assert report["lcapt"] == "skipped"
  assert report["forward"] == {"results": "kept"}
  assert report["meta_by_section"]["forward"] == {"date": "then"}
  assert report["meta_by_section"]["lcapt"]["date"] != "then"
  # Neither --update nor --replace: refused before any compute, the file
  # as it was; --replace starts it afresh. Unknown parts are refused too.
  before = out.read_text()
  for argv in (["--parts", "lcapt"], ["--parts", "lcapt,nope", "--update"],
               ["--parts", "lcapt", "--update", "--replace"]):
    with pytest.raises(SystemExit):
      bench.main(["--out", str(out), *argv])
    assert out.read_text() == before
  bench.main(["--out", str(out), "--parts", "lcapt", "--replace"])
  assert "forward" not in json.loads(out.read_text())


def test_sparse_flops_of_the_stride1_sca_step():
  cfg = train_step.stride1_sca_config(batch=64)
  model = build_model(cfg.defense, (28, 28, 1), 10, jax.random.key(0))
  flops = train_step.sparse_flops(model, (28, 28, 1), 15, 64)
  assert [v["shape"] for v in flops.values()] == ["1->16", "16->28"]
  # One decode and one encode per iteration: 2 x 2 B H W K^2 C F each.
  per_iter = {"1->16": 4 * 64 * 28 * 28 * 25 * 16,
              "16->28": 4 * 64 * 28 * 28 * 25 * 16 * 28}
  for v in flops.values():
    assert v["per_iteration"] == per_iter[v["shape"]]
    assert v["per_step"] == 15 * per_iter[v["shape"]]


def test_malloc_ab_runs_each_setting_in_a_fresh_process_with_its_env(
    tmp_path):
  """One setting, one round, batch 2: the child process saw the tunable
  (glibc reads it at start-up, so it must be in the child's environment),
  and its step times, page faults and system time come back."""
  settings = {"hugetlb": train_step.MALLOC_SETTINGS["hugetlb"]}
  r = train_step.compare_malloc_settings(settings, batch=2, repeats=2,
                                         rounds=1, workdir=str(tmp_path))
  v = r["variants"]["hugetlb"]
  (run,) = v["runs"]
  assert run["host"]["glibc_tunables"] == "glibc.malloc.hugetlb=1"
  assert len(run["seconds"]) == 2 and v["min"] == min(run["seconds"]) > 0
  assert v["speedup_min"] == 1.0 and v["minor_faults_per_step"] >= 0
  assert not list(tmp_path.iterdir())  # the workers' files are removed


def test_matmul_peak_is_a_rate_of_a_timed_product():
  peak = train_step.matmul_peak(n=256, repeats=2)
  assert 1e8 < peak < 1e14  # FLOP/s of any CPU in service


def test_profile_attributes_a_solve_gradient_to_its_convolutions():
  cfg = lca.LCAConfig(lam=0.1, num_iters=3, solver="fista")
  D = lca.init_dictionary(jax.random.key(0), 3, 2, 4)
  x = jax.random.normal(jax.random.key(1), (2, 6, 6, 2))
  grad = jax.jit(jax.grad(lambda x, D: jnp.sum(lca.solve(x, D, cfg).codes_BHWF),
                          argnums=1))
  out = profile.profile(grad, (x, D), steps=1, top=5)
  cats = out["ms_by_category"]
  for want in ("forward/encode/in_loop", "forward/decode/in_loop",
               "backward/encode/in_loop", "backward/decode/in_loop",
               "backward/dictionary_grad/in_loop"):
    assert want in cats, (want, sorted(cats))
  assert out["ms_total_ops"] == pytest.approx(sum(cats.values()))
  assert len(out["top_ops"]) == 5
  assert all(o["ms"] > 0 and o["calls"] >= 1 for o in out["top_ops"])


def test_profile_categories_and_hlo_names():
  text = ("  %ynn_fusion.3 = f32[4,3]{1,0} fusion(%a), kind=kCustom, "
          'metadata={op_name="jit(f)/transpose(jvp(jit(solve)))/while/body/'
          'closed_call/conv_general_dilated"}\n'
          "  %while.1 = (s32[], f32[2]) while(%t), body=%b, "
          'metadata={op_name="jit(f)/while"}\n')
  names = profile.hlo_op_names(text)
  assert list(names) == ["ynn_fusion.3"]  # loops span their ops: not counted
  assert profile.category(names["ynn_fusion.3"][1]) == (
      "backward/dictionary_grad/in_loop")
  assert profile.category("jit(f)/jvp(jit(solve))/jit(_conv_t)/dot_general") == (
      "forward/decode/outside_loop")
  assert profile.category("jit(f)/add") == (
      "forward/elementwise_copy_etc/outside_loop")
  # The FFT path (LCAConfig.conv="fft"): transforms and per-frequency products.
  assert profile.category(
      "jit(f)/transpose(jvp(jit(solve)))/while/body/closed_call/jit(fft)/fft"
  ) == "backward/fft/in_loop"
  assert profile.category(
      "jit(f)/jvp(jit(solve))/while/body/closed_call/dot_general") == (
          "forward/spectral_product/in_loop")
