"""The change log of labels and grades (`label_changes`): each write notes the features it touched, so a
reader that keeps a copy (the browser's index and search) reads again only what changed."""

from __future__ import annotations

import duckdb

from ..clock import utcnow

KEEP_DAYS = 7  # a reader further behind than this reads everything again


def note_change(con: duckdb.DuckDBPyConnection, dictionary_id: int, features: list[int] | None) -> None:
    """Inside a transaction: these features' labels or grades changed (None: all of the dictionary's)."""
    now = utcnow()
    con.execute("INSERT INTO label_changes (seq, dictionary_id, features, written_at) SELECT coalesce(max(seq), 0) + 1, "
                "?, ?::UINTEGER[], ? FROM label_changes",
                [dictionary_id, None if features is None else sorted(set(map(int, features))), now])
    con.execute(f"DELETE FROM label_changes WHERE written_at < ? - INTERVAL {KEEP_DAYS} DAY", [now])
