"""JSON Lines: one line per (feature, explanation), with every score and the label's provenance."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..store import Store

JSONL_FIELDS = ("feature_id", "dictionary", "explanation", "scores", "explainer", "prompt_hash", "sampler",
                "sampler_hash", "seed", "created_at", "evidence", "chosen")
PAGE = 20_000  # features read per query


def write_jsonl(store: Store, out: str | Path, dictionary: str | None = None, candidates: bool = False) -> int:
    """Write the labels of one dictionary (default: every dictionary); returns the number of lines.
    `candidates`: every candidate of best-of-k too, not only the chosen ones.

    Written to a temporary file and renamed into place: a failed export never leaves half a file.
    """
    out = Path(out)
    dicts = [store.dictionary(dictionary)] if dictionary else store.dictionaries()
    tmp = out.with_name(out.name + ".tmp")
    n = 0
    try:
        with tmp.open("w", encoding="utf-8") as fh:
            for d in dicts:
                for lo in range(0, d.width, PAGE):  # bounded memory, however many labels
                    for r in store.labels(d.dictionary_id, range(lo, min(lo + PAGE, d.width)), candidates=candidates):
                        fh.write(json.dumps({k: r[k] for k in JSONL_FIELDS}, ensure_ascii=False, default=str) + "\n")
                        n += 1
        tmp.replace(out)
    finally:
        if tmp.exists():
            os.unlink(tmp)
    return n
