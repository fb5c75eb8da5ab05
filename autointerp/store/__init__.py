"""The DuckDB store (all SQL lives here)."""

from .schema import LATEST_VERSION
from .store import Store, open_store
from .builder import DictionaryBuilder
from .writer import StoreWriter

__all__ = ["LATEST_VERSION", "DictionaryBuilder", "Store", "StoreWriter", "open_store"]
