"""Model inversion attacks, chosen by name in `config.attacks`.

Config (every section and field optional except `attacks`):

  config.attacks = ("end_to_end", "split", "first_layer")  # ATTACKS names
  config.attack.<name>.<field>                # per-attack overrides of
      # contract.COMMON_DEFAULTS (grid_per_group 4, eval_batch_size 256) and
      # the attack's own defaults (`AttackSpec.defaults`); attacks that query
      # the target add contract.LEAK_DEFAULTS:
      #   leak         "last_hidden" (end_to_end) / "first_linear" (split) /
      #                "first" (first_layer); any name of
      #                model.representation_names() (docs/threat_models.md)
      #   num_images 512, represent_batch_size 256, queries 1
      # and the learned inversions (inversion.INVERSION_DEFAULTS):
      #   net          "deconv" | "mlp"        net_args  {} (net keywords:
      #                mlp: hidden=(1024,); deconv: channels=64,
      #                min_channels=16, kernel=4)
      #   epochs 20, batch_size 64, learning_rate 1e-3 (Adam), loss "mse" |
      #   "bce", val_fraction 0.1, log_every 1
      # The paper's protocol: `AttackSpec.paper_overrides` (learned
      # inversions: epochs 50, batch_size 16).
  config.eval_classifier.<field>              # evaluation.DEFAULTS: epochs 3,
      # batch_size 32, learning_rate 2e-3, max_train 10000,
      # holdout_fraction 0.2, seed 0, cache True, eval_batch_size 500

Every module of this package is imported here (each registers itself); an
attack outside the package registers the same way (`contract.ATTACKS`) and is
named in `config.imports`.

`validate(config)` checks all of it without a model or data; `run_attacks`
also checks each leak name against the model before any compute, trains the
evaluation classifier once, runs the attacks (printing "attack k of n", the
time elapsed and an ETA before each), and returns their results keyed
by attack name (pictures go to `<workdir>/attacks/<name>.png`).
"""

from __future__ import annotations

import json
import time
import zlib
from pathlib import Path
from typing import Any

import jax
import ml_collections

from sca_jax import evaluation
from sca_jax.attacks.applicability import applicable_adaptive_attacks
from sca_jax.attacks.contract import ATTACKS
from sca_jax.attacks.contract import COMMON_DEFAULTS
from sca_jax.attacks.contract import attack_config
from sca_jax.attacks.contract import check_leak
from sca_jax.attacks.inversion_nets import INVERSION_NETS
from sca_jax.registry import import_members
from sca_jax.train import format_eta

MODULES = import_members(__name__, __path__)  # each attack registers itself


