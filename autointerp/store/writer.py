"""Writes inside one store transaction: corpora, contexts, dictionaries, samples, labels and grades, the LLM
ledger and the job ledger. A dictionary's activations and statistics stream in through `builder.py`."""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from ..clock import utcnow as _now
from ..errors import IngestError
from ..records import FeatureLabel, Grades, SamplerConfig, Score
from .builder import MAX_POSITION, DictionaryBuilder
from .captures import CaptureWrites

if TYPE_CHECKING:
    from .store import Store

class StoreWriter(CaptureWrites):
    """Handed out by `Store.writer()`; valid only inside that `with` block."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._builders: list[DictionaryBuilder] = []
        self._ctx_lengths: dict[int, list[np.ndarray]] = {}
        self._ctx_base: dict[int, int] = {}  # corpora continued from an earlier transaction: contexts already in

    @property
    def con(self):
        return self.store.con  # waits for a background insert, so statements run in order

    def _close(self) -> None:
        for b in self._builders:
            b._drop_staging()

    # -- corpora ----------------------------------------------------------------------------------

    def add_corpus(self, *, name: str, tokenizer: str, ctx_len: int, fingerprint: str,
                   source: str) -> tuple[int, bool]:
        """Return (corpus_id, created). An existing corpus with the same fingerprint is reused."""
        existing = self.store.corpus_by_fingerprint(fingerprint)
        if existing is not None:
            return existing.corpus_id, False
        if ctx_len > MAX_POSITION + 1:
            raise IngestError(f"contexts of {ctx_len} tokens exceed the store's limit of {MAX_POSITION + 1}")
        cid = self.store._one("SELECT coalesce(max(corpus_id), 0) + 1 FROM corpora")[0]
        self.con.execute("INSERT INTO corpora VALUES (?, ?, ?, ?, 0, 0, ?, ?, ?)",
                         [cid, name, tokenizer, ctx_len, fingerprint, source, _now()])
        self._ctx_lengths[cid] = []
        return cid, True

    def continue_corpus(self, corpus_id: int) -> None:
        """Append to a corpus made by an earlier transaction (a capture resumed after a checkpoint): its next
        context gets the next id."""
        self._ctx_base[corpus_id] = self.store.corpus(corpus_id).n_contexts
        self._ctx_lengths[corpus_id] = []

    def add_contexts(self, corpus_id: int, token_ids: list[np.ndarray], tokens: list[list[str]]) -> int:
        """Append contexts in order; returns the first context id assigned. Ids are 0, 1, 2, ... per corpus."""
        if corpus_id not in self._ctx_lengths:
            raise IngestError(f"corpus {corpus_id} was not created in this transaction")
        if len(token_ids) != len(tokens):
            raise IngestError(f"{len(token_ids)} token-id rows but {len(tokens)} token-string rows")
        lengths = np.array([len(t) for t in token_ids], dtype=np.int64)
        if len(lengths) and (lengths.min() < 1 or lengths.max() > MAX_POSITION + 1):
            raise IngestError(f"context lengths must be 1..{MAX_POSITION + 1}, got {lengths.min()}..{lengths.max()}")
        for i, (a, b) in enumerate(zip(token_ids, tokens)):
            if len(a) != len(b):
                raise IngestError(f"context {i}: {len(a)} token ids but {len(b)} token strings")
        first = self._ctx_base.get(corpus_id, 0) + sum(len(x) for x in self._ctx_lengths[corpus_id])
        ids = np.arange(first, first + len(token_ids), dtype=np.uint32)
        tbl = pa.table({
            "corpus_id": pa.array(np.full(len(ids), corpus_id, dtype=np.int32)),
            "context_id": pa.array(ids),
            "token_ids": pa.array([np.asarray(t, dtype=np.int32) for t in token_ids], type=pa.list_(pa.int32())),
            "tokens": pa.array(tokens, type=pa.list_(pa.string())),
        })
        self.con.execute("INSERT INTO contexts SELECT * FROM tbl")
        self._ctx_lengths[corpus_id].append(lengths)
        self.con.execute("UPDATE corpora SET n_contexts = n_contexts + ?, n_tokens = n_tokens + ? "
                         "WHERE corpus_id = ?", [len(ids), int(lengths.sum()), corpus_id])
        return first

    def context_lengths(self, corpus_id: int) -> np.ndarray:
        if corpus_id in self._ctx_lengths and corpus_id not in self._ctx_base:
            parts = self._ctx_lengths[corpus_id]
            return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        return self.store.context_lengths(corpus_id)

    # -- dictionaries -----------------------------------------------------------------------------

    def add_dictionary(self, *, name: str, corpus_id: int, model: str, hook: str, width: int, kind: str,
                       source: str, config: dict | None = None, replace: bool = False,
                       sorted_input: bool = True) -> DictionaryBuilder:
        """Create a dictionary and return a builder to append its activations to.

        `sorted_input`: the caller promises rows arrive partitioned by feature in ascending order
        (a delphi cache, shard by shard). They go straight into the clustered table; otherwise rows
        are staged and sorted once at `finish()`.
        """
        if width < 1:
            raise IngestError(f"dictionary width must be >= 1, got {width}")
        row = self.store._one("SELECT dictionary_id, corpus_id FROM dictionaries WHERE name = ?", [name])
        if row is not None:
            if not replace:
                raise IngestError(f"dictionary {name!r} already exists in {self.store.path}; "
                                  "pass --replace to overwrite it")
            # new activations, same dictionary: labels stay (over the same corpus and width), and a
            # labelling run redoes those whose feature's activations changed (feature_stats.act_hash)
            did = row[0]
            for t in ("activations", "feature_stats", "feature_neighbors", "samples", "sample_status",
                      "feature_directions", "output_tokens"):
                self.con.execute(f"DELETE FROM {t} WHERE dictionary_id = ?", [did])
            for t in ("feature_matches", "dictionary_matches"):  # matched on the activations replaced
                self.con.execute(f"DELETE FROM {t} WHERE ? IN (from_dictionary, to_dictionary)", [did])
            cut = 0 if row[1] != corpus_id else width  # other contexts: no label carries over
            for t in ("scores", "label_vectors"):
                self.con.execute(f"DELETE FROM {t} WHERE explanation_id IN (SELECT explanation_id FROM explanations "
                                 "WHERE dictionary_id = ? AND feature >= ?)", [did, cut])
            for t in ("explanations", "label_status"):
                self.con.execute(f"DELETE FROM {t} WHERE dictionary_id = ? AND feature >= ?", [did, cut])
            self.con.execute("DELETE FROM dictionaries WHERE dictionary_id = ?", [did])
        else:
            did = self.store._one("SELECT coalesce(max(dictionary_id), 0) + 1 FROM dictionaries")[0]
        self.con.execute("INSERT INTO dictionaries VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         [did, name, corpus_id, model, hook, width, kind, source,
                          json.dumps(config or {}, sort_keys=True), _now()])
        b = DictionaryBuilder(self, did, corpus_id, width, sorted_input)
        self._builders.append(b)
        return b

    def add_neighbors(self, dictionary_id: int, feature: np.ndarray, neighbor: np.ndarray,
                      similarity: np.ndarray) -> None:
        tbl = pa.table({"dictionary_id": np.full(len(feature), dictionary_id, np.uint16),
                        "feature": feature.astype(np.uint32), "neighbor": neighbor.astype(np.uint32),
                        "similarity": similarity.astype(np.float32)})
        self.con.execute("INSERT INTO feature_neighbors SELECT * FROM tbl")

    def add_directions(self, dictionary_id: int, vectors: np.ndarray, block: int = 65_536) -> None:
        """Output directions of features 0..n-1 (rows of `vectors`), stored as float16, a block of rows at a
        time (each block's blobs are one buffer, no copy per row)."""
        for lo in range(0, len(vectors), block):
            v = np.ascontiguousarray(vectors[lo:lo + block], dtype=np.float16)
            n, width = v.shape[0], v.shape[1] * 2
            blobs = pa.LargeBinaryArray.from_buffers(pa.large_binary(), n, [
                None, pa.py_buffer(np.arange(n + 1, dtype=np.int64) * width), pa.py_buffer(v)])
            self.store._insert_now("feature_directions", pa.table({
                "dictionary_id": pa.array(np.full(n, dictionary_id, np.uint16)),
                "feature": pa.array(np.arange(lo, lo + n, dtype=np.uint32)), "direction": blobs}))

    def clear_matches(self, from_id: int, to_id: int, method: str) -> None:
        for t in ("feature_matches", "dictionary_matches"):
            self.con.execute(f"DELETE FROM {t} WHERE from_dictionary = ? AND to_dictionary = ? AND method = ?",
                             [from_id, to_id, method])

    def add_matches(self, from_id: int, to_id: int, method: str, to_feature: np.ndarray, from_feature: np.ndarray,
                    similarity: np.ndarray) -> None:
        """Append pairs of one match (after `clear_matches`; `end_match` writes its header)."""
        n = len(to_feature)
        self.store._insert_background("feature_matches", pa.table({
            "from_dictionary": np.full(n, from_id, np.uint16), "to_dictionary": np.full(n, to_id, np.uint16),
            "method": pa.array([method] * n, pa.string()), "to_feature": np.asarray(to_feature, np.uint32),
            "from_feature": np.asarray(from_feature, np.uint32), "similarity": np.asarray(similarity, np.float32)}))

    def end_match(self, from_id: int, to_id: int, method: str, params: dict) -> int:
        n = self.store._one("SELECT count(*) FROM feature_matches WHERE from_dictionary = ? AND to_dictionary = ? "
                            "AND method = ?", [from_id, to_id, method])[0]
        self.con.execute("INSERT INTO dictionary_matches VALUES (?, ?, ?, ?, ?, ?)",
                         [from_id, to_id, method, json.dumps(params, sort_keys=True), n, _now()])
        return n

    def add_output_tokens(self, dictionary_id: int, features: np.ndarray, strings: np.ndarray,
                          promoted: tuple[np.ndarray, np.ndarray], suppressed: tuple[np.ndarray, np.ndarray]) -> None:
        """Logit-lens tokens of `features`: (ids [n, k], logits [n, k]) promoted and suppressed; `strings` maps
        a token id to its display string."""
        cols = {"dictionary_id": pa.array(np.full(len(features), dictionary_id, np.uint16)),
                "feature": pa.array(np.asarray(features, np.uint32))}
        for name, (ids, logits) in (("promoted", promoted), ("suppressed", suppressed)):
            cols[f"{name}_ids"] = pa.array(ids.astype(np.int32).tolist(), pa.list_(pa.int32()))
            cols[name] = pa.array(strings[ids].tolist(), pa.list_(pa.string()))
            cols[f"{name}_logits"] = pa.array(logits.astype(np.float32).tolist(), pa.list_(pa.float32()))
        self.store._insert_now("output_tokens", pa.table(cols))

    # -- samples ----------------------------------------------------------------------------------

    def clear_samples(self, dictionary_id: int, features: np.ndarray | None = None) -> None:
        for t in ("samples", "sample_status"):
            if features is None:
                self.con.execute(f"DELETE FROM {t} WHERE dictionary_id = ?", [dictionary_id])
            else:
                self.con.execute(f"DELETE FROM {t} WHERE dictionary_id = ? AND feature IN "
                                 "(SELECT unnest(?::UINTEGER[]))", [dictionary_id, features.tolist()])

    def add_samples(self, dictionary_id: int, config: SamplerConfig, seed: int, status: dict[str, np.ndarray],
                    refs: dict[str, np.ndarray], sample_sets: tuple[str, ...], window_kinds: tuple[str, ...]) -> None:
        """Append sampled window references and one status row per feature.

        refs["sample_set"] and refs["kind"] are int8 indices into `sample_sets` and `window_kinds`.
        """
        self.con.execute("INSERT INTO sampler_configs SELECT ?, ? WHERE NOT EXISTS "
                         "(SELECT 1 FROM sampler_configs WHERE config_hash = ?)",
                         [config.hash, json.dumps(config.to_dict(), sort_keys=True), config.hash])
        n = len(status["feature"])
        st = pa.table({"dictionary_id": np.full(n, dictionary_id, np.uint16),
                       "feature": status["feature"].astype(np.uint32),
                       "status": pa.array(status["status"], pa.string()),
                       "reason": pa.array(status["reason"], pa.string()),
                       "n_candidates": status["n_candidates"].astype(np.int32),
                       "config_hash": pa.array([config.hash] * n, pa.string()),
                       "seed": np.full(n, seed, np.int64),
                       "created_at": pa.array([_now()] * n, pa.timestamp("us"))})
        lo, hi = (int(status["feature"].min()), int(status["feature"].max())) if n else (0, -1)
        # with the fingerprint of the activations sampled: a run reads the sample only while they are current
        self.con.execute("INSERT INTO sample_status SELECT st.*, f.act_hash FROM st LEFT JOIN (SELECT feature, act_hash "
                         "FROM feature_stats WHERE dictionary_id = ? AND feature BETWEEN ? AND ?) f "
                         "ON f.feature = st.feature", [dictionary_id, lo, hi])
        m = len(refs["feature"])
        if m:
            rt = pa.table({"dictionary_id": np.full(m, dictionary_id, np.uint16),
                           "feature": refs["feature"].astype(np.uint32),
                           "sample_set": pa.DictionaryArray.from_arrays(refs["sample_set"], pa.array(sample_sets)),
                           "kind": pa.DictionaryArray.from_arrays(refs["kind"], pa.array(window_kinds)),
                           "rank": refs["rank"].astype(np.uint16),
                           "context_id": refs["context_id"].astype(np.uint32),
                           "start": refs["start"].astype(np.uint16),
                           "length": refs["length"].astype(np.uint16)})
            self.con.execute("INSERT INTO samples SELECT * FROM rt")


    # -- labels -----------------------------------------------------------------------------------

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
        self.con.register("_label_keys", keys)
        try:
            for table in ("scores", "label_vectors"):
                self.con.execute(f"DELETE FROM {table} WHERE explanation_id IN (SELECT t.explanation_id FROM "
                                 f"explanations t JOIN _label_keys k ON {match})")
            self.con.execute(f"DELETE FROM explanations t USING _label_keys k WHERE {match}")
            self.con.execute(f"DELETE FROM label_status t USING _label_keys k WHERE {match}")
        finally:
            self.con.unregister("_label_keys")
        next_id = self.store._one("SELECT coalesce(max(explanation_id), 0) + 1 FROM explanations")[0]
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
            self.store._insert_now("explanations", pa.table({
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
            self.store._insert_now("scores", _score_table(sc, now, run_id))
        # the fingerprint of the activations the labels were made from: given (labels made elsewhere, from
        # a snapshot), or the store's now (labels made from it just now)
        hashes = act_hashes if act_hashes is not None else self.store.activation_hashes(
            dictionary_id, {lab.feature for lab in labels})
        self.store._insert_now("label_status", keys.append_column("status", pa.array([lab.status for lab in labels]))
                               .append_column("reason", pa.array([lab.reason for lab in labels]))
                               .append_column("created_at", pa.array([now] * len(labels), ts))
                               .append_column("act_hash", pa.array([hashes.get(lab.feature) for lab in labels],
                                                                   pa.uint64())))
        return [(e, f, t) for e, f, t, c in zip(ex["explanation_id"], ex["feature"], ex["text"], ex["chosen"]) if c]

    def add_label_vectors(self, dictionary_id: int, encoding: str, rows: list[tuple[int, int, str]],
                          vectors: np.ndarray) -> None:
        """Label embeddings (float16) of explanations (explanation_id, feature, text), for search."""
        if not rows:
            return
        v = np.ascontiguousarray(vectors, dtype=np.float16)
        ids = pa.array([r[0] for r in rows], pa.int64())
        self.con.register("_vec_ids", pa.table({"explanation_id": ids}))
        try:
            self.con.execute("DELETE FROM label_vectors WHERE encoding = ? AND explanation_id IN "
                             "(SELECT explanation_id FROM _vec_ids)", [encoding])
        finally:
            self.con.unregister("_vec_ids")
        self.store._insert_now("label_vectors", pa.table({
            "explanation_id": ids, "dictionary_id": pa.array([dictionary_id] * len(rows), pa.uint16()),
            "feature": pa.array([r[1] for r in rows], pa.uint32()), "encoding": [encoding] * len(rows),
            "vector": pa.array([x.tobytes() for x in v], pa.binary())}))

    def add_context_vectors(self, corpus_id: int, encoding: str, vectors: dict[int, np.ndarray]) -> None:
        """A corpus's context encoding: context id -> float16 [n_tokens, dim]."""
        if not vectors:
            return
        ids = sorted(vectors)
        self.store._insert_now("context_vectors", pa.table({
            "corpus_id": pa.array([corpus_id] * len(ids), pa.int32()), "context_id": pa.array(ids, pa.uint32()),
            "encoding": [encoding] * len(ids),
            "vectors": pa.array([np.ascontiguousarray(vectors[c], np.float16).tobytes() for c in ids], pa.binary())}))


    def add_grades(self, grades: list[Grades], run_id: str | None = None) -> None:
        """New grades of existing labels (written by run `run_id`), each replacing an earlier grade of the same
        explanation by the same scorer at the same version (a failed grade retried); other versions' are kept."""
        rows = [(g.explanation_id, s) for g in grades for s in g.scores]
        if not rows:
            return
        t = _score_table(rows, _now(), run_id)
        self.con.register("_grade_rows", t)
        try:
            self.con.execute("DELETE FROM scores s USING _grade_rows g WHERE s.explanation_id = g.explanation_id "
                             "AND s.scorer = g.scorer AND s.scorer_version = g.scorer_version")
        finally:
            self.con.unregister("_grade_rows")
        self.store._insert_now("scores", t)

    # -- LLM cache and ledger ------------------------------------------------------------------------

    def add_llm_records(self, cache_rows: list[tuple], calls: list[dict]) -> None:
        """Responses and ledger rows from the journal; keys and call ids already stored are skipped."""
        if cache_rows:
            t = pa.table({"cache_key": [r[0] for r in cache_rows], "provider": [r[1] for r in cache_rows],
                          "model": [r[2] for r in cache_rows], "response": [r[3] for r in cache_rows],
                          "created_at": pa.array([_now()] * len(cache_rows), pa.timestamp("us"))})
            self.con.register("_cache_rows", t)
            try:
                self.con.execute("INSERT INTO llm_cache SELECT DISTINCT ON (cache_key) * FROM _cache_rows r "
                                 "WHERE NOT EXISTS (SELECT 1 FROM llm_cache c WHERE c.cache_key = r.cache_key)")
            finally:
                self.con.unregister("_cache_rows")
        if calls:
            cols = ("call_id", "run_id", "cache_key", "provider", "model", "purpose", "cached", "status", "error",
                    "attempts", "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens",
                    "cost_usd", "latency_ms", "priced", "created_at")
            # journals from before prices could be missing have no "priced": they were priced (or cached)
            t = pa.table({c: [r.get(c, True) if c == "priced" else r[c] for r in calls] for c in cols[:-1]}
                         | {"created_at": pa.array([datetime.fromisoformat(r["created_at"]) for r in calls],
                                                   pa.timestamp("us"))})
            self.con.register("_call_rows", t)
            try:
                self.con.execute(f"INSERT INTO llm_calls ({', '.join(cols)}) SELECT DISTINCT ON (call_id) {', '.join(cols)} FROM "
                                 "_call_rows r WHERE NOT EXISTS (SELECT 1 FROM llm_calls c WHERE c.call_id = r.call_id)")
            finally:
                self.con.unregister("_call_rows")


    def add_batch(self, batch_id: str, provider: str, model: str, purpose: str, run_id: str,
                  items: list[tuple[str, str]]) -> None:
        """A submitted batch and its (custom_id, cache_key) items."""
        self.con.execute("INSERT INTO llm_batches VALUES (?, ?, ?, ?, ?, 'submitted', ?, ?, NULL)",
                         [batch_id, provider, model, purpose, run_id, len(items), _now()])
        self.store._insert_now("llm_batch_items", pa.table({"batch_id": [batch_id] * len(items),
                                                           "custom_id": [c for c, _ in items],
                                                           "cache_key": [k for _, k in items]}))

    def batch_collected(self, batch_id: str) -> None:
        self.con.execute("UPDATE llm_batches SET status = 'collected', collected_at = ? WHERE batch_id = ?",
                         [_now(), batch_id])

    # -- the job ledger ------------------------------------------------------------------------------

    def start_job(self, run_id: str, *, dictionary: str, config: str, config_hash: str, executor: str, host: str,
                  pid: int) -> None:
        self.con.execute("INSERT INTO job_runs (run_id, dictionary, config, config_hash, executor, host, pid, status, "
                         "stop_reason, started_at) VALUES (?, ?, ?, ?, ?, ?, ?, 'running', '', ?)",
                         [run_id, dictionary, config, config_hash, executor, host, pid, _now()])

    def end_job(self, run_id: str, *, status: str, exit_code: int, stop_reason: str, summary: dict,
                input_tokens: int, output_tokens: int, dollars: float, duration_s: float,
                unpriced_calls: int = 0) -> None:
        """`summary`: the run's RunSummary as a dict (features_done counts the explained ones)."""
        self.con.execute("""
            UPDATE job_runs SET status = ?, exit_code = ?, stop_reason = ?, ended_at = ?, features_done = ?,
                   features_skipped = ?, features_failed = ?, already_done = ?, input_tokens = ?, output_tokens = ?,
                   dollars = ?, duration_s = ?, summary = ?, features_graded = ?, grades_failed = ?,
                   unpriced_calls = ? WHERE run_id = ?""",
                         [status, exit_code, stop_reason, _now(), summary.get("explained", 0), summary.get("skipped", 0),
                          summary.get("failed", 0), summary.get("already_done", 0), input_tokens, output_tokens,
                          dollars, duration_s, json.dumps(summary, default=str), summary.get("graded", 0),
                          summary.get("failed_grades", 0), unpriced_calls, run_id])

    def mark_crashed_jobs(self) -> int:
        """Jobs still 'running' when the job lock is free (the caller holds it) died without ending."""
        return self.con.execute("UPDATE job_runs SET status = 'crashed', stop_reason = 'process ended without "
                                "finishing (killed or crashed)' WHERE status = 'running'").fetchone()[0]


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
