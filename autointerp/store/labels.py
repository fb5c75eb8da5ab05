"""The labels domain: explanations, their grades and each feature's outcome per run key; what a run has to do,
what it did, what the browser's index and `diff` read. Reads and writes in one place."""

from __future__ import annotations

import json
from collections.abc import Iterable

import numpy as np
import pyarrow as pa

from ..clock import utcnow as _now
from ..records import Explanation, FeatureLabel, Grades, SamplerConfig, Score
from .activations import ActivationRepo
from .changes import note_change
from .repo import Repo, reads

_KEY = "explainer = ? AND prompt_hash = ? AND sampler_hash = ? AND seed = ?"
# A grade that came with an imported label (written by the import, with it): its source's, not ours. Our
# scorers grade the label beside it; `{e}` is the explanations row's alias.
_IMPORTED_GRADE = "({e}.imported IS NOT NULL AND s.run_id IS NOT DISTINCT FROM {e}.run_id)"


def _score_table(rows: list[tuple[int, Score]], now, run_id: str | None = None) -> pa.Table:
    """Rows of the scores table: (explanation id, its grade) pairs, written by run `run_id`."""
    ss = [s for _, s in rows]
    return pa.table({
        "explanation_id": pa.array([e for e, _ in rows], pa.int64()),
        "scorer": pa.array([s.scorer for s in ss], pa.string()),
        "scorer_version": pa.array([s.scorer_version for s in ss], pa.string()),
        "status": pa.array([s.status for s in ss], pa.string()),
        "value": pa.array([s.value for s in ss], pa.float64()),
        "reason": pa.array([s.reason for s in ss], pa.string()),
        "details": pa.array([json.dumps(s.details, sort_keys=True) for s in ss], pa.string()),
        "created_at": pa.array([s.created_at or now for s in ss], pa.timestamp("us")),
        "ci_low": pa.array([s.interval[0] if s.interval else None for s in ss], pa.float64()),
        "ci_high": pa.array([s.interval[1] if s.interval else None for s in ss], pa.float64()),
        "n_windows": pa.array([s.n_windows for s in ss], pa.int32()),
        "n_tokens": pa.array([s.n_tokens for s in ss], pa.int32()),
        "run_id": pa.array([run_id] * len(ss), pa.string())})


