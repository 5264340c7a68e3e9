"""Target models: architectures, named representations, errors."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from sca_jax.lca import spectral
from sca_jax.models import Dictionary, build_model
from conftest import tiny_config


def _model(name, **kw):
  cfg = tiny_config(name).defense
  cfg.update(kw)
  return build_model(cfg, (28, 28, 1), 10, jax.random.key(0))


@pytest.mark.parametrize("name,n_dicts,kinds", [
    ("sca", 2, ("lca", "bn", "lca", "bn")),
    ("sparse_standard", 1, ("lca", "conv")),
    ("no_defense", 0, ("conv", "bn", "conv", "bn")),
])
def test_architectures_and_named_representations(name, n_dicts, kinds):
  model = _model(name)
  assert model.kinds == kinds
  assert len(jax.tree.leaves(nnx.state(model, Dictionary))) == n_dicts
  x = jax.random.uniform(jax.random.key(1), (3, 28, 28, 1))
  logits, reps = model(x, train=False)
  assert logits.shape == (3, 10)
  for rep_name in model.representation_names():
    assert rep_name in reps
  np.testing.assert_array_equal(reps["first"], reps[model.names[0]])
  assert reps["last_hidden"].shape == (3, 32)
  # Strides (2, 2): 28 -> 14 -> 7.
  assert reps[model.names[-1]].shape[1:3] == (7, 7)


def test_sca_codes_are_sparse_nonnegative_and_batch_norm_follows():
  model = _model("sca", lam=0.5)
  x = jax.random.uniform(jax.random.key(2), (4, 28, 28, 1))
  _, reps = model(x, train=False)
  codes = reps["layer0_lca"]
  assert (codes >= 0).all() and 0 < float(jnp.mean(codes > 0)) < 0.5
  # The dictionaries are unit-norm atoms.
  for _, layer in model.sparse_layers():
    np.testing.assert_allclose(
        jnp.sum(layer.dictionary.get_value()**2, axis=(0, 1, 2)), 1.0,
        rtol=1e-5)


def test_bad_model_settings_fail_clearly():
  with pytest.raises(ValueError, match="defense.model"):
    _model("sca", model="resnet")
  with pytest.raises(ValueError, match="lam"):
    _model("sca", lam=-1.0)
  with pytest.raises(ValueError, match="threshold"):
    _model("sca", threshold="median")


def test_fft_convolutions_give_the_same_model_outputs(monkeypatch):
  # Which dictionaries went through the FFT: "auto" must route the 4->16
  # layer there (channels x features = 64) and keep the one-channel layer
  # direct, else this would compare the direct path with itself.
  built = []
  build = spectral.SpectralDictionary.build.__func__

  def counting_build(cls, D_KKCF, hw):
    built.append(tuple(D_KKCF.shape))
    return build(cls, D_KKCF, hw)

  monkeypatch.setattr(spectral.SpectralDictionary, "build",
                      classmethod(counting_build))
  x = jax.random.uniform(jax.random.key(3), (2, 28, 28, 1))
  logits = {}
  for conv in ("direct", "auto"):
    built.clear()
    model = _model("sca", strides=(1, 1), features=(4, 16), conv=conv)
    assert all(l.cfg.conv == conv for _, l in model.sparse_layers())
    logits[conv] = model(x, train=False)[0]
    assert {s[2:] for s in built} == ({(4, 16)} if conv == "auto" else set())
  np.testing.assert_allclose(logits["auto"], logits["direct"], rtol=1e-4,
                             atol=1e-4)
