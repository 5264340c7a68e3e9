"""Which adaptive attacks apply to a target: sparse codes to decode, a
differentiable model to feature-invert, and inference-time randomness to
average away.

Query averaging itself is `contract.query` (field `queries` of every attack
that queries the target): a defense that adds fresh noise at inference is
queried k times per input and the outputs averaged, so zero-mean noise
shrinks by sqrt(k). `is_stochastic` detects such a defense.
"""

from __future__ import annotations

import jax
import numpy as np
from flax import nnx

from sca_jax.attacks import code_decoding
from sca_jax.attacks import contract


def is_stochastic(model: nnx.Module, image_shape: tuple[int, int, int]
                  ) -> bool:
  """Whether two queries of the same input with different keys differ in
  any representation the model emits (one compile for all of them)."""
  x = jax.random.uniform(jax.random.key(0), (2, *image_shape))
  state, leak_fn = contract.make_leak_fn(model, None)
  emit = jax.jit(lambda k: leak_fn(state, x, k))
  a, b = emit(jax.random.key(1)), emit(jax.random.key(2))
  return any(not np.array_equal(a[n], b[n]) for n in a)


def applicable_adaptive_attacks(model: nnx.Module,
                                image_shape: tuple[int, int, int]
                                ) -> tuple[str, ...]:
  """Adaptive attacks worth running against `model`.

  "code_decoding" when some leak is a sparse code, "feature_inversion" always
  (any differentiable target), and "queries" when the target is stochastic at
  inference: then every attack should also run with `queries` > 1.
  """
  names = []
  if code_decoding.decodable_leaks(model):
    names.append("code_decoding")
  names.append("feature_inversion")
  if is_stochastic(model, image_shape):
    names.append("queries")
  return tuple(names)
