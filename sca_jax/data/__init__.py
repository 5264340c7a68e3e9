"""Data: named sources of pooled images; the paper's train/test/aux splits."""

from sca_jax.data.own import OWN_SOURCES
from sca_jax.data.published import PUBLISHED
from sca_jax.data.published import fetch
from sca_jax.data.sources import RawData
from sca_jax.data.sources import SOURCES
from sca_jax.data.sources import load_source
from sca_jax.data.sources import resolve_data_dir
from sca_jax.data.splits import Splits
from sca_jax.data.splits import make_splits

__all__ = [
    "OWN_SOURCES",
    "PUBLISHED",
    "RawData",
    "SOURCES",
    "Splits",
    "fetch",
    "load_source",
    "make_splits",
    "resolve_data_dir",
]
