"""The DuckDB store (all SQL lives here)."""

from .browse import FIXED_SORTS, FeatureIndex
from .schema import LATEST_VERSION
from .store import Store, open_store
from .builder import DictionaryBuilder
from .writer import StoreWriter

__all__ = ["FIXED_SORTS", "LATEST_VERSION", "DictionaryBuilder", "FeatureIndex", "Store", "StoreWriter", "open_store"]
