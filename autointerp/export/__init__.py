"""export: labels, scores and provenance out of the store, in the formats readers want."""

from .html import check_diff_out, write_diff_html, write_html
from .labels import write_calibration, write_jsonl, write_parquet
from .neuronpedia import write_neuronpedia
from .schema import arrow_schema, json_schema

__all__ = ["arrow_schema", "check_diff_out", "json_schema", "write_calibration", "write_diff_html", "write_html", "write_jsonl", "write_neuronpedia", "write_parquet"]
