"""Convolutional Locally Competitive Algorithm (Rozell et al. 2008), compiled.

Pure functions over (input, dictionary, settings); no Flax. The solver minimises

    E(a) = 0.5 * ||x - D * a||^2 + lam * ||a||_1            (paper, Eq. 1)

where `D * a` is the transposed convolution of the codes `a_BHWF` with the
dictionary `D_KKCF` (the decoder) and its adjoint, the strided "same"
convolution, is the encoder. The membrane potentials follow

    u <- u + (1/tau) * (b - u - (encode(decode(a)) - a)),   a = T_lam(u),

with drive `b = encode(x)`. `encode(decode(a)) - a` is the lateral competition
`(D^T D - I) a`, computed through one conv_transpose and one conv: the
competition kernel G = D^T D - I is never materialised (for 64 features it
would be a 9x9x64x64 kernel, 20x slower on CPU). By linearity the drive and
competition combine into `encode(x - decode(a))`, the encoded reconstruction
residual, which is what the loop computes: one decode and one encode per
iteration, and the residual gives the reconstruction error for the trace.
At stride 1 with a single input channel the decode is one matmul over
features plus K*K shifted adds, and a few-feature encode an im2col matmul:
faster than XLA's CPU convolutions there (see `ops`).

The iterations run as a `jax.lax.scan`, so the solve is differentiable end to
end (input and dictionary); `remat=True` recomputes each step's intermediates
in the backward pass instead of storing them, `grad="remat_chunked"`
checkpoints nested chunks (two levels: ~sqrt(T) steps each), and
`grad="implicit"` differentiates the fixed point instead of the iterations
(see `gradients.implicit_vjp`).

Modules: `config` (settings, result), `ops` (encode/decode and their
gradients, thresholds, objective), `dynamics` (the solve), `fista`,
`gradients` (remat schedules, implicit gradient), `dictionary`.
"""

from sca_jax.lca.config import (CONVS, GRADS, SOLVERS, THRESHOLDS, LCAConfig,
                                LCAResult)
from sca_jax.lca.dictionary import (hebbian_update, init_dictionary,
                                    normalize_dictionary)
from sca_jax.lca.dynamics import solve
from sca_jax.lca.fista import lipschitz
from sca_jax.lca.ops import (decode, encode, kkt_residual, normalize_input,
                             objective, same_padding, threshold)

__all__ = ["CONVS", "GRADS", "SOLVERS", "THRESHOLDS", "LCAConfig", "LCAResult",
           "decode", "encode", "hebbian_update", "init_dictionary",
           "kkt_residual", "lipschitz", "normalize_dictionary",
           "normalize_input", "objective", "same_padding", "solve",
           "threshold"]
