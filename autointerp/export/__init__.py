"""export: labels, scores and provenance out of the store, in the formats readers want."""

from .html import write_html
from .labels import write_jsonl, write_parquet
from .neuronpedia import write_neuronpedia
from .schema import arrow_schema, json_schema

__all__ = ["arrow_schema", "json_schema", "write_html", "write_jsonl", "write_neuronpedia", "write_parquet"]
