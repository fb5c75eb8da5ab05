"""Ingest activations computed elsewhere: delphi caches and the Parquet long format."""

from .delphi import ingest_delphi, scan_cache
from .parquet import ingest_parquet
from .tokens import TokenStrings, load_tokenizer

__all__ = ["TokenStrings", "ingest_delphi", "ingest_parquet", "load_tokenizer", "scan_cache"]