def _names(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  names = config.get("attacks", None) or ()
  if isinstance(names, str) or not all(isinstance(n, str) for n in names):
    raise ValueError("config.attacks must be a tuple of attack names, e.g. "
                     f"('end_to_end',); allowed: {ATTACKS.names()}; got "
                     f"{names!r}")
  if len(set(names)) != len(names):
    raise ValueError(f"config.attacks names an attack twice: {names!r}")
  for name in names:
    ATTACKS.get(name, field="attacks")
  return tuple(names)


def _attack_section(config: ml_collections.ConfigDict) -> dict[str, Any]:
  section = config.get("attack", None) or {}
  for name in section.keys():
    if name not in ATTACKS:
      raise ValueError(f"config.attack.{name}: unknown attack {name!r}; "
                       f"allowed: {ATTACKS.names()}")
  return dict(section)


def validate(config: ml_collections.ConfigDict
             ) -> dict[str, ml_collections.ConfigDict]:
  """Checks attack names and settings; returns each selected attack's config.

  Raises:
    ValueError: naming the config field, for an unknown attack, net, field,
      or an out-of-range value. Leak names need the model: `run_attacks`.
  """
  names = _names(config)
  section = _attack_section(config)
  cfgs = {name: attack_config(name, section.get(name)) for name in section}
  evaluation.check_config(evaluation.with_defaults(
      evaluation.DEFAULTS, config.get("eval_classifier", None),
      "eval_classifier"))
  return {name: cfgs.get(name) or attack_config(name) for name in names}


def default_config(paper: bool = False) -> ml_collections.ConfigDict:
  """Every attack, every field spelled out (`paper`: each attack's
  `paper_overrides`, e.g. 50 epochs at batch 16 for the learned inversions)."""
  c = ml_collections.ConfigDict()
  c.attacks = tuple(ATTACKS.names())
  c.attack = ml_collections.ConfigDict()
  for name in ATTACKS.names():
    c.attack[name] = attack_config(
        name, dict(ATTACKS.get(name).paper_overrides) if paper else None)
  c.eval_classifier = ml_collections.ConfigDict(evaluation.DEFAULTS)
  return c


def run_attacks(config: ml_collections.ConfigDict, model, splits,
                workdir: str | Path, key: jax.Array,
                target_id: Any = None) -> dict[str, dict]:
  """Runs every attack of `config.attacks` against the frozen `model`.

  Args:
    config: the experiment config (`attacks`, `attack`, `eval_classifier`).
    model: the trained target (`LayerStack`); only read, never updated.
    splits: `sca_jax.data.Splits`: attacks train on `aux_*`, reconstruct
      `train_*`; the evaluation classifier trains on part of `test_*`,
      never on the reconstructed images.
    workdir: pictures are written to `<workdir>/attacks/<name>.png`.
    key: randomness; each attack gets a key folded from its name, so adding
      or removing an attack does not change the others.
    target_id: JSON-able identity of the trained target (e.g. its
      fingerprint and step). Given, each finished attack's results are kept
      in `<workdir>/attacks/<name>.json` with that identity, the attack's
      config and the judge's, and a rerun (an interrupted cell) takes them
      from there instead of attacking again: same target, config and key
      give the same numbers (tests/test_attack_determinism.py).

  Returns:
    {attack name: results dict (see `inversion.run_inversion_attack`)}.
  """
  cfgs = validate(config)
  for name, cfg in cfgs.items():
    if "leak" in cfg:
      check_leak(name, cfg.leak, model)
    check_model = ATTACKS.get(name).check_model
    if check_model is not None:
      check_model(cfg, model, f"attack.{name}")
  if not cfgs:
    return {}
  evaluator = evaluation.get_eval_classifier(
      splits, config.get("eval_classifier", None))
  results = {}
  t0 = time.time()
  for k, (name, cfg) in enumerate(cfgs.items(), 1):
    print(_progress(k, len(cfgs), name, time.time() - t0), flush=True)
    judge = config.get("eval_classifier", None)
    inputs_id = ATTACKS.get(name).inputs_id
    stamp = None if target_id is None else _json({
        "target": target_id, "attack": name, "config": cfg.to_dict(),
        "eval_classifier": judge.to_dict() if judge is not None else None,
        **({"inputs": inputs_id(cfg)} if inputs_id is not None else {})})
    kept = _kept_results(Path(workdir), name, stamp)
    if kept is not None:
      print(f"  {name}: finished earlier, results from attacks/{name}.json",
            flush=True)
      results[name] = kept
      continue
    attack_key = jax.random.fold_in(key, zlib.crc32(name.encode()) & 0x7FFFFFFF)
    results[name] = ATTACKS.get(name).run(cfg, model, splits, evaluator,
                                          workdir, attack_key)
    if stamp is not None:
      _keep_results(Path(workdir), name, stamp, results[name])
  print(f"attacks done: {len(cfgs)} in {format_eta(time.time() - t0)}",
        flush=True)
  return results


def _json(x: Any) -> Any:
  """Plain JSON types (tuples as lists, numpy scalars as numbers)."""
  from sca_jax.experiment import jsonable  # pylint: disable=g-import-not-at-top
  return json.loads(json.dumps(jsonable(x), default=str))


def _kept_results(workdir: Path, name: str, stamp: Any) -> dict | None:
  """An earlier run's results of this attack on this target, if any; an
  unreadable or foreign file is ignored (and overwritten once re-run)."""
  if stamp is None:
    return None
  try:
    kept = json.loads((workdir / "attacks" / f"{name}.json").read_text())
  except (OSError, ValueError):
    return None
  return kept["results"] if kept.get("stamp") == stamp else None


def _keep_results(workdir: Path, name: str, stamp: Any, results: dict) -> None:
  from sca_jax.experiment import write_json  # pylint: disable=g-import-not-at-top
  (workdir / "attacks").mkdir(parents=True, exist_ok=True)
  write_json(workdir / "attacks" / f"{name}.json",  # atomic
             {"stamp": stamp, "results": results})


def _progress(k: int, n: int, name: str, elapsed_s: float) -> str:
  """`attack k of n: name | elapsed | ETA`; the ETA of the attacks left (this
  one included) is the finished ones' mean time each: a rough guide, as
  attacks differ in cost."""
  line = f"attack {k} of {n}: {name} | elapsed {format_eta(elapsed_s)}"
  if k > 1:
    line += f" | ETA {format_eta(elapsed_s / (k - 1) * (n - k + 1))}"
  return line


__all__ = ["ATTACKS", "COMMON_DEFAULTS", "INVERSION_NETS", "MODULES",
           "applicable_adaptive_attacks", "attack_config", "check_leak",
           "default_config", "run_attacks", "validate"]
