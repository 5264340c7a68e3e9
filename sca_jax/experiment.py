"""One run end to end: data -> train target -> attacks -> results.json.

Everything that can be checked about the config is checked before any data is
loaded or any step is compiled (sca_jax.validation), the rest right after
loading; the workdir is created and config.json written only once all checks
passed. Files in the workdir are written atomically; results of an earlier
run are never overwritten by a run that fails.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from sca_jax import lca
from sca_jax import results as results_lib
from sca_jax import train as train_lib
from sca_jax import validation
from sca_jax.checkpoint import Checkpointer, read_fingerprints
from sca_jax.data import make_splits
from sca_jax.defenses import DEFENSES, TrainingSet, read_fields, with_defaults
from sca_jax.models import build_model

# Config sections that decide what a checkpoint holds: resuming under a config
# that differs in any of these would silently mix two experiments. The
# learning rate is one: a run stopped by NaN sets its checkpoints aside
# (checkpoint.stop_diverged) so a retry at another rate starts cleanly. Where
# the data lies (data_dir) is not: moving the files must not block a resume.
_TRAINING_FIELDS = ("seed", "data", "defense")
_TRAIN_FIELDS = ("optimizer", "learning_rate", "momentum", "weight_decay",
                 "schedule", "epochs", "batch_size")

validate = validation.validate  # kept for callers of experiment.validate


def fingerprint(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """What decides a checkpoint's contents, as plain JSON."""
  d = config.to_dict()
  fp = {k: d[k] for k in _TRAINING_FIELDS}
  fp["data"] = {k: v for k, v in fp["data"].items() if k != "data_dir"}
  # How the solver convolves (direct or FFT) computes the same maps: a run
  # may resume under the other one. Fields the defense never reads (the LCA
  # settings of a target without sparse layers) do not count.
  fp["defense"] = {k: v for k, v in read_fields(fp["defense"]).items()
                   if k != "conv"}
  fp["train"] = {k: d["train"].get(k) for k in _TRAIN_FIELDS}
  return json.loads(json.dumps(fp, default=str))


def write_json(path: Path, obj: Any) -> None:
  """Atomic write: a crash leaves the old file or the new one, never half."""
  tmp = path.with_suffix(path.suffix + ".tmp")
  tmp.write_text(json.dumps(jsonable(obj), indent=2, default=str) + "\n")
  os.replace(tmp, path)


def check_workdir(config: ml_collections.ConfigDict, workdir: Path) -> None:
  """Refuses a workdir holding another experiment's checkpoints or results.

  Every checkpoint step carries its own fingerprint, so this holds whatever
  else (config.json included) is missing. Reads only; writes nothing.
  """
  fp = fingerprint(config)
  stored_fps = read_fingerprints(workdir / "checkpoints")
  foreign = sorted(step for step, stored in stored_fps.items()
                   if stored is not None and stored != fp)
  if config.train.skip and not stored_fps:
    raise validation.ConfigError(
        f"config.train.skip=True, but {workdir / 'checkpoints'} holds no "
        "checkpoint to evaluate")
  try:
    before = json.loads((workdir / "config.json").read_text())["fingerprint"]
  except (OSError, ValueError, KeyError, TypeError):  # absent or damaged
    before = None
  if foreign or (before not in (None, fp) and (
      (workdir / "results.json").exists() or
      (workdir / "checkpoints").exists())):
    what = (f"checkpoint steps {foreign}" if foreign else "config.json")
    raise validation.ConfigError(
        f"--workdir={workdir} holds another experiment ({what} record "
        "different seed, data, defense or optimisation settings). Use another "
        "--workdir; nothing was changed.")


