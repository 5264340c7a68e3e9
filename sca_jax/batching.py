"""Shuffled mini-batches: the one epoch/permutation helper of every training
loop (target, inversion nets, evaluation classifier, GANs, victims).

Each epoch draws one `rng.permutation(n)` and cuts it into `n // batch_size`
full batches (a last partial batch is dropped), so the batch order of a loop
depends only on its generator's state.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np


def epoch_batches(rng: np.random.Generator, n: int, batch_size: int
                  ) -> Iterator[np.ndarray]:
  """Index arrays of one epoch's full batches, in a fresh random order."""
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  perm = rng.permutation(n)
  for i in range(n // batch_size):
    yield perm[i * batch_size:(i + 1) * batch_size]


def step_batches(n: int, batch_size: int, seed: int, start: int,
                 num_steps: int) -> Iterator[tuple[int, int, np.ndarray]]:
  """(step, epoch, indices) for steps `start` .. `num_steps - 1`.

  Epoch e's order comes from `default_rng([seed, e])` alone, so a run resumed
  at any step sees the same batches as one that never stopped.
  """
  steps_per_epoch = n // batch_size
  batches: Iterator[np.ndarray] = iter(())
  for step in range(start, num_steps):
    epoch, i = divmod(step, steps_per_epoch)
    if step == start or i == 0:
      batches = epoch_batches(np.random.default_rng([seed, epoch]), n,
                              batch_size)
      for _ in range(i):  # resumed mid-epoch: skip the batches already seen
        next(batches)
    yield step, epoch, next(batches)
