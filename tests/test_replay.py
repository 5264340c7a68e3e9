"""The authors' loop replayed: the target copy moves, the attacker does not."""

import jax
import ml_collections
import numpy as np
import pytest
from flax import nnx

from sca_jax import attacks
from sca_jax import evaluation
from sca_jax.attacks import inversion_nets
from sca_jax.attacks import replay
from sca_jax.models import Dictionary, build_model

SCA = dict(name="sca", features=(4, 6), kernel=5, strides=(2, 2),
           hidden=(16, 8), lam=0.5, tau=10.0, num_iters=5, solver="fista")


@pytest.fixture(scope="module")
def mnist(mnist_splits):
  return mnist_splits(200, 200, 96)


def _leaves(state):
  return [np.array(v) for v in jax.tree.leaves(state)]


def _same(a, b):
  return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


def test_loop_tunes_a_target_copy_and_never_the_inversion_net(mnist):
  model = build_model(ml_collections.ConfigDict(SCA), mnist.image_shape,
                      mnist.num_classes, jax.random.key(0))
  cfg = attacks.attack_config("split_replay", dict(epochs=2, batch_size=16))
  assert (cfg.leak, cfg.momentum, cfg.weight_decay) == ("first_linear", 0.9,
                                                        1e-3)
  net = inversion_nets.build_inversion_net(
      "deconv", (16,), mnist.image_shape, dict(channels=8, min_channels=8),
      nnx.Rngs(1))
  target_before = _leaves(nnx.state(model))
  net_params_before = _leaves(nnx.state(net, nnx.Param))
  net_stats_before = _leaves(nnx.state(net, nnx.BatchStat))

  tuned, net_after, info = replay.replay_authors_loop(
      model, net, mnist.aux_x, cfg, jax.random.key(2))

  assert _same(_leaves(nnx.state(model)), target_before)  # original intact
  assert _same(_leaves(nnx.state(net_after, nnx.Param)), net_params_before)
  # Training-mode batch norm did run (statistics moved), gradients did not.
  assert not _same(_leaves(nnx.state(net_after, nnx.BatchStat)),
                   net_stats_before)
  tuned_params = _leaves(nnx.state(tuned, replay.TARGET_PARAMS))
  before_params = _leaves(nnx.state(model, replay.TARGET_PARAMS))
  assert not _same(tuned_params, before_params)
  assert info["target_relative_change"] > 0
  # As in the authors' optimiser, dictionaries are not among its parameters.
  assert _same(_leaves(nnx.state(tuned, Dictionary)),
               _leaves(nnx.state(model, Dictionary)))
  assert len(info["history"]) == 2


@pytest.mark.parametrize("net,net_args", [("mlp", dict(hidden=(32,))),
                                          ("deconv", dict(channels=8))])
def test_replay_attack_reports_untrained_net_and_target_drift(
    mnist, tmp_path, monkeypatch, net, net_args):
  monkeypatch.setenv(evaluation.CACHE_ENV, str(tmp_path / "cache"))
  model = build_model(ml_collections.ConfigDict(dict(SCA, name="no_defense")),
                      mnist.image_shape, mnist.num_classes, jax.random.key(0))
  c = ml_collections.ConfigDict()
  c.attacks = ("end_to_end_replay",)
  c.attack = dict(end_to_end_replay=dict(
      epochs=1, batch_size=16, net=net, net_args=net_args,
      num_images=32, grid_per_group=0))
  c.eval_classifier = dict(epochs=1)
  r = attacks.run_attacks(c, model, mnist, tmp_path, jax.random.key(0))[
      "end_to_end_replay"]
  assert r["inversion_net"]["trained"] is False
  assert r["leak"] == dict(name="last_hidden", shape=[8])
  assert set(r["target_test_accuracy"]) == {"before", "after"}
  assert r["reidentification"]["chance"] == 1 / 32
  assert set(r["floors"]) == {"mean_image", "class_mean_image",
                              "retrieval_oracle"}
  with pytest.raises(ValueError, match=r"attack\.split_replay\.momentum"):
    attacks.attack_config("split_replay", dict(momentum=1.5))
