"""Every defense on 32x32 RGB data (the authors' CIFAR-10/CelebA shape) and
every attack's leak on it; one tiny CIFAR-10 run end to end."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sca_jax import attacks, config_lib, experiment
from sca_jax.attacks import code_decoding, contract
from sca_jax.attacks.inversion_nets import build_inversion_net
from sca_jax.defenses import DEFENSES
from sca_jax.models import build_model

from conftest import shared_data_dir

RGB = (32, 32, 3)


def _small(defense: str):
  c = config_lib.make_config(defense, "cifar10")
  c.defense.conv_features = (8, 8, 16)
  c.defense.features, c.defense.hidden = (4, 6), (16,)
  c.defense.num_iters = 3
  return c


def test_cifar10_config_is_the_authors_shape():
  c = config_lib.make_config("sca", "cifar10")
  assert (c.defense.arch, c.defense.features, c.defense.hidden) == (
      "cifar", (16, 32), (512,))
  model = build_model(c.defense, RGB, 10, jax.random.key(0))
  kinds = [k for k in model.kinds if k not in ("relu", "dropout")]
  assert kinds == ["lca", "bn", "lca", "pool", "bn"] + [
      "conv", "pool", "bn"] * 3
  # Linear(1024, 512) -> Linear(512, 10), as the authors' code.
  assert model.hidden_layers[0].in_features == 1024
  assert model.head.in_features == 512
  assert config_lib.make_config("sca", "mnist").defense.arch == "mnist"


@pytest.mark.parametrize("defense", DEFENSES.names())
def test_every_defense_and_leak_on_rgb(defense):
  c = _small(defense)
  model = build_model(c.defense, RGB, 10, jax.random.key(0))
  x = jax.random.uniform(jax.random.key(1), (2, *RGB))
  logits, reps = model(x, train=False, key=jax.random.key(2))
  assert logits.shape == (2, 10) and bool(jnp.all(jnp.isfinite(logits)))
  cfgs = attacks.validate(c)
  assert cfgs, "no attacks configured"
  for name, cfg in cfgs.items():
    if "leak" not in cfg:  # Plug-&-Play queries the logits
      continue
    attacks.check_leak(name, cfg.leak, model)
    state, leak_fn = contract.make_leak_fn(model, cfg.leak)
    rep = leak_fn(state, x, jax.random.key(3))
    assert rep.shape[0] == 2
    if "net" in cfg:  # learned inversions: sized from the leak and image
      net = build_inversion_net(cfg.net, rep.shape[1:], RGB,
                                dict(cfg.net_args), nnx.Rngs(0))
      assert net(rep).shape == (2, *RGB)
    if name == "code_decoding":
      decode = code_decoding.make_decoder(model, cfg.leak, np.asarray(x))
      assert decode(rep).shape == (2, *RGB)


def test_tiny_cifar10_end_to_end(tmp_path):
  if not (shared_data_dir() / "cifar10").is_dir():
    pytest.skip(f"no cifar10 files under {shared_data_dir()}")
  c = _small("sca")
  c.data.data_dir = str(shared_data_dir())
  c.data.max_train, c.data.max_test, c.data.max_aux = 128, 64, 128
  c.train.epochs, c.train.batch_size = 1, 32
  c.train.checkpoint_every, c.train.log_every = 4, 2
  c.attacks = ("end_to_end",)
  c.attack.end_to_end.epochs = 1
  c.attack.end_to_end.num_images = 32
  c.eval_classifier.epochs = 1
  c.solver_gap.reference_iters, c.solver_gap.num_images = 50, 32
  results = experiment.run(c, tmp_path / "w")
  e2e = results["attacks"]["end_to_end"]
  assert results["dataset"] == "cifar10" and results["num_train"] == 128
  assert np.isfinite(e2e["psnr"]["mean"]) and e2e["num_images"] == 32
  assert Path(e2e["grid"]["path"]).is_file()
