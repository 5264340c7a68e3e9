"""Split-network threat model (paper, Sec. 2, threat model 3; Titcombe et al.).

In split (federated) learning the first part of the network runs at the data
owner and its output crosses the wire; the attacker intercepts the raw output
of the target's FIRST layer, the worst case since early layers keep the most
detail of the input. The attack is the shared inversion trainer of
`inversion.py` with that leak by default.
"""

from sca_jax.attacks import inversion

SPEC = inversion.register_inversion_attack(
    "split",
    "inversion network trained on the first layer's leaked outputs",
    leak="first",
)