def sparse_layer_stats(model, x_BHWC: jax.Array, reference_iters: int = 500,
                       iterations: Sequence[int] = ()
                       ) -> dict[str, dict[str, Any]]:
  """Per sparse layer: sparsity, reconstruction error, and how far the
  configured solve is from the optimum of its objective.

  The optimum is approximated by `reference_iters` FISTA iterations on the same
  input and dictionary (FISTA is checked against a dense NumPy solver in the
  tests). A layer far from its optimum is not really sparse coding.
  `iterations`: also the gap after each of these iteration counts of the
  layer's own solver ("gap_by_iterations"), to choose a count.
  """
  _, reps = model(x_BHWC, train=False)
  stats = {}
  for name, layer in model.sparse_layers():
    inp, codes = reps[f"{name}_input"], reps[name]
    cfg, D = layer.cfg, layer.dictionary.get_value()
    ref_cfg = dataclasses.replace(cfg, solver="fista", normalize_input=False,
                                  num_iters=reference_iters, remat=False)
    ref_codes = lca.solve(inp, D, ref_cfg).codes_BHWF

    def mean_objective(a):
      return float(jnp.mean(lca.objective(inp, a, D, cfg.lam, cfg.stride)))

    e, e_ref = mean_objective(codes), mean_objective(ref_codes)
    recon = lca.decode(codes, D, cfg.stride, inp.shape[1:3])
    stats[name] = {
        "active_fraction": float(jnp.mean(codes != 0)),
        "relative_recon_error": float(jnp.linalg.norm(inp - recon)
                                      / jnp.linalg.norm(inp)),
        "objective": e,
        "objective_reference": e_ref,
        "relative_gap_to_optimum": (e - e_ref) / e_ref,
        "reference": f"fista x{reference_iters}",
    }
    if iterations:
      stats[name]["gap_by_iterations"] = {
          int(n): (mean_objective(lca.solve(inp, D, dataclasses.replace(
              cfg, normalize_input=False, num_iters=int(n))).codes_BHWF)
                   - e_ref) / e_ref for n in iterations}
  return stats


def warn_solver_gaps(stats: dict[str, dict[str, Any]], max_gap: float
                     ) -> list[str]:
  """Prints (and returns) a warning per sparse layer further than `max_gap`
  from its optimum: its codes are not the sparse coding the defense claims,
  and the attacks that follow judge a different target."""
  warnings = [
      f"WARNING: {name} is {s['relative_gap_to_optimum']:.2%} from the "
      f"optimum of its objective (solver_gap.max_relative_gap "
      f"{max_gap:.2%}): raise defense.layer_num_iters / defense.num_iters; "
      "scripts/solver_gap.py measures the gap by iteration count"
      for name, s in stats.items() if s["relative_gap_to_optimum"] > max_gap]
  for w in warnings:
    print(w, flush=True)
  return warnings


def restore_target(workdir: str | Path):
  """(config, trained model, splits) of a finished or interrupted run, from
  its config.json and newest intact checkpoint."""
  workdir = Path(workdir)
  try:
    saved = json.loads((workdir / "config.json").read_text())["config"]
  except (OSError, ValueError, KeyError) as e:
    raise validation.ConfigError(
        f"{workdir} holds no readable config.json of a run: {e}") from None
  config = ml_collections.ConfigDict(saved)
  splits = make_splits(config.data, config.seed)
  init_key, _, _ = jax.random.split(jax.random.key(config.seed), 3)
  defense_cfg = with_defaults(config.defense)
  model = build_model(defense_cfg, splits.image_shape, splits.num_classes,
                      init_key)
  defense = DEFENSES.get(defense_cfg.name, field="defense.name")
  trainer = train_lib.Trainer(  # the state's structure, as `run` builds it
      model, defense_cfg, train_lib.make_optimizer(config.train, 1),
      defense.extra_loss(defense_cfg) if defense.extra_loss else None)
  state = Checkpointer(workdir / "checkpoints",
                       fingerprint=fingerprint(config)).restore_latest(
                           trainer.init_state)
  if state is None:
    raise validation.ConfigError(f"{workdir / 'checkpoints'} holds no "
                                 "intact checkpoint")
  return config, trainer.model(state), splits


