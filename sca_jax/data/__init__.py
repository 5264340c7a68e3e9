"""Data: named sources of pooled images; the paper's train/test/aux splits."""

from sca_jax.data.sources import RawData
from sca_jax.data.sources import SOURCES
from sca_jax.data.sources import load_source
from sca_jax.data.sources import resolve_data_dir
from sca_jax.data.splits import Splits
from sca_jax.data.splits import make_splits

__all__ = [
    "RawData",
    "SOURCES",
    "Splits",
    "load_source",
    "make_splits",
    "resolve_data_dir",
]
