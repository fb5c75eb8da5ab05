"""export: labels, scores and provenance out of the store, in the formats readers want."""

from .jsonl import JSONL_FIELDS, write_jsonl

__all__ = ["JSONL_FIELDS", "write_jsonl"]
