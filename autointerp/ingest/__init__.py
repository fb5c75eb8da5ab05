"""Ingest activations computed elsewhere: delphi caches, the Parquet long format, Neuronpedia and SAEDashboard."""

from .delphi import ingest_delphi, scan_cache
from .neuronpedia import ingest_neuronpedia
from .parquet import ingest_parquet
from .tokens import TokenStrings, load_tokenizer

__all__ = ["TokenStrings", "ingest_delphi", "ingest_neuronpedia", "ingest_parquet", "load_tokenizer", "scan_cache"]
