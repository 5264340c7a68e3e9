"""Split-network threat model (paper, Sec. 3-4, threat model 3; Titcombe et al.).

In split (federated) learning the first part of the network runs at the data
owner and its output crosses the wire. As the paper defines it, the attacker
sees "raw intermediate outputs from the first linear network layer", i.e.
after the feature layers (the sparse-coding / batch-norm pairs of SCA): the
leak `first_linear` (`hidden0`, after its ReLU, as the authors' `first_part`
ends in its activation). The stricter case, the first feature layer's output,
is its own attack (`first_layer.py`). The attack is the shared inversion
trainer of `inversion.py` with that leak by default.
"""

from sca_jax.attacks import inversion

SPEC = inversion.register_inversion_attack(
    "split",
    "inversion network trained on the first linear layer's leaked outputs",
    leak="first_linear",
)
