"""Noise defenses: Laplace at the split (Titcombe et al. [64]) and Gaussian
noise on dense layers after training (common industry defense).

Both are model properties (`sca_jax.models`): `laplace_noise` adds
Laplace(0, b=`laplace_scale`, 0.5) to the output of the first (conv, bn) pair,
which is what crosses the split, in training and at inference, and `first`
leaks the noised output. `gaussian_noise` adds N(0, `noise_std`=0.5) to every
hidden linear layer's (post-ReLU) output, freshly per forward pass, only with
train=False (post-training). The authors' code added the Laplace noise in
training only and made "Gaussian" noise `x + 0.5 x` (PAPER_PROTOCOL.md); these
follow the paper's text instead. Deviation: the Gaussian noise is on the linear
layers only, not on the conv/batch-norm layers, so it does not reach `first`
(the split attack sees a clean first layer, as the paper's description
implies: "intermediate dense layers").
"""

from sca_jax.defenses import DEFENSES, NOISE_ADAPTIVE, Defense

DEFENSES.register("laplace_noise")(Defense(
    "laplace_noise", description="Laplace(0, 0.5) noise on the split [64]",
    defaults=lambda paper: {"laplace_scale": 0.5},  # b of Laplace(0, b)
    adaptive_attacks=NOISE_ADAPTIVE))
DEFENSES.register("gaussian_noise")(Defense(
    "gaussian_noise",
    description="N(0, 0.5) noise on dense layers post-training (industry)",
    defaults=lambda paper: {"noise_std": 0.5},  # sigma, at inference only
    adaptive_attacks=NOISE_ADAPTIVE))