class LabelRepo(Repo):
    # -- reads --------------------------------------------------------------------------------------

    @reads
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

    @reads
    def grading_todo(self, dictionary_id: int, run_key: tuple[str, str, str, int] | None,
                     scorers: list[tuple[str, str]],
                     features: np.ndarray | None = None, force: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Current labels (status ok under `run_key`; None: every imported label) whose chosen
        explanation lacks a grade, ok or undefined, of some (scorer, version) in `scorers`: (features,
        explanation ids, bit masks over `scorers`), sorted by feature. A failed grade counts as lacking
        (it is retried); so does a grade that came with an import (ours are given beside it). A feature
        with several imported labels is graded on its newest. `force`: every scorer of every such label."""
        empty = np.zeros(0, np.int64)
        if not scorers:
            return empty, empty, empty
        want = pa.table({"bit": pa.array([1 << i for i in range(len(scorers))], pa.int64()),
                         "scorer": [s for s, _ in scorers], "version": [v for _, v in scorers]})
        sel = pa.table({"feature": pa.array(np.asarray(features if features is not None else [], np.int64))})
        key = "e.imported IS NOT NULL" if run_key is None else "e." + _KEY.replace(" AND ", " AND e.")
        with self.tables(_want_scorers=want, _selected=sel):
            t = self.con.execute(f"""
                WITH ex AS (
                    SELECT e.feature, e.explanation_id, e.imported, e.run_id FROM explanations e
                    JOIN label_status l USING (dictionary_id, feature, explainer, prompt_hash, sampler_hash, seed)
                    JOIN feature_stats f USING (dictionary_id, feature)
                    WHERE e.dictionary_id = ? AND e.chosen AND {key}
                      AND l.status = 'ok' AND (l.act_hash IS NULL OR l.act_hash = f.act_hash)
                      AND (? OR e.feature IN (SELECT feature FROM _selected))
                    QUALIFY row_number() OVER (PARTITION BY e.feature ORDER BY e.created_at DESC,
                                                                               e.explanation_id DESC) = 1)
                SELECT ex.feature, ex.explanation_id, sum(w.bit)::BIGINT AS mask FROM ex, _want_scorers w
                WHERE ? OR NOT EXISTS (SELECT 1 FROM scores s WHERE s.explanation_id = ex.explanation_id
                                  AND s.scorer = w.scorer AND s.scorer_version = w.version
                                  AND s.status IN ('ok', 'undefined') AND NOT {_IMPORTED_GRADE.format(e="ex")})
                GROUP BY ex.feature, ex.explanation_id ORDER BY ex.feature""",
                                 [dictionary_id, *(run_key or ()), features is None, force]).fetchnumpy()
        feats, ids, masks = (np.asarray(t[k], dtype=np.int64) for k in ("feature", "explanation_id", "mask"))
        return feats, ids, masks

    @reads
    def explanations(self, ids: list[int]) -> dict[int, Explanation]:
        """Explanation records by id (what a run regrades)."""
        rows = self.con.execute(
            "SELECT e.explanation_id, d.name, e.feature, e.text, e.explainer, e.prompt_hash, e.sampler, e.seed, "
            "e.evidence, e.created_at FROM explanations e JOIN dictionaries d USING (dictionary_id) "
            "WHERE e.explanation_id IN (SELECT unnest(?::BIGINT[]))", [list(map(int, ids))]).fetchall()
        return {r[0]: Explanation(dictionary=r[1], feature=r[2], text=r[3], explainer=r[4], prompt_hash=r[5],
                                  sampler=SamplerConfig(**json.loads(r[6])), seed=r[7], evidence=json.loads(r[8]),
                                  created_at=r[9], explanation_id=r[0]) for r in rows}

    @reads
    def imported_features(self, dictionary_id: int) -> np.ndarray:
        """The features with an imported label (`ingest labels`; sorted ids)."""
        t = self.con.execute("SELECT DISTINCT feature FROM explanations WHERE dictionary_id = ? AND chosen AND "
                             "imported IS NOT NULL ORDER BY 1", [dictionary_id]).fetchnumpy()
        return np.asarray(t["feature"], np.int64)

    @reads
    def labelled_count(self, dictionary_id: int) -> int:
        """Features with at least one label."""
        return self._row("SELECT count(DISTINCT feature) FROM explanations WHERE dictionary_id = ? AND chosen",
                         [dictionary_id])[0]

    @reads
    def label_summary(self, dictionary_id: int, run_key: tuple[str, str, str, int] | None = None) -> dict[str, int]:
        params: list[str | int]
        where, params = "dictionary_id = ?", [dictionary_id]
        if run_key is not None:
            where += " AND " + _KEY
            params += list(run_key)
        rows = self.con.execute(f"SELECT status, count(*) FROM label_status WHERE {where} GROUP BY status",
                                params).fetchall()
        return dict(rows)

    @reads
    def label_outcomes(self, dictionary_id: int, status: str, limit: int | None = None) -> list[dict]:
        """Features whose latest outcome has `status` (failed, skipped), with the reason, newest first."""
        rows = self.con.execute(
            "SELECT feature, explainer, prompt_hash, sampler_hash, seed, status, reason, created_at "
            "FROM label_status WHERE dictionary_id = ? AND status = ? ORDER BY created_at DESC, feature "
            f"{'' if limit is None else f'LIMIT {int(limit)}'}", [dictionary_id, status]).fetchall()
        return [{"feature_id": r[0], "explainer": r[1], "prompt_hash": r[2], "sampler_hash": r[3], "seed": r[4],
                 "status": r[5], "reason": r[6], "created_at": r[7].isoformat()} for r in rows]

    @reads
    def scorer_names(self, dictionary_id: int) -> list[str]:
        """The scorers that graded some label of a dictionary."""
        return [r[0] for r in self.con.execute(
            "SELECT DISTINCT s.scorer FROM scores s JOIN explanations e USING (explanation_id) "
            "WHERE e.dictionary_id = ? ORDER BY 1", [dictionary_id]).fetchall()]

    @reads
    def find(self, dictionary_id: int | None = None, features: Iterable[int] | None = None,
               sort_by: str | None = None, descending: bool = True, limit: int | None = None,
               candidates: bool = False, by: str = "value", current: bool = False) -> list[dict]:
        """Labels with provenance and their scores, one dict per explanation: each feature's chosen
        explanation per (explainer, prompt, sampler, seed), or with `candidates` every candidate too, or
        with `current` only each feature's current label (its newest chosen one, as the browser's index
        shows it). A label graded by several versions of one scorer shows the newest grade; ours before
        one that came with an import (that one, when ours exist too, is under `imported_scores`). Each
        grade's `imported` is its source ("neuronpedia: PATH") when it came with an import, else None.

        sort_by: a scorer name (explanations without an ok newest grade of it come last), or None for
        (dictionary, feature) order; `by`: "value", or "lower" (the lower end of the grade's 95% interval:
        a grade resting on little evidence ranks below an equal one resting on much).
        """
        params: list[int | list[int]]
        where, params = ["TRUE" if candidates else "e.chosen"], []
        if dictionary_id is not None:
            where.append("e.dictionary_id = ?")
            params.append(dictionary_id)
        if features is not None:
            where.append("e.feature IN (SELECT unnest(?::UINTEGER[]))")
            params.append(list(features))
        if current:  # the newest chosen explanation of each feature
            where.append("e.chosen")
            newest = "row_number() OVER (PARTITION BY e.dictionary_id, e.feature ORDER BY e.created_at DESC, " \
                     "e.explanation_id DESC) = 1"
        order = "e.dictionary_id, e.feature, e.explanation_id"
        if sort_by is not None:
            column = {"value": "s.value", "lower": "s.ci_low"}[by]
            order = (f"(SELECT {column} FROM scores s WHERE s.explanation_id = e.explanation_id AND s.scorer = ? "
                     f"ORDER BY s.created_at DESC LIMIT 1) {'DESC' if descending else 'ASC'} NULLS LAST, {order}")
        rows = self.con.execute(
            f"""SELECT e.explanation_id, d.name, e.feature, e.text, e.explainer, e.prompt_hash, e.sampler_hash,
                       e.sampler, e.seed, e.evidence, e.created_at, e.chosen, e.imported, e.carried, e.run_id
                FROM explanations e JOIN dictionaries d USING (dictionary_id)
                WHERE {' AND '.join(where)} {f'QUALIFY {newest}' if current else ''}
                ORDER BY {order} {'' if limit is None else f'LIMIT {int(limit)}'}""",
            params + ([sort_by] if sort_by is not None else [])).fetchall()
        ids = [r[0] for r in rows]
        scores: dict[int, dict] = {i: {} for i in ids}
        imported: dict[int, dict] = {i: {} for i in ids}
        if ids:  # ours after the imported ones, oldest first: the newest of ours is kept
            for eid, scorer, version, status, value, reason, details, created, lo, hi, nw, nt, run, src in \
                    self.con.execute(
                    "SELECT s.explanation_id, s.scorer, s.scorer_version, s.status, s.value, s.reason, s.details, "
                    "s.created_at, s.ci_low, s.ci_high, s.n_windows, s.n_tokens, s.run_id, "
                    f"CASE WHEN {_IMPORTED_GRADE.format(e='e')} THEN e.imported END AS src "
                    "FROM scores s JOIN explanations e USING (explanation_id) WHERE s.explanation_id IN "
                    "(SELECT unnest(?::BIGINT[])) ORDER BY s.explanation_id, s.scorer, src IS NULL, s.created_at",
                    [ids]).fetchall():
                g = {"value": value, "ci": None if lo is None else [lo, hi], "n_windows": nw,
                     "n_tokens": nt, "status": status, "reason": reason, "version": version,
                     "details": json.loads(details), "created_at": created.isoformat(), "run_id": run, "imported": src}
                if src is not None:
                    imported[eid][scorer] = g
                scores[eid][scorer] = g
        for eid, theirs in imported.items():  # shown under `scores` only when ours is missing
            for scorer in [k for k, g in theirs.items() if scores[eid][k] is g]:
                del theirs[scorer]
        return [{"explanation_id": r[0], "dictionary": r[1], "feature_id": r[2], "explanation": r[3],
                 "explainer": r[4], "prompt_hash": r[5], "sampler_hash": r[6], "sampler": json.loads(r[7]),
                 "seed": r[8], "evidence": json.loads(r[9]), "created_at": r[10].isoformat(), "chosen": r[11],
                 "imported": r[12], "carried": r[13], "run_id": r[14],
                 "scores": scores[r[0]], "imported_scores": imported[r[0]]} for r in rows]

    @reads
    def feature_table(self, dictionary_id: int, scorers: list[str], features: np.ndarray | None = None) -> pa.Table:
        """feature, label, explanation_id, density, max, n_firing, then per scorer (`scorers` in order,
        numbered 0, 1, ...) of the current label's newest grade: s<i> its value (NULL unless ok), l<i> and
        u<i> the ends of its 95% interval (NULL when it has none), r<i> why it has no value ("undefined: ...",
        NULL when ok). `features`: only these (sorted ids)."""
        only, params = "", [dictionary_id, *scorers]
        if features is not None:
            only = f" AND feature IN (SELECT unnest(${len(params) + 1}::UINTEGER[]))"
            params.append(np.asarray(features, np.int64).tolist())
        pivot = "".join(f", max(g.value) FILTER (WHERE g.scorer = ${i + 2}) AS s{i}"
                        f", max(g.lo) FILTER (WHERE g.scorer = ${i + 2}) AS l{i}"
                        f", max(g.hi) FILTER (WHERE g.scorer = ${i + 2}) AS u{i}"
                        f", max(g.why) FILTER (WHERE g.scorer = ${i + 2}) AS r{i}" for i in range(len(scorers)))
        return self.con.sql(f"""
            WITH lab AS (
                SELECT feature, explanation_id, text FROM explanations
                WHERE dictionary_id = $1 AND chosen{only}
                QUALIFY row_number() OVER (PARTITION BY feature ORDER BY created_at DESC, explanation_id DESC) = 1),
            g AS (
                SELECT s.explanation_id, s.scorer, arg_max(s.value, s.created_at) AS value,
                       arg_max(s.ci_low, s.created_at) AS lo, arg_max(s.ci_high, s.created_at) AS hi,
                       arg_max(CASE WHEN s.status = 'ok' THEN NULL ELSE s.status || ': ' || s.reason END,
                               s.created_at) AS why
                FROM scores s SEMI JOIN lab ON s.explanation_id = lab.explanation_id
                GROUP BY s.explanation_id, s.scorer)
            SELECT f.feature, coalesce(lab.text, '') AS label, lab.explanation_id, f.density,
                   f.max_value AS max, f.n_firing{pivot}
            FROM feature_stats f LEFT JOIN lab USING (feature) LEFT JOIN g USING (explanation_id)
            WHERE f.dictionary_id = $1{only.replace("feature", "f.feature", 1)}
            GROUP BY ALL ORDER BY f.feature""", params=params).to_arrow_table()

    @reads
    def change_seq(self) -> int:
        """The last change recorded (`note_change`); 0 when none."""
        return int(self._row("SELECT coalesce(max(seq), 0) FROM label_changes")[0])

    @reads
    def changes_after(self, seq: int) -> tuple[int, dict[int, np.ndarray | None]]:
        """(the last change's seq, dictionary id -> sorted features whose labels or grades changed after `seq`,
        None for all of them). A reader that is more than a week behind (the changes were dropped) gets None
        for every dictionary."""
        last, first = self._row("SELECT coalesce(max(seq), 0), coalesce(min(seq), 0) FROM label_changes")
        if last <= seq:
            return seq, {}
        if first > seq + 1:  # the oldest changes this reader missed were dropped: read everything again
            return last, {d.dictionary_id: None for d in ActivationRepo(self.db, self.tx).dictionaries()}
        out: dict[int, np.ndarray | None] = {}
        for dictionary_id, features in self.con.execute(
                "SELECT dictionary_id, CASE WHEN bool_or(features IS NULL) THEN NULL ELSE list_sort(list_distinct("
                "flatten(list(features)))) END FROM label_changes WHERE seq > ? GROUP BY dictionary_id", [seq]).fetchall():
            out[dictionary_id] = None if features is None else np.asarray(features, np.int64)
        return last, out

    @reads
    def grade_values(self, explanation_ids: list[int]) -> dict[int, dict[str, tuple[float | None, list[float] | None]]]:
        """explanation id -> {scorer: (the newest grade's value (None unless ok), its 95% interval or None)}."""
        rows = self.con.execute(
            "SELECT explanation_id, scorer, arg_max(value, created_at), arg_max(ci_low, created_at), "
            "arg_max(ci_high, created_at) FROM scores WHERE explanation_id IN "
            "(SELECT unnest(?::BIGINT[])) GROUP BY ALL ORDER BY 1, 2", [list(map(int, explanation_ids))]).fetchall()
        out: dict[int, dict] = {}
        for e, scorer, value, lo, hi in rows:
            out.setdefault(e, {})[scorer] = (value, None if lo is None or hi is None else [lo, hi])
        return out

    @reads
    def run_dictionaries(self, run_id: str) -> list[int]:
        """The dictionaries a run wrote labels or grades of (empty: no such run in the store)."""
        rows = self.con.execute(
            "SELECT DISTINCT e.dictionary_id FROM explanations e WHERE e.run_id = $1 UNION "
            "SELECT DISTINCT e.dictionary_id FROM scores s JOIN explanations e USING (explanation_id) "
            "WHERE s.run_id = $1 ORDER BY 1", [run_id]).fetchall()
        return [r[0] for r in rows]

    @reads
    def run_keys(self, run_id: str) -> set[tuple]:
        """The (explainer, prompt hash, sampler hash, seed) keys of the labels a run wrote."""
        return set(self.con.execute("SELECT DISTINCT explainer, prompt_hash, sampler_hash, seed FROM explanations "
                                    "WHERE run_id = ?", [run_id]).fetchall())

    @reads
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

    @reads
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

    # -- writes (inside a transaction) --------------------------------------------------------------

    def add_labels(self, dictionary_id: int, labels: list[FeatureLabel], act_hashes: dict[int, int] | None = None,
                   run_id: str | None = None) -> list[tuple[int, int, str]]:
        """Record each feature's outcome, explanations and scores (replacing an earlier outcome of the
        same feature under the same explainer, prompt, sampler and seed), written by run `run_id`.
        Set-based: a few statements per call, however many labels. Returns the chosen explanations
        written, (explanation_id, feature, text), for the caller to index (`add_label_vectors`)."""
        if not labels:
            return []
        key_cols = ("dictionary_id", "feature", "explainer", "prompt_hash", "sampler_hash", "seed")
        keys = pa.table({"dictionary_id": pa.array([dictionary_id] * len(labels), pa.uint16()),
                         "feature": pa.array([lab.feature for lab in labels], pa.uint32()),
                         **{c: pa.array([lab.run_key[i] for lab in labels], pa.int64() if c == "seed" else pa.string())
                            for i, c in enumerate(key_cols[2:])}})
        match = " AND ".join(f"t.{c} = k.{c}" for c in key_cols)
        with self.tables(_label_keys=keys) as con:
            for table in ("scores", "label_vectors"):
                con.execute(f"DELETE FROM {table} WHERE explanation_id IN (SELECT t.explanation_id FROM "
                            f"explanations t JOIN _label_keys k ON {match})")
            con.execute(f"DELETE FROM explanations t USING _label_keys k WHERE {match}")
            con.execute(f"DELETE FROM label_status t USING _label_keys k WHERE {match}")
        next_id = self._row("SELECT coalesce(max(explanation_id), 0) + 1 FROM explanations")[0]
        now = _now()
        ex: dict[str, list] = {k: [] for k in ("explanation_id", "feature", "text", "explainer", "prompt_hash",
                                               "sampler_hash", "sampler", "seed", "evidence", "created_at",
                                               "chosen", "imported", "carried")}
        sc: list[tuple[int, Score]] = []
        for lab in labels:
            for i, (expl, scores) in enumerate(lab.explanations):
                for k, v in zip(ex, (next_id, lab.feature, expl.text, expl.explainer, expl.prompt_hash,
                                     expl.sampler.hash, json.dumps(expl.sampler.to_dict(), sort_keys=True), expl.seed,
                                     json.dumps(expl.evidence, sort_keys=True), expl.created_at or now,
                                     i == lab.chosen, expl.imported, expl.carried)):
                    ex[k].append(v)
                sc += [(next_id, s) for s in scores]
                next_id += 1
        ts = pa.timestamp("us")
        if ex["explanation_id"]:
            self.writing.insert("explanations", pa.table({
                "explanation_id": pa.array(ex["explanation_id"], pa.int64()),
                "dictionary_id": pa.array([dictionary_id] * len(ex["feature"]), pa.uint16()),
                "feature": pa.array(ex["feature"], pa.uint32()),
                **{k: pa.array(ex[k], pa.string()) for k in ("text", "explainer", "prompt_hash", "sampler_hash",
                                                              "sampler")},
                "seed": pa.array(ex["seed"], pa.int64()), "evidence": pa.array(ex["evidence"], pa.string()),
                "created_at": pa.array(ex["created_at"], ts), "chosen": pa.array(ex["chosen"], pa.bool_()),
                "imported": pa.array(ex["imported"], pa.string()), "carried": pa.array(ex["carried"], pa.string()),
                "run_id": pa.array([run_id] * len(ex["feature"]), pa.string())}))
        if sc:
            self.writing.insert("scores", _score_table(sc, now, run_id))
        # the fingerprint of the activations the labels were made from: given (labels made elsewhere, from
        # a snapshot), or the store's now (labels made from it just now)
        hashes = act_hashes if act_hashes is not None else ActivationRepo(self.db, self.tx).activation_hashes(
            dictionary_id, {lab.feature for lab in labels})
        self.writing.insert("label_status", keys.append_column("status", pa.array([lab.status for lab in labels]))
                               .append_column("reason", pa.array([lab.reason for lab in labels]))
                               .append_column("created_at", pa.array([now] * len(labels), ts))
                               .append_column("act_hash", pa.array([hashes.get(lab.feature) for lab in labels],
                                                                   pa.uint64())))
        self.note_change(dictionary_id, [lab.feature for lab in labels])
        return [(e, f, t) for e, f, t, c in zip(ex["explanation_id"], ex["feature"], ex["text"], ex["chosen"]) if c]

    def add_grades(self, grades: list[Grades], run_id: str | None = None) -> None:
        """New grades of existing labels (written by run `run_id`), each replacing an earlier grade of the same
        explanation by the same scorer at the same version (a failed grade retried); other versions' are kept,
        and so is a grade that came with an import."""
        rows = [(g.explanation_id, s) for g in grades for s in g.scores]
        if not rows:
            return
        t = _score_table(rows, _now(), run_id)
        with self.tables(_grade_rows=t) as con:
            con.execute("DELETE FROM scores s USING _grade_rows g, explanations e WHERE s.explanation_id = "
                        "g.explanation_id AND e.explanation_id = s.explanation_id AND s.scorer = g.scorer "
                        f"AND s.scorer_version = g.scorer_version AND NOT {_IMPORTED_GRADE.format(e='e')}")
        self.writing.insert("scores", t)
        touched = self.con.execute("SELECT dictionary_id, list(DISTINCT feature) FROM explanations WHERE explanation_id "
                                   "IN (SELECT unnest(?::BIGINT[])) GROUP BY ALL", [[e for e, _ in rows]]).fetchall()
        for dictionary_id, features in touched:
            self.note_change(dictionary_id, features)

    def note_change(self, dictionary_id: int, features: list[int] | None) -> None:
        """Record that this transaction changed these features' labels or grades (None: all of them), for
        readers that keep a copy (`changes_after`)."""
        note_change(self.writing.con, dictionary_id, features)

