"""Labels, scores and provenance as JSON Lines or Parquet: one line (row) per (feature, explanation), in
the shape `autointerp/export/schema.py` defines and `labels.schema.json` publishes.

Both are paged by feature (bounded memory, however many labels) and written to a temporary file that
is renamed into place: a failed export never leaves half a file. One export to a path at a time
(export/lock.py): a second one at once stops with one line.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ..store import Store
from .lock import one_export_at_a_time
from .schema import arrow_row, arrow_schema, label_row

PAGE = 20_000  # features read per query


def iter_rows(store: Store, dictionary: str | None = None, candidates: bool = False) -> Iterator[list[dict]]:
    """Pages of exported label objects, dictionary by dictionary, in feature order."""
    dicts = [store.dictionary(dictionary)] if dictionary else store.dictionaries()
    for d in dicts:
        for lo in range(0, d.width, PAGE):
            rows = store.labels.find(d.dictionary_id, range(lo, min(lo + PAGE, d.width)), candidates=candidates)
            if rows:
                yield [label_row(r, d) for r in rows]


@contextmanager
def atomic(out: str | Path) -> Iterator[Path]:
    """A temporary path beside `out`, renamed to `out` when the block succeeds, removed when it fails."""
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    try:
        yield tmp
        tmp.replace(out)
    finally:
        if tmp.exists():
            os.unlink(tmp)


@one_export_at_a_time
def write_jsonl(store: Store, out: str | Path, dictionary: str | None = None, candidates: bool = False) -> int:
    """Write the labels of one dictionary (default: every dictionary); returns the number of lines.
    `candidates`: every candidate of best-of-k too, not only the chosen ones."""
    n = 0
    with atomic(out) as tmp, tmp.open("w", encoding="utf-8") as fh:
        for page in iter_rows(store, dictionary, candidates):
            for row in page:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += len(page)
    return n


@one_export_at_a_time
def write_parquet(store: Store, out: str | Path, dictionary: str | None = None, candidates: bool = False) -> int:
    """The same rows as Parquet (schema: `arrow_schema()`); returns the number of rows."""
    schema, n = arrow_schema(), 0
    with atomic(out) as tmp:
        with pq.ParquetWriter(str(tmp), schema, compression="zstd") as w:
            for page in iter_rows(store, dictionary, candidates):
                w.write_table(pa.Table.from_pylist([arrow_row(r) for r in page], schema=schema))
                n += len(page)
    return n


@one_export_at_a_time
def write_calibration(store: Store, out: str | Path) -> int:
    """Every `autointerp calibrate` run of the store (summaries, and per rule the truth's grade beside its best
    near miss and each explainer's label) as one JSON document; returns the number of runs."""
    from .html import calibration_doc

    doc = calibration_doc(store)
    with atomic(out) as tmp:
        tmp.write_text(json.dumps(doc, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    return len(doc["runs"])