def run(config: ml_collections.ConfigDict, workdir: str | Path) -> dict:
  """Trains (or restores) the target, runs the attacks, writes results.json."""
  validation.validate(config)
  workdir = Path(workdir)
  check_workdir(config, workdir)
  t_start = time.time()
  try:
    splits = make_splits(config.data, config.seed)
  except (ValueError, FileNotFoundError) as e:  # missing or corrupt files
    raise validation.ConfigError(f"config.data.name={config.data.name!r}: "
                                 f"{e}") from e
  print(f"data {splits.name}: train {len(splits.train_x)}, test "
        f"{len(splits.test_x)}, aux {len(splits.aux_x)}, image "
        f"{splits.image_shape}")
  data_checks = validation.check_data(config, splits)
  # Only now, all checks passed: a failed run leaves the workdir as it was.
  workdir.mkdir(parents=True, exist_ok=True)
  write_json(workdir / "config.json", {"config": config.to_dict(),
                                       "fingerprint": fingerprint(config)})

  root = jax.random.key(config.seed)
  init_key, train_key, attack_key = jax.random.split(root, 3)
  defense = DEFENSES.get(config.defense.name, field="defense.name")
  defense_cfg = with_defaults(config.defense)
  model = build_model(defense_cfg, splits.image_shape, splits.num_classes,
                      init_key)
  extra = defense.extra_loss(defense_cfg) if defense.extra_loss else None
  prepared = TrainingSet(splits.train_x, splits.train_y)
  # e.g. real + GAN-generated images; not needed to evaluate a checkpoint.
  if defense.prepare_data is not None and not config.train.skip:
    prepared = TrainingSet.of(defense.prepare_data(
        defense_cfg, prepared.x, prepared.y,
        jax.random.fold_in(train_key, 1)))
  train_x, train_y = prepared.x, prepared.y
  if prepared.init is not None:  # e.g. a model pre-trained on the real data
    _check_same_shapes(nnx.state(model), prepared.init)
    nnx.update(model, prepared.init)
  trainer = train_lib.Trainer(
      model, defense_cfg,
      train_lib.make_optimizer(config.train, 1 + config.train.epochs * (
          len(train_x) // config.train.batch_size)), extra,
      param_loss=prepared.param_loss,
      gradient_hook=(defense.gradient_hook(defense_cfg)
                     if defense.gradient_hook else None))

  if config.train.skip:
    state = Checkpointer(workdir / "checkpoints",
                         fingerprint=fingerprint(config)).restore_latest(
                             trainer.init_state)
    if state is None:  # every step was unreadable (and was moved aside)
      raise validation.ConfigError(
          f"config.train.skip=True, but {workdir / 'checkpoints'} holds no "
          "checkpoint to evaluate")
    train_info = {"skipped": True, "restored_step": int(state.step)}
  else:
    state, train_info = train_lib.fit(
        trainer, config.train, train_x, train_y, workdir,
        train_key, config.seed, per_sample=prepared.per_sample,
        fingerprint=fingerprint(config))

  bs = int(config.train.eval_batch_size)
  test_acc = trainer.evaluate(state, splits.test_x, splits.test_y, bs)
  n = min(len(splits.train_x), len(splits.test_x))
  train_acc = trainer.evaluate(state, splits.train_x[:n], splits.train_y[:n],
                               bs)
  print(f"test accuracy {test_acc:.4f} (train subset {train_acc:.4f})")
  model = trainer.model(state)
  gap = config.solver_gap
  sparse_layers = sparse_layer_stats(
      model, jnp.asarray(splits.test_x[:int(gap.num_images)]),
      reference_iters=int(gap.reference_iters))
  warn_solver_gaps(sparse_layers, gap.get("max_relative_gap",
                                           results_lib.MAX_SOLVER_GAP))
  report = (defense.report(defense_cfg, len(train_x), config.train)
            if defense.report is not None else {})  # e.g. the DP-SGD epsilon
  attack_results = None
  if config.attacks:
    from sca_jax import attacks  # pylint: disable=g-import-not-at-top
    # Finished attacks of this very target are kept: a rerun resumes.
    target_id = {"fingerprint": fingerprint(config), "step": int(state.step),
                 "conv": config.defense.get("conv", "direct")}
    attack_results = attacks.run_attacks(config, model, splits, workdir,
                                         attack_key, target_id=target_id)
  umap_files = None
  if config.get("umap", False):  # the paper's Figure 6, per threat model
    from sca_jax import umap_plot  # pylint: disable=g-import-not-at-top
    umap_files = umap_plot.write_umaps(config, model, splits, workdir)
  results = results_lib.build(
      config=config, splits=splits, test_accuracy=test_acc,
      train_accuracy=train_acc, data_checks=data_checks, train=train_info,
      sparse_layers=sparse_layers, defense_report=report,
      attacks=attack_results, wall_time_s=time.time() - t_start)
  if umap_files is not None:
    results["umap"] = umap_files
  write_json(workdir / "results.json", results)
  print(f"wrote {workdir / 'results.json'}")
  return results


def _check_same_shapes(state: nnx.State, init: nnx.State) -> None:
  want = jax.tree.map(jnp.shape, nnx.to_pure_dict(state))
  got = jax.tree.map(jnp.shape, nnx.to_pure_dict(init))
  if want != got:
    raise ValueError("the defense's initial variables do not fit the target "
                     f"model: {got} vs {want}")


def jsonable(x: Any) -> Any:
  """numpy/jax scalars and arrays to plain Python for json."""
  if isinstance(x, dict):
    return {k: jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [jsonable(v) for v in x]
  if isinstance(x, (np.ndarray, jax.Array)):
    return np.asarray(x).tolist()
  if isinstance(x, np.generic):
    return x.item()
  return x
