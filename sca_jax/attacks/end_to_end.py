"""End-to-end threat model (paper, Sec. 2, threat model 2).

The attacker sees the raw, high-dimensional output of the target's LAST
hidden layer for any image it submits, and holds ideal auxiliary images from
the training distribution; it trains an inversion network from that output
to the image and applies it to the leaked outputs of the training images.
Everything but the default leak is the shared trainer in `inversion.py`.
"""

from sca_jax.attacks import inversion

SPEC = inversion.register_inversion_attack(
    "end_to_end",
    "inversion network trained on the last hidden layer's leaked outputs",
    leak="last_hidden",
)
