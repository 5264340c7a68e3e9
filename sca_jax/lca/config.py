"""Settings and result of one LCA solve."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax

THRESHOLDS = ("soft_nonneg", "soft", "hard")
SOLVERS = ("lca", "fista")
GRADS = ("unrolled", "remat_chunked", "implicit")
CONVS = ("direct", "fft", "auto")


@dataclasses.dataclass(frozen=True)
class LCAConfig:
  """Settings of one LCA solve (hashable: used as a static jit argument).

  `grad` picks how gradients flow through the solve: "unrolled" is autodiff
  through every iteration (`remat=True` recomputes each step instead of
  storing it); "remat_chunked" checkpoints nested chunks, `remat_levels`
  levels of ~num_iters^(1/levels) steps (two levels: memory ~2 sqrt(T)
  states, one extra forward pass; each further level trades one more forward
  pass for memory), same gradient as "unrolled"; "implicit" differentiates
  the exact minimiser at the fixed point (memory of one solve, backward cost
  at most `cg_iters` decode/encode pairs, stopping at relative residual
  `cg_tol`): it matches the unrolled gradient only once the solve has
  converged, codes and active set, not just the objective (see
  `kkt_residual` and `_solve_implicit_bwd`).
  `conv` picks how decode/encode are computed inside the solve: "direct"
  convolutions, "fft" (stride 1 only: per-frequency products, see
  `spectral`; the same maps to float32 rounding), or "auto" (FFT at stride
  1 where the channel product makes it pay, `spectral.worth_it`).
  `fista_restart` resets FISTA's momentum per sample when it points uphill
  (O'Donoghue & Candes 2015): same fixed point, faster final convergence.
  """

  lam: float = 0.5
  tau: float = 100.0
  num_iters: int = 500
  stride: int = 1
  threshold: str = "soft_nonneg"
  normalize_input: bool = True
  remat: bool = False
  solver: str = "lca"
  fista_restart: bool = False
  grad: str = "unrolled"
  remat_levels: int = 2
  cg_iters: int = 200
  cg_tol: float = 1e-6
  conv: str = "direct"

  def __post_init__(self):
    if not self.lam >= 0:
      raise ValueError(f"lam (sparsity lambda) must be >= 0, got {self.lam}")
    if not self.tau >= 1:
      raise ValueError(f"tau must be >= 1 (step size 1/tau), got {self.tau}")
    if int(self.num_iters) < 1:
      raise ValueError(f"num_iters must be >= 1, got {self.num_iters}")
    if int(self.stride) < 1:
      raise ValueError(f"stride must be >= 1, got {self.stride}")
    if self.solver not in SOLVERS:
      raise ValueError(f"solver must be one of {SOLVERS}, got {self.solver!r}")
    if self.solver == "fista" and self.threshold == "hard":
      raise ValueError("solver 'fista' needs a soft threshold (convex objective)")
    if self.grad not in GRADS:
      raise ValueError(f"grad must be one of {GRADS}, got {self.grad!r}")
    if int(self.remat_levels) < 1:
      raise ValueError(f"remat_levels must be >= 1, got {self.remat_levels}")
    if int(self.cg_iters) < 1 or not self.cg_tol > 0:
      raise ValueError(f"cg_iters must be >= 1 and cg_tol > 0, got "
                       f"{self.cg_iters}, {self.cg_tol}")
    if self.conv not in CONVS:
      raise ValueError(f"conv must be one of {CONVS}, got {self.conv!r}")
    if self.conv == "fft" and int(self.stride) != 1:
      raise ValueError(f"conv 'fft' needs stride 1, got {self.stride}")
    if self.threshold not in THRESHOLDS:
      raise ValueError(
          f"threshold must be one of {THRESHOLDS}, got {self.threshold!r}")


class LCAResult(NamedTuple):
  codes_BHWF: jax.Array           # thresholded state after the last iteration
  potentials_BHWF: jax.Array      # membrane potentials u after the last iteration
  input_BHWC: jax.Array           # the (optionally normalised) input that was coded
  trace: dict[str, jax.Array] | None  # per-iteration (T, B) objective/recon/active
