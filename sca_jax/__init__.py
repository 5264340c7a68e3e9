"""sca_jax: sparse coding architectures against model inversion attacks, in JAX/Flax."""

__version__ = "0.1.0"
