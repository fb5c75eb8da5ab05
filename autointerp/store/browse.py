"""What the feature browser and its API read: one row per feature with its label and grades.

A mixin of `Store` (which supplies `con`). `feature_table` gives every feature of a dictionary with its
current label (the newest chosen explanation) and the newest grade of each scorer, as Arrow columns,
so a server can hold it in memory and sort, filter and page it in DuckDB per request.
"""

from __future__ import annotations

import pyarrow as pa


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
