"""Benchmarks of the sparse coding layers and the training step (CPU)."""
