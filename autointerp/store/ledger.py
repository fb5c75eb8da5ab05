"""Reads of the store's ledgers: the LLM response cache, the cost ledger, provider batches and job runs.

A mixin of `Store` (which supplies `con` and `_one`); the writes are in `writer.py`, through the journal
(`autointerp.llm.journal`) for the cache and cost ledger.
"""

from __future__ import annotations

import json

import numpy as np


class LedgerReads:
    # -- LLM response cache and cost ledger (written through autointerp.llm.journal) -------------

    def cache_get(self, cache_key: str) -> dict | None:
        row = self._one("SELECT response FROM llm_cache WHERE cache_key = ? LIMIT 1", [cache_key])
        return None if row is None else json.loads(row[0])

    def cache_key_prefixes(self) -> np.ndarray:
        """The first 64 bits of every cached key, sorted: a cheap 'certainly not cached' test."""
        t = self.con.execute("SELECT cache_key FROM llm_cache").fetchnumpy()["cache_key"]
        return np.sort(np.array([int(k[:16], 16) for k in t], dtype=np.uint64))

    def pending_batches(self, provider: str, model: str) -> list[tuple[str, str, str]]:
        """(batch_id, purpose, run_id) of this provider's and model's batches not yet collected, oldest first."""
        return self.con.execute("SELECT batch_id, purpose, run_id FROM llm_batches WHERE provider = ? AND model = ? "
                                "AND status = 'submitted' ORDER BY submitted_at", [provider, model]).fetchall()

    def pending_batch_keys(self, provider: str, model: str) -> set[str]:
        rows = self.con.execute("SELECT i.cache_key FROM llm_batch_items i JOIN llm_batches b USING (batch_id) "
                                "WHERE b.provider = ? AND b.model = ? AND b.status = 'submitted'",
                                [provider, model]).fetchall()
        return {r[0] for r in rows}

    def batch_items(self, batch_id: str) -> dict[str, str]:
        return dict(self.con.execute("SELECT custom_id, cache_key FROM llm_batch_items WHERE batch_id = ?",
                                     [batch_id]).fetchall())

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

    # -- the job ledger -----------------------------------------------------------------------------

    JOB_COLUMNS = ("run_id", "dictionary", "status", "exit_code", "stop_reason", "started_at", "ended_at",
                   "features_done", "features_graded", "features_skipped", "features_failed", "grades_failed",
                   "already_done", "input_tokens", "output_tokens", "dollars", "unpriced_calls", "duration_s",
                   "executor", "host", "pid", "config_hash")

    def job_runs(self, limit: int | None = 50) -> list[dict]:
        """The newest job runs first."""
        rows = self.con.execute(f"SELECT {', '.join(self.JOB_COLUMNS)} FROM job_runs ORDER BY started_at DESC"
                                + ("" if limit is None else f" LIMIT {int(limit)}")).fetchall()
        return [self._job(r) for r in rows]

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

