"""Reads for pairing the features of two dictionaries over one corpus (match/): activation moments, the
co-activation of a range of features with every feature of another dictionary, and the stored matches.

A mixin of `Store` (which supplies `con` and `_one`); the writes are `StoreWriter.add_matches`.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa

from ..clock import utcnow as _now
from .repo import Repo, reads


class MatchRepo(Repo):
    # -- reads --------------------------------------------------------------------------------------

    @reads
    def activation_moments(self, dictionary_id: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        """(sum of values, sum of squared values) per feature, indexed by feature id (zeros for dead ones)."""
        t = self.con.execute("SELECT feature, sum(value::DOUBLE) AS s, sum(value::DOUBLE * value) AS q "
                             "FROM activations WHERE dictionary_id = ? GROUP BY feature", [dictionary_id]).fetchnumpy()
        s, q = np.zeros(width), np.zeros(width)
        f = np.asarray(t["feature"], np.int64)
        s[f], q[f] = t["s"], t["q"]
        return s, q

    @reads
    def match_candidates(self, to_id: int, from_id: int, lo: int, hi: int, probes: int,
                         candidates: int) -> dict[str, np.ndarray]:
        """For each feature lo..hi of `to_id`, the features of `from_id` firing most often at its `probes`
        strongest tokens, at most `candidates` of them: {to_feature, from_feature}, by to_feature. One join
        on the token of the range's probe rows with every row of `from_id`."""
        t = self.con.execute("""
            WITH probe AS (
                SELECT feature AS fb, context_id, position FROM activations
                WHERE dictionary_id = $to AND feature BETWEEN $lo AND $hi
                QUALIFY row_number() OVER (PARTITION BY feature ORDER BY value DESC, context_id, position) <= $probes)
            SELECT p.fb AS to_feature, a.feature AS from_feature FROM probe p
            JOIN activations a ON a.context_id = p.context_id AND a.position = p.position
            WHERE a.dictionary_id = $from
            GROUP BY p.fb, a.feature
            QUALIFY row_number() OVER (PARTITION BY p.fb ORDER BY count(*) DESC, a.feature) <= $cands
            ORDER BY to_feature, from_feature""",
                             {"to": to_id, "from": from_id, "lo": lo, "hi": hi, "probes": probes,
                              "cands": candidates}).fetchnumpy()
        return {k: np.asarray(t[k], np.int64) for k in ("to_feature", "from_feature")}

    @reads
    def pair_correlations(self, to_id: int, from_id: int, pairs: dict[str, np.ndarray], n_tokens: int,
                          moments_to: pa.Table, moments_from: pa.Table, top: int = 1) -> dict[str, np.ndarray]:
        """The Pearson correlation over all `n_tokens` tokens (0 where a feature does not fire) of each pair
        (to_feature of `to_id`, from_feature of `from_id`), exactly: the cross sum joins every row of the
        to-feature with the from-feature's rows on the token. Keeps the `top` pairs of each to_feature:
        {to_feature, from_feature, both (tokens where both fire), similarity}, by to_feature then
        similarity. `moments_*`: tables (feature, s, q) of activation_moments."""
        tf = pairs["to_feature"]
        if not len(tf):
            return {k: np.zeros(0) for k in ("to_feature", "from_feature", "both", "similarity")}
        self.con.register("_pairs", pa.table({"fb": pa.array(tf, pa.int64()),
                                              "fa": pa.array(pairs["from_feature"], pa.int64())}))
        self.con.register("_mom_to", moments_to)
        self.con.register("_mom_from", moments_from)
        try:
            # the token packed in one BIGINT, and the other side cut to the pairs' features: 3x faster
            t = self.con.execute("""
                WITH rows AS (
                    SELECT c.fb, c.fa, (b.context_id::UBIGINT << 16) | b.position AS g, b.value FROM _pairs c
                    JOIN activations b ON b.dictionary_id = $to AND b.feature = c.fb
                    WHERE b.feature BETWEEN $lo AND $hi),
                other AS (
                    SELECT feature, (context_id::UBIGINT << 16) | position AS g, value FROM activations
                    WHERE dictionary_id = $from AND feature IN (SELECT DISTINCT fa FROM _pairs)),
                sums AS (
                    SELECT r.fb, r.fa, count(*) AS n, sum(a.value::DOUBLE * r.value) AS sab FROM rows r
                    JOIN other a ON a.feature = r.fa AND a.g = r.g
                    GROUP BY ALL)
                SELECT p.fb AS to_feature, p.fa AS from_feature, p.n AS both,
                       (p.sab / $n - (ma.s / $n) * (mb.s / $n)) / sqrt(greatest(
                           (ma.q / $n - (ma.s / $n) ^ 2) * (mb.q / $n - (mb.s / $n) ^ 2), 1e-300)) AS similarity
                FROM sums p JOIN _mom_from ma ON ma.feature = p.fa JOIN _mom_to mb ON mb.feature = p.fb
                QUALIFY row_number() OVER (PARTITION BY p.fb ORDER BY similarity DESC, p.fa) <= $top
                ORDER BY to_feature, similarity DESC, from_feature""",
                                 {"to": to_id, "from": from_id, "lo": int(tf.min()), "hi": int(tf.max()),
                                  "n": float(n_tokens), "top": top}).fetchnumpy()
        finally:
            for name in ("_pairs", "_mom_to", "_mom_from"):
                self.con.unregister(name)
        return {"to_feature": np.asarray(t["to_feature"], np.int64), "from_feature": np.asarray(t["from_feature"],
                                                                                                 np.int64),
                "both": np.asarray(t["both"], np.int64), "similarity": np.asarray(t["similarity"], np.float64)}

    @reads
    def match_methods(self, from_id: int, to_id: int) -> dict[str, dict]:
        """method -> {params, n_pairs, created_at} of the stored matches from one dictionary to another."""
        rows = self.con.execute("SELECT method, params, n_pairs, created_at FROM dictionary_matches "
                                "WHERE from_dictionary = ? AND to_dictionary = ? ORDER BY method",
                                [from_id, to_id]).fetchall()
        return {m: {"params": json.loads(p), "n_pairs": n, "created_at": c.isoformat()} for m, p, n, c in rows}

    @reads
    def pairs(self, from_id: int, to_id: int, method: str, min_similarity: float = -1.0,
                features=None) -> dict[str, np.ndarray]:
        """{to_feature, from_feature, similarity}: each matched feature of `to_id` with its partner in
        `from_id` by `method`, similarity at least `min_similarity`, by to_feature (`features`: only these)."""
        sql = ("SELECT to_feature, from_feature, similarity FROM feature_matches WHERE from_dictionary = ? "
               "AND to_dictionary = ? AND method = ? AND similarity >= ?")
        params: list = [from_id, to_id, method, min_similarity]
        if features is not None:
            sql += " AND to_feature IN (SELECT unnest(?::UINTEGER[]))"
            params.append(np.asarray(features, np.int64).tolist())
        t = self.con.execute(sql + " ORDER BY to_feature", params).fetchnumpy()
        return {"to_feature": np.asarray(t["to_feature"], np.int64),
                "from_feature": np.asarray(t["from_feature"], np.int64),
                "similarity": np.asarray(t["similarity"], np.float64)}

    @reads
    def carry_partners(self, from_id: int, to_id: int, method: str, min_similarity: float, features: np.ndarray,
                       explainer: str, prompt_hash: str, scorer: tuple[str, str] | None) -> dict[str, np.ndarray]:
        """For those of `features` (sorted) of `to_id` with a partner in `from_id` by `method` at
        `min_similarity` or more whose partner has a label (chosen, status ok) by `explainer` and
        `prompt_hash`: {to_feature, from_feature, similarity, explanation_id (the partner's newest such
        label), partner_value (its ok grade by `scorer` (name, version), NaN without one)}."""
        with self.tables(_carry_sel=pa.table({"feature": pa.array(np.asarray(features, np.int64))})):
            t = self.con.execute("""
                SELECT m.to_feature, m.from_feature, m.similarity, e.explanation_id,
                       (SELECT s.value FROM scores s WHERE s.explanation_id = e.explanation_id AND s.scorer = $scorer
                          AND s.scorer_version = $version AND s.status = 'ok') AS partner_value
                FROM feature_matches m
                JOIN explanations e ON e.dictionary_id = m.from_dictionary AND e.feature = m.from_feature
                JOIN label_status l ON l.dictionary_id = e.dictionary_id AND l.feature = e.feature
                     AND l.explainer = e.explainer AND l.prompt_hash = e.prompt_hash
                     AND l.sampler_hash = e.sampler_hash AND l.seed = e.seed
                WHERE m.from_dictionary = $from AND m.to_dictionary = $to AND m.method = $method
                  AND m.similarity >= $min AND m.to_feature IN (SELECT feature FROM _carry_sel)
                  AND e.chosen AND e.explainer = $explainer AND e.prompt_hash = $prompt AND l.status = 'ok'
                QUALIFY row_number() OVER (PARTITION BY m.to_feature ORDER BY e.created_at DESC,
                                                                          e.explanation_id DESC) = 1
                ORDER BY m.to_feature""",
                {"from": from_id, "to": to_id, "method": method, "min": min_similarity, "explainer": explainer,
                 "prompt": prompt_hash, "scorer": scorer[0] if scorer else "", "version": scorer[1] if scorer else ""}
            ).fetchnumpy()
        pv = t["partner_value"]
        return {"to_feature": np.asarray(t["to_feature"], np.int64),
                "from_feature": np.asarray(t["from_feature"], np.int64),
                "similarity": np.asarray(t["similarity"], np.float64),
                "explanation_id": np.asarray(t["explanation_id"], np.int64),
                "partner_value": np.ma.filled(np.ma.asarray(pv, np.float64), np.nan) if len(pv) else np.zeros(0)}

    @reads
    def matched_pairs(self, from_id: int, to_id: int, method: str, min_similarity: float, features: np.ndarray | None,
                      sort: str, after: tuple[float, int] | None, limit: int,
                      count: bool = True) -> tuple[int | None, dict[str, np.ndarray]]:
        """(how many pairs there are, or None unless `count`; a page of them): the stored pairs of `method` at
        `min_similarity` or more (of `features` of `to_id` only, when given), by to_feature or by similarity
        (highest first), `limit` of them after the pair `after` ((similarity, to_feature) of the last one
        read: a page reads from where the last ended, never skipping an offset). {to_feature, from_feature,
        similarity}."""
        order = "to_feature" if sort == "feature" else "similarity DESC, to_feature"
        sel = pa.table({"feature": pa.array(np.zeros(0, np.int64) if features is None else
                                            np.asarray(features, np.int64))})
        where = ("from_dictionary = $from AND to_dictionary = $to AND method = $method AND similarity >= $min"
                 + ("" if features is None else " AND to_feature IN (SELECT feature FROM _match_sel)"))
        p: dict = {"from": from_id, "to": to_id, "method": method, "min": min_similarity}
        page = where
        if after is not None:
            page += (" AND to_feature > $f" if sort == "feature" else
                     " AND (similarity < $s OR (similarity = $s AND to_feature > $f))")
            p_page = p | {"f": int(after[1])} | ({} if sort == "feature" else {"s": float(after[0])})
        else:
            p_page = p
        with self.tables(_match_sel=sel):
            total = self.con.execute(f"SELECT count(*) FROM feature_matches WHERE {where}", p).fetchall()[0][0] \
                if count else None
            t = self.con.execute(f"SELECT to_feature, from_feature, similarity FROM feature_matches WHERE {page} "
                                 f"ORDER BY {order} LIMIT $limit", p_page | {"limit": limit}).fetchnumpy()
        return (None if total is None else int(total)), {
            "to_feature": np.asarray(t["to_feature"], np.int64), "from_feature": np.asarray(t["from_feature"], np.int64),
            "similarity": np.asarray(t["similarity"], np.float64)}

    @reads
    def carry_threshold(self, from_name: str, to_id: int, method: str | None = None) -> dict | None:
        """The newest carry of labels from dictionary `from_name` into `to_id` (by `method`; None: by either)
        that recorded its similarity threshold (`label --carry-from ... --min-similarity`, in each carried
        label's evidence): {min_similarity, method, run_id, created_at}, or None (no carry, or only ones made
        before it was recorded)."""
        row = self.con.execute("""
            SELECT json_extract(evidence, '$.carried_from.min_similarity')::DOUBLE,
                   json_extract_string(evidence, '$.carried_from.method'), run_id, created_at
            FROM explanations
            WHERE dictionary_id = ? AND carried IS NOT NULL
              AND json_extract_string(evidence, '$.carried_from.dictionary') = ?
              AND (? IS NULL OR json_extract_string(evidence, '$.carried_from.method') = ?)
              AND json_extract(evidence, '$.carried_from.min_similarity') IS NOT NULL
            ORDER BY created_at DESC, explanation_id DESC LIMIT 1""", [to_id, from_name, method, method]).fetchone()
        return None if row is None else {"min_similarity": row[0], "method": row[1], "run_id": row[2],
                                         "created_at": row[3].isoformat()}

    @reads
    def run_features(self, dictionary_id: int, run_id: str) -> np.ndarray:
        """The features of a dictionary a run covered: those it explained, carried a label to, or graded
        (sorted ids). A diff of runs compares only the features both covered."""
        t = self.con.execute("""
            SELECT feature FROM explanations WHERE dictionary_id = $1 AND run_id = $2
            UNION SELECT e.feature FROM scores s JOIN explanations e USING (explanation_id)
            WHERE e.dictionary_id = $1 AND s.run_id = $2
            ORDER BY 1""", [dictionary_id, run_id]).fetchnumpy()
        return np.asarray(t["feature"], np.int64)

    # -- writes (inside a transaction) --------------------------------------------------------------

    def clear_matches(self, from_id: int, to_id: int, method: str) -> None:
        for t in ("feature_matches", "dictionary_matches"):
            self.con.execute(f"DELETE FROM {t} WHERE from_dictionary = ? AND to_dictionary = ? AND method = ?",
                             [from_id, to_id, method])

    def add_matches(self, from_id: int, to_id: int, method: str, to_feature: np.ndarray, from_feature: np.ndarray,
                    similarity: np.ndarray) -> None:
        """Append pairs of one match (after `clear_matches`; `end_match` writes its header)."""
        n = len(to_feature)
        self.writing.insert_background("feature_matches", pa.table({
            "from_dictionary": np.full(n, from_id, np.uint16), "to_dictionary": np.full(n, to_id, np.uint16),
            "method": pa.array([method] * n, pa.string()), "to_feature": np.asarray(to_feature, np.uint32),
            "from_feature": np.asarray(from_feature, np.uint32), "similarity": np.asarray(similarity, np.float32)}))

    def end_match(self, from_id: int, to_id: int, method: str, params: dict) -> int:
        n = self._row("SELECT count(*) FROM feature_matches WHERE from_dictionary = ? AND to_dictionary = ? "
                            "AND method = ?", [from_id, to_id, method])[0]
        self.con.execute("INSERT INTO dictionary_matches (from_dictionary, to_dictionary, method, params, n_pairs, "
                         "created_at) VALUES (?, ?, ?, ?, ?, ?)",
                         [from_id, to_id, method, json.dumps(params, sort_keys=True), n, _now()])
        return n

