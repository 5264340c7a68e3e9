"""First-layer threat model: the stricter variant of the split network.

The attacker intercepts the raw output of the target's FIRST feature layer
(the first sparse coding layer of SCA, the first conv + ReLU of No-Defense):
the worst case for the defender, since early layers keep the most detail of
the input, and stricter than the paper's split leak (after the feature
layers, `split.py`). Reported separately (docs/threat_models.md). The attack
is the shared inversion trainer of `inversion.py` with the leak `first`.
"""

from sca_jax.attacks import inversion

SPEC = inversion.register_inversion_attack(
    "first_layer",
    "inversion network trained on the first feature layer's leaked outputs",
    leak="first",
)
