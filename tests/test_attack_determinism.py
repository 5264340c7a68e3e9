"""Bit-identical attacks: the same trained target, config and seed give
exactly the same metrics, also when the second run loads the cached judge."""

import dataclasses
import json
import math
from pathlib import Path

import jax
import ml_collections

from sca_jax import attacks
from sca_jax import data
from sca_jax import evaluation
from sca_jax import train
from sca_jax.models import build_model
from conftest import tiny_config

# Run-dependent bookkeeping; everything else must match bit for bit.
_VOLATILE = ("time_s", "cached")


def _differences(a, b, path=""):
  """Paths where two JSON-like results differ (NaN equals NaN)."""
  if isinstance(a, dict) and isinstance(b, dict):
    if set(a) != set(b):
      return [f"{path}: keys {sorted(set(a) ^ set(b))}"]
    return [d for k in a if not any(v in k for v in _VOLATILE)
            for d in _differences(a[k], b[k], f"{path}.{k}")]
  if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
    if len(a) != len(b):
      return [f"{path}: lengths {len(a)} != {len(b)}"]
    return [d for i, (x, y) in enumerate(zip(a, b))
            for d in _differences(x, y, f"{path}[{i}]")]
  if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
    return [] if math.isnan(b) else [f"{path}: nan != {b!r}"]
  return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def _two_small_attacks(config, epochs, hidden, num_images):
  config.attacks = ("end_to_end", "split")
  small = dict(epochs=epochs, batch_size=32, net="mlp",
               net_args=dict(hidden=(hidden,)), num_images=num_images,
               grid_per_group=2)
  config.attack = ml_collections.ConfigDict(
      {name: small for name in config.attacks})
  config.eval_classifier.update(epochs=1)


def test_same_target_config_and_seed_give_identical_metrics(
    data_dir, tmp_path, monkeypatch):
  monkeypatch.setenv(evaluation.CACHE_ENV, str(tmp_path / "cache"))
  config = tiny_config("sca", data_dir)
  splits = data.make_splits(config.data, config.seed)
  model = build_model(config.defense, splits.image_shape, splits.num_classes,
                      jax.random.key(0))
  trainer = train.Trainer(model, config.defense,
                          train.make_optimizer(config.train, 8))
  state, _ = train.fit(trainer, config.train, splits.train_x, splits.train_y,
                       tmp_path / "target", jax.random.key(1), config.seed,
                       log=lambda _: None)
  target = trainer.model(state)

  _two_small_attacks(config, epochs=2, hidden=64, num_images=64)
  first, second = (attacks.run_attacks(config, target, splits,
                                       tmp_path / f"run{i}", jax.random.key(7))
                   for i in range(2))
  for r in first.values():  # the comparison below is not vacuous
    assert r["psnr"]["n"] == 64 and r["reidentification"]["chance"] == 1 / 64
    assert len(r["history"]) == 2
  # The second run loaded the judge trained (and saved) by the first.
  assert not first["split"]["eval_classifier"]["cached"]
  assert second["split"]["eval_classifier"]["cached"]
  for r in (*first.values(), *second.values()):
    r["grid"]["path"] = Path(r["grid"]["path"]).name
  assert _differences(first, second) == []
  # The comparison sees a difference where there is one.
  assert _differences(first, dict(first, split=first["end_to_end"]))


def test_a_rerun_takes_finished_attacks_from_their_files(
    data_dir, tmp_path, monkeypatch):
  # What an interrupted cell relies on: attacks finished before the kill
  # are not run again, and give the numbers a full run gives.
  monkeypatch.setenv(evaluation.CACHE_ENV, str(tmp_path / "cache"))
  config = tiny_config("no_defense", data_dir)
  splits = data.make_splits(config.data, config.seed)
  target = build_model(config.defense, splits.image_shape,
                       splits.num_classes, jax.random.key(0))
  _two_small_attacks(config, epochs=1, hidden=16, num_images=32)
  workdir, target_id = tmp_path / "cell", {"fingerprint": "t", "step": 3}

  def run(**kw):
    return attacks.run_attacks(config, target, splits, workdir,
                               jax.random.key(7), **kw)

  first = run(target_id=target_id)
  assert (workdir / "attacks" / "split.json").exists()
  calls = []
  for name in config.attacks:
    monkeypatch.setitem(  # pylint: disable=protected-access
        attacks.ATTACKS._items, name, dataclasses.replace(
            attacks.ATTACKS.get(name),
            run=lambda *a, name=name: calls.append(name) or {}))
  again = run(target_id=target_id)
  assert calls == []  # nothing attacked twice
  assert _differences(json.loads(json.dumps(first, default=float)),
                      again) == []
  # Another target (or no identity at all) attacks again.
  run(target_id=dict(target_id, step=4))
  assert calls == ["end_to_end", "split"]
  run()
  assert calls == ["end_to_end", "split"] * 2
  # What an attack reads besides its config (Plug-&-Play: the generator's
  # weights) is part of the identity: changed inputs attack again.
  calls.clear()
  inputs = ["generator A"]
  monkeypatch.setitem(  # pylint: disable=protected-access
      attacks.ATTACKS._items, "split", dataclasses.replace(
          attacks.ATTACKS.get("split"), inputs_id=lambda cfg: inputs[0]))
  latest = dict(target_id, step=4)  # end_to_end is kept from that run
  run(target_id=latest)
  run(target_id=latest)
  assert calls == ["split"]
  inputs[0] = "generator B"
  run(target_id=latest)
  assert calls == ["split", "split"]
