"""batching: the shared epoch/permutation helper keeps the historical order."""

import numpy as np
import pytest

from sca_jax import batching


def test_epoch_batches_cut_one_permutation_dropping_the_last_partial():
  got = list(batching.epoch_batches(np.random.default_rng(3), 10, 4))
  perm = np.random.default_rng(3).permutation(10)
  assert len(got) == 2
  np.testing.assert_array_equal(np.concatenate(got), perm[:8])


def test_resumed_steps_see_the_batches_of_an_uninterrupted_run():
  full = list(batching.step_batches(10, 3, seed=7, start=0, num_steps=9))
  resumed = list(batching.step_batches(10, 3, seed=7, start=4, num_steps=9))
  assert [s for s, _, _ in full] == list(range(9))
  for (s, e, idx), (s2, e2, idx2) in zip(full[4:], resumed):
    assert (s, e) == (s2, e2)
    np.testing.assert_array_equal(idx, idx2)
  # Epoch e's order is default_rng([seed, e]).permutation(n).
  np.testing.assert_array_equal(
      full[3][2], np.random.default_rng([7, 1]).permutation(10)[:3])


def test_bad_batch_size_is_refused():
  with pytest.raises(ValueError, match="batch_size"):
    next(batching.epoch_batches(np.random.default_rng(0), 4, 0))
