"""Reads of labels, grades, outcomes and stored samples: what a run has to do, and what it did.

A mixin of `Store` (which supplies `con` and `_one`); the writes are in `writer.py`.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa

from ..records import Explanation, SamplerConfig

_KEY = "explainer = ? AND prompt_hash = ? AND sampler_hash = ? AND seed = ?"


class LabelReads:
    # -- what a run has to do ----------------------------------------------------------------------

    def done_features(self, dictionary_id: int, run_key: tuple[str, str, str, int]) -> np.ndarray:
        """Sorted features with a finished outcome (ok or skipped) under (explainer, prompt_hash,
        sampler_hash, seed), made from the feature's current activations (a label from before
        fingerprints counts as current)."""
        t = self.con.execute(
            "SELECT l.feature FROM label_status l JOIN feature_stats f USING (dictionary_id, feature) "
            f"WHERE l.dictionary_id = ? AND l.{_KEY.replace(' AND ', ' AND l.')} AND l.status IN ('ok', 'skipped') "
            "AND (l.act_hash IS NULL OR l.act_hash = f.act_hash) ORDER BY l.feature",
            [dictionary_id, *run_key]).fetchnumpy()
        return np.asarray(t["feature"], dtype=np.int64)

    def grading_todo(self, dictionary_id: int, run_key: tuple[str, str, str, int] | None,
                     scorers: list[tuple[str, str]],
                     features: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Current labels (status ok under `run_key`; None: every imported label) whose chosen
        explanation lacks a grade, ok or undefined, of some (scorer, version) in `scorers`: (features,
        explanation ids, bit masks over `scorers`), sorted by feature. A failed grade counts as lacking
        (it is retried). A feature with several imported labels is graded on its newest."""
        empty = np.zeros(0, np.int64)
        if not scorers:
            return empty, empty, empty
        want = pa.table({"bit": pa.array([1 << i for i in range(len(scorers))], pa.int64()),
                         "scorer": [s for s, _ in scorers], "version": [v for _, v in scorers]})
        sel = pa.table({"feature": pa.array(np.asarray(features if features is not None else [], np.int64))})
        key = "e.imported IS NOT NULL" if run_key is None else "e." + _KEY.replace(" AND ", " AND e.")
        self.con.register("_want_scorers", want)
        self.con.register("_selected", sel)
        try:
            t = self.con.execute(f"""
                WITH ex AS (
                    SELECT e.feature, e.explanation_id FROM explanations e
                    JOIN label_status l USING (dictionary_id, feature, explainer, prompt_hash, sampler_hash, seed)
                    JOIN feature_stats f USING (dictionary_id, feature)
                    WHERE e.dictionary_id = ? AND e.chosen AND {key}
                      AND l.status = 'ok' AND (l.act_hash IS NULL OR l.act_hash = f.act_hash)
                      AND (? OR e.feature IN (SELECT feature FROM _selected))
                    QUALIFY row_number() OVER (PARTITION BY e.feature ORDER BY e.created_at DESC,
                                                                               e.explanation_id DESC) = 1)
                SELECT ex.feature, ex.explanation_id, sum(w.bit)::BIGINT AS mask FROM ex, _want_scorers w
                WHERE NOT EXISTS (SELECT 1 FROM scores s WHERE s.explanation_id = ex.explanation_id
                                  AND s.scorer = w.scorer AND s.scorer_version = w.version
                                  AND s.status IN ('ok', 'undefined'))
                GROUP BY ex.feature, ex.explanation_id ORDER BY ex.feature""",
                                 [dictionary_id, *(run_key or ()), features is None]).fetchnumpy()
        finally:
            self.con.unregister("_want_scorers")
            self.con.unregister("_selected")
        return tuple(np.asarray(t[k], dtype=np.int64) for k in ("feature", "explanation_id", "mask"))

    def explanations(self, ids: list[int]) -> dict[int, Explanation]:
        """Explanation records by id (what a run regrades)."""
        rows = self.con.execute(
            "SELECT e.explanation_id, d.name, e.feature, e.text, e.explainer, e.prompt_hash, e.sampler, e.seed, "
            "e.evidence, e.created_at FROM explanations e JOIN dictionaries d USING (dictionary_id) "
            "WHERE e.explanation_id IN (SELECT unnest(?::BIGINT[]))", [list(map(int, ids))]).fetchall()
        return {r[0]: Explanation(dictionary=r[1], feature=r[2], text=r[3], explainer=r[4], prompt_hash=r[5],
                                  sampler=SamplerConfig(**json.loads(r[6])), seed=r[7], evidence=json.loads(r[8]),
                                  created_at=r[9], explanation_id=r[0]) for r in rows}

    # -- stored samples ----------------------------------------------------------------------------

    def current_samples(self, dictionary_id: int, config_hash: str, seed: int) -> np.ndarray:
        """Sorted features whose stored sample was drawn under this config and seed from the feature's
        current activations (the ones a run can read instead of drawing again)."""
        t = self.con.execute(
            "SELECT s.feature FROM sample_status s JOIN feature_stats f USING (dictionary_id, feature) "
            "WHERE s.dictionary_id = ? AND s.config_hash = ? AND s.seed = ? AND s.act_hash = f.act_hash "
            "ORDER BY s.feature", [dictionary_id, config_hash, seed]).fetchnumpy()
        return np.asarray(t["feature"], dtype=np.int64)

    def sampled_features(self, dictionary_id: int) -> np.ndarray:
        """Sorted features with a stored sample under any config, seed or activations."""
        t = self.con.execute("SELECT DISTINCT feature FROM sample_status WHERE dictionary_id = ? ORDER BY feature",
                             [dictionary_id]).fetchnumpy()
        return np.asarray(t["feature"], dtype=np.int64)

    def sample_rows(self, dictionary_id: int, features: np.ndarray) -> tuple[dict, dict]:
        """Stored status rows and window references of several features, in feature (and window) order:
        ({feature, status, reason, n_candidates, seed, config}, {feature, sample_set, kind, context_id,
        start, length})."""
        feats = np.asarray(features, np.int64).tolist()
        st = self.con.execute(
            "SELECT s.feature, s.status, s.reason, s.n_candidates, s.seed, c.config FROM sample_status s "
            "JOIN sampler_configs c USING (config_hash) WHERE s.dictionary_id = ? AND s.feature IN "
            "(SELECT unnest(?::UINTEGER[])) ORDER BY s.feature", [dictionary_id, feats]).fetchnumpy()
        refs = self.con.execute(
            "SELECT feature, sample_set::VARCHAR AS sample_set, kind::VARCHAR AS kind, context_id, start, length "
            "FROM samples WHERE dictionary_id = ? AND feature IN (SELECT unnest(?::UINTEGER[])) "
            "ORDER BY feature, sample_set, rank", [dictionary_id, feats]).fetchnumpy()
        return st, refs

    # -- fingerprints and counts -------------------------------------------------------------------

    def activation_hashes(self, dictionary_id: int, features) -> dict[int, int]:
        """feature -> fingerprint of its activations (feature_stats.act_hash)."""
        return dict(self.con.execute("SELECT feature, act_hash FROM feature_stats WHERE dictionary_id = ? AND "
                                     "feature IN (SELECT unnest(?::UINTEGER[]))",
                                     [dictionary_id, sorted(int(f) for f in features)]).fetchall())

    def labelled_count(self, dictionary_id: int) -> int:
        """Features with at least one label."""
        return self._one("SELECT count(DISTINCT feature) FROM explanations WHERE dictionary_id = ? AND chosen",
                         [dictionary_id])[0]

    def label_summary(self, dictionary_id: int, run_key: tuple[str, str, str, int] | None = None) -> dict[str, int]:
        where, params = "dictionary_id = ?", [dictionary_id]
        if run_key is not None:
            where += " AND " + _KEY
            params += list(run_key)
        rows = self.con.execute(f"SELECT status, count(*) FROM label_status WHERE {where} GROUP BY status",
                                params).fetchall()
        return dict(rows)

    def label_outcomes(self, dictionary_id: int, status: str, limit: int | None = None) -> list[dict]:
        """Features whose latest outcome has `status` (failed, skipped), with the reason, newest first."""
        rows = self.con.execute(
            "SELECT feature, explainer, prompt_hash, sampler_hash, seed, status, reason, created_at "
            "FROM label_status WHERE dictionary_id = ? AND status = ? ORDER BY created_at DESC, feature "
            f"{'' if limit is None else f'LIMIT {int(limit)}'}", [dictionary_id, status]).fetchall()
        return [{"feature_id": r[0], "explainer": r[1], "prompt_hash": r[2], "sampler_hash": r[3], "seed": r[4],
                 "status": r[5], "reason": r[6], "created_at": r[7].isoformat()} for r in rows]

    def scorer_names(self, dictionary_id: int) -> list[str]:
        """The scorers that graded some label of a dictionary."""
        return [r[0] for r in self.con.execute(
            "SELECT DISTINCT s.scorer FROM scores s JOIN explanations e USING (explanation_id) "
            "WHERE e.dictionary_id = ? ORDER BY 1", [dictionary_id]).fetchall()]

    # -- labels with their grades ------------------------------------------------------------------

    def labels(self, dictionary_id: int | None = None, features: list[int] | None = None,
               sort_by: str | None = None, descending: bool = True, limit: int | None = None,
               candidates: bool = False, by: str = "value") -> list[dict]:
        """Labels with provenance and their scores, one dict per explanation: each feature's chosen
        explanation per (explainer, prompt, sampler, seed), or with `candidates` every candidate too.
        A label graded by several versions of one scorer shows the newest grade.

        sort_by: a scorer name (explanations without an ok newest grade of it come last), or None for
        (dictionary, feature) order; `by`: "value", or "lower" (the lower end of the grade's 95% interval:
        a grade resting on little evidence ranks below an equal one resting on much).
        """
        where, params = ["TRUE" if candidates else "e.chosen"], []
        if dictionary_id is not None:
            where.append("e.dictionary_id = ?")
            params.append(dictionary_id)
        if features is not None:
            where.append("e.feature IN (SELECT unnest(?::UINTEGER[]))")
            params.append(list(features))
        order = "e.dictionary_id, e.feature, e.explanation_id"
        if sort_by is not None:
            column = {"value": "s.value", "lower": "s.ci_low"}[by]
            order = (f"(SELECT {column} FROM scores s WHERE s.explanation_id = e.explanation_id AND s.scorer = ? "
                     f"ORDER BY s.created_at DESC LIMIT 1) {'DESC' if descending else 'ASC'} NULLS LAST, {order}")
        rows = self.con.execute(
            f"""SELECT e.explanation_id, d.name, e.feature, e.text, e.explainer, e.prompt_hash, e.sampler_hash,
                       e.sampler, e.seed, e.evidence, e.created_at, e.chosen, e.imported, e.carried, e.run_id
                FROM explanations e JOIN dictionaries d USING (dictionary_id)
                WHERE {' AND '.join(where)} ORDER BY {order} {'' if limit is None else f'LIMIT {int(limit)}'}""",
            params + ([sort_by] if sort_by is not None else [])).fetchall()
        ids = [r[0] for r in rows]
        scores: dict[int, dict] = {i: {} for i in ids}
        if ids:
            for eid, scorer, version, status, value, reason, details, created, lo, hi, nw, nt, run in self.con.execute(
                    "SELECT explanation_id, scorer, scorer_version, status, value, reason, details, created_at, "
                    "ci_low, ci_high, n_windows, n_tokens, run_id FROM scores WHERE explanation_id IN "
                    "(SELECT unnest(?::BIGINT[])) ORDER BY explanation_id, scorer, created_at", [ids]).fetchall():
                scores[eid][scorer] = {"value": value, "ci": None if lo is None else [lo, hi], "n_windows": nw,
                                       "n_tokens": nt, "status": status, "reason": reason, "version": version,
                                       "details": json.loads(details), "created_at": created.isoformat(),
                                       "run_id": run}
        return [{"explanation_id": r[0], "dictionary": r[1], "feature_id": r[2], "explanation": r[3],
                 "explainer": r[4], "prompt_hash": r[5], "sampler_hash": r[6], "sampler": json.loads(r[7]),
                 "seed": r[8], "evidence": json.loads(r[9]), "created_at": r[10].isoformat(), "chosen": r[11],
                 "imported": r[12], "carried": r[13], "run_id": r[14],
                 "scores": scores[r[0]]} for r in rows]
