"""Reads of the store's ledgers: the LLM response cache, the cost ledger, provider batches and job runs.

A mixin of `Store` (which supplies `con` and `_one`); the writes are in `writer.py`, through the journal
(`autointerp.llm.journal`) for the cache and cost ledger.
"""

from __future__ import annotations

import json
from datetime import datetime

import numpy as np
import pyarrow as pa

from ..clock import utcnow as _now
from .db import one_row
from .repo import Repo, reads


class LedgerRepo(Repo):
    JOB_COLUMNS = ("run_id", "dictionary", "status", "exit_code", "stop_reason", "started_at", "ended_at",
                   "features_done", "features_graded", "features_skipped", "features_failed", "grades_failed",
                   "already_done", "input_tokens", "output_tokens", "dollars", "unpriced_calls", "duration_s",
                   "executor", "host", "pid", "config_hash", "kind", "features_carried")

    # -- reads --------------------------------------------------------------------------------------

    @reads
    def cache_get(self, cache_key: str) -> dict | None:
        row = self._one("SELECT response FROM llm_cache WHERE cache_key = ? LIMIT 1", [cache_key])
        return None if row is None else json.loads(row[0])

    @reads
    def cache_key_prefixes(self) -> np.ndarray:
        """The first 64 bits of every cached key, sorted: a cheap 'certainly not cached' test."""
        t = self.con.execute("SELECT cache_key FROM llm_cache").fetchnumpy()["cache_key"]
        return np.sort(np.array([int(k[:16], 16) for k in t], dtype=np.uint64))

    def key_prefixes(self) -> np.ndarray:
        """`cache_key_prefixes`, read once per process and kept current by `remember_keys` (every client of
        this process shares it)."""
        memo = self.db.memo
        if "llm_key_prefixes" not in memo:
            memo["llm_key_prefixes"] = self.cache_key_prefixes()
        return memo["llm_key_prefixes"]

    def remember_keys(self, keys) -> None:
        """Cache keys this process just stored."""
        new = np.array([int(k[:16], 16) for k in keys], dtype=np.uint64)
        self.db.memo["llm_key_prefixes"] = np.union1d(self.key_prefixes(), new)

    def forget_keys(self) -> None:
        """Keys came from elsewhere (a merge of workers' journals): read them again on next use."""
        self.db.memo.pop("llm_key_prefixes", None)

    @reads
    def pending_batches(self, provider: str, model: str) -> list[tuple[str, str, str]]:
        """(batch_id, purpose, run_id) of this provider's and model's batches not yet collected, oldest first."""
        return self.con.execute("SELECT batch_id, purpose, run_id FROM llm_batches WHERE provider = ? AND model = ? "
                                "AND status = 'submitted' ORDER BY submitted_at", [provider, model]).fetchall()

    @reads
    def pending_batch_keys(self, provider: str, model: str) -> set[str]:
        rows = self.con.execute("SELECT i.cache_key FROM llm_batch_items i JOIN llm_batches b USING (batch_id) "
                                "WHERE b.provider = ? AND b.model = ? AND b.status = 'submitted'",
                                [provider, model]).fetchall()
        return {r[0] for r in rows}

    @reads
    def batch_items(self, batch_id: str) -> dict[str, str]:
        return dict(self.con.execute("SELECT custom_id, cache_key FROM llm_batch_items WHERE batch_id = ?",
                                     [batch_id]).fetchall())

    @reads
    def call_costs(self, run_id: str) -> dict[str, dict]:
        """Per purpose, what a run's calls cost when first paid for: a cache hit counts the tokens and
        dollars of the call that filled the cache (so a rerun still shows what a fresh run would pay)."""
        rows = self.con.execute("""
            WITH paid AS (SELECT cache_key, any_value(input_tokens + cache_read_tokens + cache_write_tokens) AS i,
                                 any_value(output_tokens) AS o, any_value(cost_usd) AS usd
                          FROM llm_calls WHERE NOT cached AND status = 'ok' GROUP BY cache_key)
            SELECT c.purpose, count(*), sum(p.i), sum(p.o), sum(p.usd)
            FROM llm_calls c JOIN paid p USING (cache_key)
            WHERE c.run_id = ? AND c.status = 'ok' GROUP BY c.purpose ORDER BY c.purpose""", [run_id]).fetchall()
        return {r[0]: {"calls": r[1], "input_tokens": int(r[2]), "output_tokens": int(r[3]), "cost_usd": float(r[4])}
                for r in rows}

    @reads
    def job_runs(self, limit: int | None = 50) -> list[dict]:
        """The newest job runs first."""
        rows = self.con.execute(f"SELECT {', '.join(self.JOB_COLUMNS)} FROM job_runs ORDER BY started_at DESC"
                                + ("" if limit is None else f" LIMIT {int(limit)}")).fetchall()
        return [self._job(r) for r in rows]

    @reads
    def runs(self, limit: int | None = 50) -> list[dict]:
        """Every run the store records, newest first: labelling runs (kind job or label, from `job_runs`),
        calibrations (calibrate) and captures (capture), each with the `job_runs` columns (counts that do
        not apply are 0)."""
        cols = ", ".join(self.JOB_COLUMNS)
        blank = ("NULL::INTEGER AS exit_code, '' AS stop_reason, {t} AS started_at, {t} AS ended_at, "
                 + ", ".join(f"0 AS {c}" for c in self.JOB_COLUMNS[7:15]) + ", 0.0 AS dollars, 0 AS unpriced_calls, "
                 "NULL::DOUBLE AS duration_s, 'local' AS executor, '' AS host, 0 AS pid, '' AS config_hash, "
                 "0 AS features_carried")
        rows = self.con.execute(f"""
            SELECT {cols} FROM job_runs
            UNION ALL
            SELECT {cols} FROM (
                SELECT c.run_id, d.name AS dictionary, 'done' AS status, 'calibrate' AS kind,
                       {blank.format(t="c.created_at")}
                FROM calibration_runs c JOIN dictionaries d USING (dictionary_id)
                UNION ALL BY NAME
                SELECT 'capture-' || c.capture_id AS run_id,
                       array_to_string(json_extract_string(c.members, '$[*].name'), ', ') AS dictionary,
                       c.status, 'capture' AS kind, {blank.format(t="c.created_at")}
                FROM captures c)
            ORDER BY started_at DESC""" + ("" if limit is None else f" LIMIT {int(limit)}")).fetchall()
        return [self._job(r) for r in rows]

    @reads
    def has_run(self, run_id: str) -> bool:
        """Whether `job_runs` has a row of this exact run id (a job's, or a label run's)."""
        return self._one("SELECT 1 FROM job_runs WHERE run_id = ?", [run_id]) is not None

    @reads
    def job_run(self, run_id: str) -> dict | None:
        """One job run with its config and summary; a unique prefix of the run id is enough."""
        rows = self.con.execute(f"SELECT {', '.join(self.JOB_COLUMNS)}, config, summary FROM job_runs "
                                "WHERE starts_with(run_id, ?) ORDER BY started_at DESC", [run_id]).fetchall()
        if len(rows) != 1:
            return None
        r = rows[0]
        return {**self._job(r[:-2]), "config": r[-2], "summary": json.loads(r[-1])}

    def _job(self, r) -> dict:
        d = dict(zip(self.JOB_COLUMNS, r))
        for k in ("started_at", "ended_at"):
            d[k] = d[k].isoformat() if d[k] is not None else None
        return d

    @reads
    def cost_summary(self, run_id: str | None = None) -> list[dict]:
        """Calls, tokens and dollars per (run, provider, model, purpose), cached calls apart."""
        where, params = ("WHERE run_id = ?", [run_id]) if run_id else ("", [])
        rows = self.con.execute(f"""
            SELECT run_id, provider, model, purpose, count(*) FILTER (NOT cached), count(*) FILTER (cached),
                   count(*) FILTER (status <> 'ok'), sum(input_tokens), sum(output_tokens), sum(cache_read_tokens),
                   sum(cache_write_tokens), sum(cost_usd), min(created_at), max(created_at),
                   count(*) FILTER (NOT priced)
            FROM llm_calls {where} GROUP BY ALL ORDER BY min(created_at)""", params).fetchall()
        keys = ("run_id", "provider", "model", "purpose", "calls", "cached_calls", "errors", "input_tokens",
                "output_tokens", "cache_read_tokens", "cache_write_tokens", "cost_usd", "first", "last",
                "unpriced_calls")
        return [dict(zip(keys, r[:12] + (r[12].isoformat(), r[13].isoformat(), r[14]))) for r in rows]

    # -- writes (inside a transaction) --------------------------------------------------------------

    def add_llm_records(self, cache_rows: list[tuple], calls: list[dict]) -> None:
        """Responses and ledger rows from the journal; keys and call ids already stored are skipped."""
        if cache_rows:
            t = pa.table({"cache_key": [r[0] for r in cache_rows], "provider": [r[1] for r in cache_rows],
                          "model": [r[2] for r in cache_rows], "response": [r[3] for r in cache_rows],
                          "created_at": pa.array([_now()] * len(cache_rows), pa.timestamp("us"))})
            with self.tables(_cache_rows=t) as con:
                con.execute("INSERT INTO llm_cache BY NAME SELECT DISTINCT ON (cache_key) * FROM _cache_rows r "
                            "WHERE NOT EXISTS (SELECT 1 FROM llm_cache c WHERE c.cache_key = r.cache_key)")
        if calls:
            cols = ("call_id", "run_id", "cache_key", "provider", "model", "purpose", "cached", "status", "error",
                    "attempts", "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens",
                    "cost_usd", "latency_ms", "priced", "created_at")
            # journals from before prices could be missing have no "priced": they were priced (or cached)
            t = pa.table({c: [r.get(c, True) if c == "priced" else r[c] for r in calls] for c in cols[:-1]}
                         | {"created_at": pa.array([datetime.fromisoformat(r["created_at"]) for r in calls],
                                                   pa.timestamp("us"))})
            with self.tables(_call_rows=t) as con:
                con.execute(f"INSERT INTO llm_calls ({', '.join(cols)}) SELECT DISTINCT ON (call_id) "
                            f"{', '.join(cols)} FROM _call_rows r WHERE NOT EXISTS "
                            "(SELECT 1 FROM llm_calls c WHERE c.call_id = r.call_id)")

    def add_batch(self, batch_id: str, provider: str, model: str, purpose: str, run_id: str,
                  items: list[tuple[str, str]]) -> None:
        """A submitted batch and its (custom_id, cache_key) items."""
        self.con.execute("INSERT INTO llm_batches (batch_id, provider, model, purpose, run_id, status, n_requests, "
                         "submitted_at) VALUES (?, ?, ?, ?, ?, 'submitted', ?, ?)",
                         [batch_id, provider, model, purpose, run_id, len(items), _now()])
        self.writing.insert("llm_batch_items", pa.table({"batch_id": [batch_id] * len(items),
                                                           "custom_id": [c for c, _ in items],
                                                           "cache_key": [k for _, k in items]}))

    def batch_collected(self, batch_id: str) -> None:
        self.con.execute("UPDATE llm_batches SET status = 'collected', collected_at = ? WHERE batch_id = ?",
                         [_now(), batch_id])

    def start_job(self, run_id: str, *, dictionary: str, config: str, config_hash: str, executor: str, host: str,
                  pid: int, kind: str = "job") -> None:
        """A run's ledger row as it starts (`kind`: job, or label for a plain `label` run)."""
        self.con.execute("INSERT INTO job_runs (run_id, dictionary, config, config_hash, executor, host, pid, status, "
                         "stop_reason, started_at, kind) VALUES (?, ?, ?, ?, ?, ?, ?, 'running', '', ?, ?)",
                         [run_id, dictionary, config, config_hash, executor, host, pid, _now(), kind])

    def end_job(self, run_id: str, *, status: str, exit_code: int, stop_reason: str, summary: dict,
                input_tokens: int, output_tokens: int, dollars: float, duration_s: float,
                unpriced_calls: int = 0) -> None:
        """`summary`: the run's RunSummary as a dict (features_done counts the explained ones, features_carried
        those that kept a carried label)."""
        self.con.execute("""
            UPDATE job_runs SET status = ?, exit_code = ?, stop_reason = ?, ended_at = ?, features_done = ?,
                   features_skipped = ?, features_failed = ?, already_done = ?, input_tokens = ?, output_tokens = ?,
                   dollars = ?, duration_s = ?, summary = ?, features_graded = ?, grades_failed = ?,
                   unpriced_calls = ?, features_carried = ? WHERE run_id = ?""",
                         [status, exit_code, stop_reason, _now(), summary.get("explained", 0), summary.get("skipped", 0),
                          summary.get("failed", 0), summary.get("already_done", 0), input_tokens, output_tokens,
                          dollars, duration_s, json.dumps(summary, default=str), summary.get("graded", 0),
                          summary.get("failed_grades", 0), unpriced_calls, summary.get("carried", 0), run_id])

    def add_refused_jobs(self, refused: list[dict]) -> int:
        """Jobs that could not start because the store was held (noted beside it while they could not
        write: job/run.py), as ledger rows with status could_not_start; a run id already there is skipped."""
        n = 0
        for r in refused:
            n += one_row(self.con.execute(
                "INSERT INTO job_runs (run_id, dictionary, config, config_hash, executor, host, pid, status, exit_code, "
                "stop_reason, started_at, ended_at) SELECT ?, ?, ?, ?, ?, ?, ?, 'could_not_start', ?, ?, ?, ? "
                "WHERE NOT EXISTS (SELECT 1 FROM job_runs WHERE run_id = ?)",
                [r["run_id"], r["dictionary"], r["config"], r["config_hash"], r["executor"], r["host"], r["pid"],
                 r["exit_code"], r["stop_reason"], datetime.fromisoformat(r["started_at"]),
                 datetime.fromisoformat(r["started_at"]), r["run_id"]]))[0]
        return n

    def job_progress(self, run_id: str, summary: dict) -> None:
        """A running job's counts so far, in the transaction that commits them: a job killed later keeps in
        its ledger row what it committed (no-op for a run that is not a job)."""
        self.con.execute("UPDATE job_runs SET features_done = ?, features_skipped = ?, features_failed = ?, "
                         "features_graded = ?, grades_failed = ?, features_carried = ? WHERE run_id = ? AND "
                         "status = 'running'",
                         [summary.get("explained", 0), summary.get("skipped", 0), summary.get("failed", 0),
                          summary.get("graded", 0), summary.get("failed_grades", 0), summary.get("carried", 0),
                          run_id])

    def mark_crashed_jobs(self) -> int:
        """Jobs still 'running' when the job lock is free (the caller holds it) died without ending."""
        return one_row(self.con.execute("UPDATE job_runs SET status = 'crashed', stop_reason = 'process ended "
                                        "without finishing (killed or crashed)' WHERE status = 'running'"))[0]

