"""What the feature browser and its API read: one row per feature with its label and grades.

`LabelRepo.feature_table` gives every feature of a dictionary with its
current label (the newest chosen explanation) and the newest grade of each scorer, as Arrow columns,
so a server can hold it in memory and sort, filter and page it in DuckDB per request.
"""

from __future__ import annotations

import duckdb

FIXED_SORTS = ("feature", "density", "max")


class FeatureIndex:
    """Every feature of one dictionary with its label and grades (`LabelRepo.feature_table`), held in an
    in-memory DuckDB database of the server's, so a page is sorted, filtered and paged in DuckDB. Built once;
    `page` reads through a cursor of its own, so any number of requests read at once."""

    def __init__(self, store, dictionary_id: int, width: int, db: duckdb.DuckDBPyConnection, table: str) -> None:
        self.dictionary_id = dictionary_id
        self.scorers = store.labels.scorer_names(dictionary_id)
        rows = store.labels.feature_table(dictionary_id, self.scorers)
        self.db, self.table, self.width = db, table, width
        cur = db.cursor()  # a connection of its own: never one a reader holds a result on
        try:
            cur.register("_rows", rows)
            cur.execute(f"CREATE TABLE {table} AS SELECT *, lower(label) AS label_lc FROM _rows")
            cur.unregister("_rows")
            self.labelled = int(cur.execute(f"SELECT count(*) FROM {table} WHERE explanation_id IS NOT NULL")
                                .fetchall()[0][0])
        finally:
            cur.close()

    def update(self, store, changed) -> int | None:
        """Read again the features `changed` (`LabelRepo.changes_after`: their labels or grades changed since
        the index was read); returns how many, or None when the index must be built anew (a new scorer, or
        every feature changed)."""
        if changed is None or store.labels.scorer_names(self.dictionary_id) != self.scorers:
            return None
        if not len(changed):
            return 0
        rows = store.labels.feature_table(self.dictionary_id, self.scorers, changed)
        cur = self.db.cursor()
        try:
            cur.register("_rows", rows)
            cur.execute("BEGIN")
            cur.execute(f"DELETE FROM {self.table} WHERE feature IN (SELECT feature FROM _rows)")
            cur.execute(f"INSERT INTO {self.table} BY NAME SELECT *, lower(label) AS label_lc FROM _rows")
            cur.execute("COMMIT")
            cur.unregister("_rows")
            self.labelled = int(cur.execute(f"SELECT count(*) FROM {self.table} WHERE explanation_id IS NOT NULL")
                                .fetchall()[0][0])
        finally:
            cur.close()
        return len(changed)

    def page(self, sort: str, order: str, q: str, offset: int, limit: int,
             by: str = "value") -> tuple[int, list[dict]]:
        """(how many features match `q`, one page of them sorted by `sort`): a fixed column, or a scorer's
        value (`by="lower"`: the lower end of its interval); missing values last either way."""
        if sort in FIXED_SORTS:
            col = sort
        elif sort in self.scorers:
            col = f"{'l' if by == 'lower' else 's'}{self.scorers.index(sort)}"
        else:  # a scorer of another dictionary only: no feature here has its grade
            col = "NULL"
        params: list[str | int]
        where, params = "TRUE", []
        text = q.strip().lower()
        if text:
            where, params = "contains(label_lc, ?)", [text]
            if text.isdigit() and int(text) < 2**32:  # a feature id finds its feature too
                where, params = where + " OR feature = ?", params + [int(text)]
        direction = "DESC" if order == "desc" else "ASC"
        tie = "" if col == "feature" else ", feature"
        k = len(self.scorers)
        cols = "".join(f", s{i}, l{i}, u{i}, r{i}" for i in range(k))
        db = self.db.cursor()
        try:
            total = self.width if where == "TRUE" else db.execute(
                f"SELECT count(*) FROM {self.table} WHERE {where}", params).fetchall()[0][0]
            got = db.execute(f"SELECT feature, label, density, max, n_firing{cols} "
                             f"FROM {self.table} WHERE {where} ORDER BY {col} {direction} NULLS LAST{tie} "
                             f"LIMIT {int(limit)} OFFSET {int(offset)}", params).fetchall()
        finally:
            db.close()
        return int(total), [{"feature": r[0], "label": r[1], "density": r[2], "max": r[3], "n_firing": r[4],
                             "scores": {n: r[5 + 4 * i] for i, n in enumerate(self.scorers)},
                             "ci": {n: None if r[6 + 4 * i] is None else [r[6 + 4 * i], r[7 + 4 * i]]
                                    for i, n in enumerate(self.scorers)},
                             "why": {n: r[8 + 4 * i] for i, n in enumerate(self.scorers) if r[8 + 4 * i]}}
                            for r in got]

    def scatter(self, scorer: str, limit: int) -> tuple[int, list[list]]:
        """(how many labelled features have a `scorer` grade, at most `limit` of them as [feature, density,
        value, lower, upper]): a fixed sample (by a hash of the feature id), so a page of a 1M-feature
        dictionary gets a plot, not every row."""
        if scorer not in self.scorers:
            return 0, []
        i = self.scorers.index(scorer)
        db = self.db.cursor()
        try:
            total = db.execute(f"SELECT count(*) FROM {self.table} WHERE s{i} IS NOT NULL AND density > 0"
                               ).fetchall()[0][0]
            got = db.execute(f"SELECT feature, density, s{i}, l{i}, u{i} FROM {self.table} "
                             f"WHERE s{i} IS NOT NULL AND density > 0 ORDER BY hash(feature), feature "
                             f"LIMIT {int(limit)}").fetchall()
        finally:
            db.close()
        return int(total), [list(r) for r in got]
