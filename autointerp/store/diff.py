"""What `diff` reads: one side of a comparison (a dictionary's current labels, or the labels a run wrote or
graded), their grades, their stored label vectors, and which dictionary a run labelled.

A mixin of `Store` (which supplies `con`). Every read is by feature range or by explanation ids, so a
diff of two 1M-feature dictionaries holds one range at a time, never a whole table.
"""

from __future__ import annotations

import numpy as np


class DiffReads:
    def run_dictionaries(self, run_id: str) -> list[int]:
        """The dictionaries a run wrote labels or grades of (empty: no such run in the store)."""
        rows = self.con.execute(
            "SELECT DISTINCT e.dictionary_id FROM explanations e WHERE e.run_id = $1 UNION "
            "SELECT DISTINCT e.dictionary_id FROM scores s JOIN explanations e USING (explanation_id) "
            "WHERE s.run_id = $1 ORDER BY 1", [run_id]).fetchall()
        return [r[0] for r in rows]

    def run_keys(self, run_id: str) -> set[tuple]:
        """The (explainer, prompt hash, sampler hash, seed) keys of the labels a run wrote."""
        return set(self.con.execute("SELECT DISTINCT explainer, prompt_hash, sampler_hash, seed FROM explanations "
                                    "WHERE run_id = ?", [run_id]).fetchall())

    def label_side(self, dictionary_id: int, features: np.ndarray, run_id: str | None = None) -> dict[str, np.ndarray]:
        """Of `features` (sorted ids), each one's label: the newest chosen explanation, or with `run_id` the
        one that run wrote (else the newest one it graded). Columns feature, explanation_id, text, in
        feature order; a feature with none is absent."""
        feats = np.asarray(features, np.int64).tolist()
        if run_id is None:
            where, rank, params = "TRUE", "", [dictionary_id, feats]
        else:
            where = ("(e.run_id = $3 OR e.explanation_id IN (SELECT s.explanation_id FROM scores s "
                     "WHERE s.run_id = $3))")
            rank, params = "(e.run_id IS NOT DISTINCT FROM $3) DESC, ", [dictionary_id, feats, run_id]
        t = self.con.execute(
            f"""SELECT e.feature, e.explanation_id, e.text FROM explanations e
                WHERE e.dictionary_id = $1 AND e.chosen AND e.feature IN (SELECT unnest($2::UINTEGER[])) AND {where}
                QUALIFY row_number() OVER (PARTITION BY e.feature
                                           ORDER BY {rank}e.created_at DESC, e.explanation_id DESC) = 1
                ORDER BY e.feature""", params).fetchnumpy()
        return {"feature": np.asarray(t["feature"], np.int64), "explanation_id": np.asarray(t["explanation_id"],
                                                                                            np.int64),
                "text": np.asarray(t["text"], object)}

    def side_grades(self, explanation_ids: np.ndarray, run_id: str | None = None) -> dict[str, np.ndarray]:
        """The ok grades of `explanation_ids`, one per (explanation, scorer): the newest, or with `run_id` the
        newest that run wrote (a run's side is its own grades, never a later run's). Columns explanation_id,
        scorer, value, ci_low, ci_high."""
        ids = np.asarray(explanation_ids, np.int64).tolist()
        mine = "" if run_id is None else "AND run_id = $2"
        t = self.con.execute(
            f"""SELECT explanation_id, scorer, value, ci_low, ci_high FROM scores
                WHERE explanation_id IN (SELECT unnest($1::BIGINT[])) AND status = 'ok' {mine}
                QUALIFY row_number() OVER (PARTITION BY explanation_id, scorer ORDER BY created_at DESC) = 1
                ORDER BY explanation_id, scorer""", [ids] + ([] if run_id is None else [run_id])).fetchnumpy()
        return {"explanation_id": np.asarray(t["explanation_id"], np.int64), "scorer": np.asarray(t["scorer"], object),
                "value": np.asarray(t["value"], np.float64),
                "ci_low": np.asarray(t["ci_low"].filled(np.nan) if hasattr(t["ci_low"], "filled") else t["ci_low"],
                                     np.float64),
                "ci_high": np.asarray(t["ci_high"].filled(np.nan) if hasattr(t["ci_high"], "filled") else t["ci_high"],
                                      np.float64)}

    def label_vectors_of(self, encoding: str, explanation_ids: np.ndarray) -> dict[int, np.ndarray]:
        """The stored label embeddings (float32) of those of `explanation_ids` that have one."""
        ids = np.asarray(explanation_ids, np.int64).tolist()
        rows = self.con.execute("SELECT explanation_id, vector FROM label_vectors WHERE encoding = ? AND "
                                "explanation_id IN (SELECT unnest(?::BIGINT[]))", [encoding, ids]).fetchall()
        return {int(e): np.frombuffer(v, np.float16).astype(np.float32) for e, v in rows}
