"""cache: one root for every cache, from $SCA_JAX_CACHE_DIR."""

from pathlib import Path

from sca_jax import cache, evaluation, generator
from sca_jax.data import remote


def test_every_cache_lives_under_the_one_root(monkeypatch, tmp_path):
  monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path))
  assert cache.cache_dir("a", "b") == tmp_path / "a" / "b"
  assert evaluation.cache_root() == tmp_path / "eval_classifiers"
  assert generator.cache_dir("g") == tmp_path / "generators" / "g"
  assert remote.cache_dir() == tmp_path
  monkeypatch.delenv(cache.CACHE_ENV)
  assert cache.cache_dir() == Path.home() / ".cache" / "sca_jax"
