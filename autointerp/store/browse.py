"""What the feature browser and its API read: one row per feature with its label and grades.

A mixin of `Store` (which supplies `con`). `feature_table` gives every feature of a dictionary with its
current label (the newest chosen explanation) and the newest grade of each scorer, as Arrow columns,
so a server can hold it in memory and sort, filter and page it in DuckDB per request.
"""

from __future__ import annotations

import duckdb
import pyarrow as pa

FIXED_SORTS = ("feature", "density", "max")


class FeatureIndex:
    """Every feature of one dictionary with its label and grades (`BrowseReads.feature_table`), held in an
    in-memory DuckDB database of the server's, so a page is sorted, filtered and paged in DuckDB. Built once;
    `page` reads through a cursor of its own, so any number of requests read at once."""

    def __init__(self, store, dictionary_id: int, width: int, db: duckdb.DuckDBPyConnection, table: str) -> None:
        self.scorers = store.scorer_names(dictionary_id)
        rows = store.feature_table(dictionary_id, self.scorers)
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
        where, params = "TRUE", []
        text = q.strip().lower()
        if text:
            where, params = "contains(label_lc, ?)", [text]
            if text.isdigit() and int(text) < 2**32:  # a feature id finds its feature too
                where, params = where + " OR feature = ?", params + [int(text)]
        direction = "DESC" if order == "desc" else "ASC"
        tie = "" if col == "feature" else ", feature"
        k = len(self.scorers)
        cols = "".join(f", s{i}, l{i}, u{i}" for i in range(k))
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
                             "scores": {n: r[5 + 3 * i] for i, n in enumerate(self.scorers)},
                             "ci": {n: None if r[6 + 3 * i] is None else [r[6 + 3 * i], r[7 + 3 * i]]
                                    for i, n in enumerate(self.scorers)}} for r in got]


class BrowseReads:
    def feature_table(self, dictionary_id: int, scorers: list[str]) -> pa.Table:
        """feature, label, explanation_id, density, max, n_firing, then per scorer (`scorers` in order,
        numbered 0, 1, ...) of the current label's newest grade: s<i> its value (NULL unless ok), l<i> and
        u<i> the ends of its 95% interval (NULL when it has none)."""
        pivot = "".join(f", max(g.value) FILTER (WHERE g.scorer = ${i + 2}) AS s{i}"
                        f", max(g.lo) FILTER (WHERE g.scorer = ${i + 2}) AS l{i}"
                        f", max(g.hi) FILTER (WHERE g.scorer = ${i + 2}) AS u{i}" for i in range(len(scorers)))
        return self.con.sql(f"""
            WITH lab AS (
                SELECT feature, explanation_id, text FROM explanations
                WHERE dictionary_id = $1 AND chosen
                QUALIFY row_number() OVER (PARTITION BY feature ORDER BY created_at DESC, explanation_id DESC) = 1),
            g AS (
                SELECT s.explanation_id, s.scorer, arg_max(s.value, s.created_at) AS value,
                       arg_max(s.ci_low, s.created_at) AS lo, arg_max(s.ci_high, s.created_at) AS hi
                FROM scores s SEMI JOIN lab ON s.explanation_id = lab.explanation_id
                GROUP BY s.explanation_id, s.scorer)
            SELECT f.feature, coalesce(lab.text, '') AS label, lab.explanation_id, f.density,
                   f.max_value AS max, f.n_firing{pivot}
            FROM feature_stats f LEFT JOIN lab USING (feature) LEFT JOIN g USING (explanation_id)
            WHERE f.dictionary_id = $1
            GROUP BY ALL ORDER BY f.feature""", params=[dictionary_id, *scorers]).to_arrow_table()

    def grade_values(self, explanation_ids: list[int]) -> dict[int, dict[str, float | None]]:
        """explanation id -> {scorer: the newest grade's value (None unless ok)}."""
        rows = self.con.execute(
            "SELECT explanation_id, scorer, arg_max(value, created_at) FROM scores WHERE explanation_id IN "
            "(SELECT unnest(?::BIGINT[])) GROUP BY ALL ORDER BY 1, 2", [list(map(int, explanation_ids))]).fetchall()
        out: dict[int, dict] = {}
        for e, scorer, value in rows:
            out.setdefault(e, {})[scorer] = value
        return out

    def top_windows(self, corpus_id: int, spots: list[tuple[int, int]], width: int = 16) -> list[dict]:
        """The tokens around each (context, position): {context, start, tokens, peak (index in tokens)}."""
        if not spots:
            return []
        ctx = self.read_contexts(corpus_id, [c for c, _ in spots], with_strings=True)
        where = {int(c): i for i, c in enumerate(ctx["context_id"])}
        out = []
        for c, p in spots:
            i = where[int(c)]
            a, b = int(ctx["offsets"][i]), int(ctx["offsets"][i + 1])
            start = max(0, min(int(p) - width * 3 // 4, b - a - width))
            out.append({"context": int(c), "start": start, "tokens": ctx["tokens"][a + start:min(b, a + start + width)],
                        "peak": int(p) - start})
        return out
