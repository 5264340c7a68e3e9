"""sca_jax: sparse coding architectures against model inversion attacks, in JAX/Flax.

SCA in your own Flax NNX model (docs/own_model.md):

  from sca_jax import SparseCoding, hebbian_step, attack_model
  self.sparse = SparseCoding(in_channels, features, kernel=5, lam=0.5,
                             rngs=rngs)      # in __init__; backprop trains it
  hebbian_step(model, x)                     # optional, in the training step
  attack_model(model, splits, leaks={"end_to_end": fn}, workdir=w)

Experiments end to end: `python -m sca_jax.main --config=configs/experiment.py:
defense=sca,dataset=cifar10 --workdir=DIR` (docs/datasets.md).
"""

__version__ = "0.1.0"

_PUBLIC = ("SparseCoding", "attack_model", "hebbian_step")


def __getattr__(name: str):
  # Lazy: `import sca_jax` stays cheap (no JAX/Flax until a name is used).
  if name in _PUBLIC:
    from sca_jax import api  # pylint: disable=g-import-not-at-top
    return getattr(api, name)
  raise AttributeError(f"module 'sca_jax' has no attribute {name!r}")


__all__ = list(_PUBLIC)
