"""The DuckDB store: one file holding corpora, dictionaries, sparse activations, statistics and samples.

All SQL of autointerp lives in this package. One writer at a time (DuckDB's file lock enforces it
across processes); readers open read-only. Every write goes through `Store.writer()`, one
transaction: if anything fails inside it, the store is left exactly as it was.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from ..clock import utcnow
from ..errors import AutointerpError, OlderStoreError, StoreError
from ..records import Corpus, Dictionary, FeatureStats
from .browse import BrowseReads
from .captures import CaptureReads
from .diff import DiffReads
from .labels import LabelReads
from .ledger import LedgerReads
from .matches import MatchReads
from .outputs import OutputReads
from .schema import LATEST_VERSION, MIGRATIONS
from .vectors import VectorReads
from .writer import StoreWriter


class Store(LabelReads, LedgerReads, VectorReads, OutputReads, MatchReads, BrowseReads, DiffReads, CaptureReads):
    """A store file. Open with `Store(path)` (creates and migrates) or `Store(path, read_only=True)`."""

    def __init__(self, path: str | Path, *, read_only: bool = False, memory_limit: str = "1GB",
                 threads: int | None = None) -> None:
        self.path = Path(path)
        self.read_only = read_only
        if read_only and not self.path.exists():
            raise StoreError(f"no store at {self.path}")
        self._pending: Future | None = None  # an INSERT running on the background thread
        self._background: ThreadPoolExecutor | None = None
        self.llm_key_index: np.ndarray | None = None  # llm_cache key prefixes, shared by this process's clients
        try:
            self._con = duckdb.connect(str(self.path), read_only=read_only)
        except duckdb.Error as e:
            msg = str(e).splitlines()[0]
            if "lock" in msg.lower():
                raise StoreError(f"store {self.path} is in use by another process (one writer at a time)") from None
            raise StoreError(f"cannot open store {self.path}: {msg}") from None
        self.memory_limit = memory_limit
        self.con.execute(f"SET memory_limit='{memory_limit}'")
        self.con.execute("SET preserve_insertion_order=true")
        if threads:
            self.con.execute(f"SET threads={int(threads)}")
        try:
            self._migrate()
        except BaseException:  # a refused store leaves no connection open (the next open may be a writer)
            self._con.close()
            raise

    # -- lifecycle -------------------------------------------------------------------------------

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        """The connection; waits first for a background INSERT to finish, so statements stay in order."""
        if self._pending is not None:
            self._wait()
        return self._con

    def _insert_background(self, table: str, rows: pa.Table) -> None:
        """INSERT `rows` into `table` on a background thread, so the caller can prepare the next batch
        meanwhile (DuckDB releases the GIL). At most one is in flight; any later use of `con` waits for
        it and raises its error."""
        if self._pending is not None:
            self._wait()
        if self._background is None:
            self._background = ThreadPoolExecutor(1, thread_name_prefix="store-insert")
        self._pending = self._background.submit(self._insert_now, table, rows)

    def _insert_now(self, table: str, rows: pa.Table) -> None:
        # DuckDB keeps what a statement scanned referenced until the transaction ends, so a registered
        # table would stay in memory for the whole transaction (an ingest of 540M rows: 8.6 GB more). A
        # reader that hands its batches over one by one leaves nothing behind.
        batches = rows.to_batches()[::-1]

        def drain():
            while batches:
                yield batches.pop()

        self._con.register("_insert_rows", pa.RecordBatchReader.from_batches(rows.schema, drain()))
        try:
            self._con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM _insert_rows")
        finally:
            self._con.unregister("_insert_rows")

    def _wait(self, raise_errors: bool = True) -> None:
        pending, self._pending = self._pending, None
        if pending is None:
            return
        if not raise_errors:
            self._con.interrupt()
        try:
            pending.result()
        except duckdb.Error as e:
            if raise_errors:
                raise StoreError(f"writing to {self.path} failed: {str(e).splitlines()[0]}") from None
        except BaseException:
            if raise_errors:
                raise

    def close(self) -> None:
        self._wait(raise_errors=False)
        if self._background is not None:
            self._background.shutdown()
            self._background = None
        self._con.close()

    def _one(self, sql: str, params: list | None = None) -> tuple | None:
        """The first row of a query, or None. Reads the result to its end: DuckDB 2 refuses other work
        on a connection (such as registering a table) while a result is left half-read."""
        rows = self.con.execute(sql, params or []).fetchall()
        return rows[0] if rows else None

    def cursor(self) -> Store:
        """This store on a connection of its own (same database), for reads from another thread.

        A cursor sees committed data only, never the open transaction of `writer()`. Close it when done.
        """
        view = object.__new__(Store)
        view.path, view.read_only, view._con = self.path, True, self.con.cursor()
        view.memory_limit = self.memory_limit
        view._pending, view._background = None, None
        return view

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _migrate(self) -> None:
        has = self._one("SELECT count(*) FROM information_schema.tables WHERE table_name = 'schema_migrations'")[0]
        version = 0
        if has:
            version = self._one("SELECT coalesce(max(version), 0) FROM schema_migrations")[0]
        if version > LATEST_VERSION:
            raise StoreError(f"store {self.path} has schema version {version}, newer than this autointerp "
                             f"supports ({LATEST_VERSION}); upgrade autointerp to read it")
        pending = [m for m in MIGRATIONS if m[0] > version]
        if not pending:
            return
        if self.read_only:
            raise OlderStoreError(f"store {self.path} has schema version {version}, older than {LATEST_VERSION}; "
                                  "open it once for writing to migrate")
        self.con.execute("BEGIN")
        try:
            if not has:
                self.con.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, "
                                 "name VARCHAR NOT NULL, applied_at TIMESTAMP NOT NULL)")
            for number, name, fn in pending:
                fn(self.con)
                self.con.execute("INSERT INTO schema_migrations VALUES (?, ?, ?)", [number, name, utcnow()])
            self.con.execute("COMMIT")
        except BaseException:
            self.con.execute("ROLLBACK")
            raise

    def schema_version(self) -> int:
        return self._one("SELECT max(version) FROM schema_migrations")[0]

    def release_cache(self) -> None:
        """Give back the pages DuckDB cached while reading (after a one-off scan whose data now lives
        elsewhere, as the label matrix does): the memory limit (database-wide) is lowered for a moment,
        which evicts them, and always set back to the store's. Best effort: if the database cannot shrink
        now (a query elsewhere holds more), the pages stay cached and nothing fails."""
        try:
            self.con.execute("SET memory_limit = '256MB'")
        except duckdb.Error:
            pass
        finally:
            self.con.execute(f"SET memory_limit = '{self.memory_limit}'")

    def checkpoint(self) -> None:
        """Fold the write-ahead log into the file (before copying the file, or at the end of a run)."""
        self.con.execute("CHECKPOINT")

    @contextmanager
    def writer(self, checkpoint: bool = True) -> Iterator[StoreWriter]:
        """One transaction. Commits on success; on any exception rolls back and re-raises.

        `checkpoint=False` leaves the commit in the write-ahead log (durable all the same) for frequent
        small commits; DuckDB folds the log into the file at its own threshold or at the next checkpoint.
        """
        if self.read_only:
            raise StoreError(f"store {self.path} is open read-only")
        w, committed = None, False
        try:
            self.con.execute("BEGIN")
            w = StoreWriter(self)
            yield w
            w._close()
            self.con.execute("COMMIT")
            committed = True
        except BaseException:
            if not committed:  # an interrupt landing just after COMMIT must not try to roll it back
                self._wait(raise_errors=False)
                if w is not None:
                    w._close()
                try:
                    self.con.execute("ROLLBACK")
                except duckdb.Error:
                    pass  # BEGIN itself failed or was interrupted: nothing is open
            raise
        if checkpoint:
            self.con.execute("CHECKPOINT")

    # -- corpora and dictionaries -----------------------------------------------------------------

    def corpus(self, corpus_id: int) -> Corpus:
        row = self._one("SELECT corpus_id, name, tokenizer, ctx_len, n_contexts, fingerprint "
                        "FROM corpora WHERE corpus_id = ?", [corpus_id])
        if row is None:
            raise StoreError(f"no corpus {corpus_id} in {self.path}")
        return Corpus(*row)

    def corpus_by_fingerprint(self, fingerprint: str) -> Corpus | None:
        row = self._one("SELECT corpus_id FROM corpora WHERE fingerprint = ?", [fingerprint])
        return None if row is None else self.corpus(row[0])

    def dictionaries(self) -> list[Dictionary]:
        rows = self.con.execute("SELECT dictionary_id, name, corpus_id, model, hook, width, kind, source, config "
                                "FROM dictionaries ORDER BY dictionary_id").fetchall()
        return [Dictionary(*r[:8], config=json.loads(r[8])) for r in rows]

    def dictionary(self, name: str | None = None) -> Dictionary:
        """The named dictionary; with no name, the store's only dictionary."""
        dicts = self.dictionaries()
        if name is None:
            if len(dicts) == 1:
                return dicts[0]
            if not dicts:
                raise StoreError(f"store {self.path} holds no dictionary yet: ingest or capture one first")
            raise StoreError(f"store {self.path} holds {len(dicts)} dictionaries "
                             f"({', '.join(d.name for d in dicts)}): pass --dictionary NAME")
        for d in dicts:
            if d.name == name:
                return d
        known = ", ".join(d.name for d in dicts) or "none"
        raise StoreError(f"no dictionary named {name!r} in {self.path} (known: {known})")

    # -- statistics -------------------------------------------------------------------------------

    def feature_stats(self, dictionary_id: int, features: list[int] | None = None,
                      order_by: str = "feature", limit: int | None = None) -> list[FeatureStats]:
        orders = {"feature": "feature", "density": "density DESC, feature", "max": "max_value DESC NULLS LAST, feature"}
        if order_by not in orders:
            raise StoreError(f"cannot sort features by {order_by!r} (choose from {', '.join(orders)})")
        sql = ("SELECT feature, n_firing, n_contexts, density, max_value, mean_value, quantile_edges, "
               "max_context, max_position FROM feature_stats WHERE dictionary_id = ?")
        params: list = [dictionary_id]
        if features is not None:
            sql += " AND feature IN (SELECT unnest(?::UINTEGER[]))"
            params.append(list(map(int, features)))
        sql += f" ORDER BY {orders[order_by]}"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [FeatureStats(r[0], r[1], r[2], r[3], r[4], r[5], tuple(r[6]), r[7], r[8])
                for r in self.con.execute(sql, params).fetchall()]

    def firing_counts(self, dictionary_id: int) -> np.ndarray:
        """n_firing per feature, indexed by feature id (length = width)."""
        t = self.con.execute("SELECT n_firing FROM feature_stats WHERE dictionary_id = ? ORDER BY feature",
                             [dictionary_id]).fetchnumpy()
        return t["n_firing"].astype(np.int64)

    def dictionary_summary(self, dictionary_id: int) -> dict:
        row = self._one("""
            SELECT count(*), count(*) FILTER (WHERE n_firing = 0), sum(n_firing),
                   avg(density) FILTER (WHERE n_firing > 0)
            FROM feature_stats WHERE dictionary_id = ?""", [dictionary_id])
        return {"features": row[0], "dead": row[1], "nonzeros": int(row[2] or 0),
                "mean_density_live": row[3]}

    # -- activations ------------------------------------------------------------------------------

    def plan_chunks(self, dictionary_id: int, features: np.ndarray, max_rows: int) -> list[np.ndarray]:
        """Split sorted feature ids into runs whose range (first..last id, as `read_activations` reads
        it) holds about `max_rows` activation rows at most, the rows of features between the ids
        included: scattered ids are not one read of everything between them.

        A feature with more rows than `max_rows` gets a chunk of its own.
        """
        features = np.asarray(features)
        if not len(features):
            return []
        below = np.concatenate(([0], np.cumsum(self.firing_counts(dictionary_id))))  # rows of features < f
        ends = below[features.astype(np.int64) + 1]  # rows of features <= each id
        chunks, lo = [], 0
        while lo < len(features):
            hi = max(lo + 1, int(np.searchsorted(ends, below[int(features[lo])] + max_rows, side="right")))
            chunks.append(features[lo:hi])
            lo = hi
        return chunks

    def read_activations(self, dictionary_id: int, lo: int, hi: int) -> dict[str, np.ndarray]:
        """All rows of features lo..hi (inclusive), in stored order: (feature, context, position)."""
        return self.con.execute(
            "SELECT feature, context_id, position, value FROM activations "
            "WHERE dictionary_id = ? AND feature BETWEEN ? AND ?", [dictionary_id, lo, hi]).fetchnumpy()

    def neighbor_peaks(self, dictionary_id: int, features: np.ndarray, per_feature: int) -> dict[str, np.ndarray]:
        """Peak locations of each feature's nearest stored neighbours, most similar first."""
        t = self.con.execute("""
            SELECT n.feature, s.max_context AS context, s.max_position AS position FROM (
                SELECT feature, neighbor, similarity,
                       row_number() OVER (PARTITION BY feature ORDER BY similarity DESC, neighbor) AS k
                FROM feature_neighbors
                WHERE dictionary_id = ? AND feature IN (SELECT unnest(?::UINTEGER[]))) n
            JOIN feature_stats s ON s.dictionary_id = ? AND s.feature = n.neighbor
            WHERE n.k <= ? AND s.n_firing > 0
            ORDER BY n.feature, n.k""", [dictionary_id, np.asarray(features).astype(np.int64).tolist(), dictionary_id,
                                        per_feature]).fetchnumpy()
        return {k: np.asarray(t[k]).astype(np.int64) for k in ("feature", "context", "position")}

    # -- contexts ---------------------------------------------------------------------------------

    def context_lengths(self, corpus_id: int) -> np.ndarray:
        t = self.con.execute("SELECT len(token_ids) AS n FROM contexts WHERE corpus_id = ? ORDER BY context_id",
                             [corpus_id]).fetchnumpy()
        return t["n"].astype(np.int64)

    def read_contexts(self, corpus_id: int, context_ids: np.ndarray, with_strings: bool = False) -> dict:
        """Token ids (and optionally strings) of the given contexts, as flat arrays plus offsets.

        Returns {"context_id": sorted unique ids, "offsets": int64 [n+1], "token_ids": int32 flat,
        "tokens": list[str] flat (only with_strings)}.
        """
        ids = np.unique(np.asarray(context_ids, dtype=np.uint32))
        cols = "context_id, token_ids" + (", tokens" if with_strings else "")
        t = self.con.sql(
            f"SELECT {cols} FROM contexts WHERE corpus_id = ? AND context_id IN (SELECT unnest(?::UINTEGER[])) "
            "ORDER BY context_id", params=[corpus_id, ids.tolist()]).to_arrow_table()
        got = t.column("context_id").to_numpy()
        if len(got) != len(ids):
            missing = np.setdiff1d(ids, got)[:5]
            raise StoreError(f"contexts {missing.tolist()} missing from corpus {corpus_id}")
        tok = t.column("token_ids").combine_chunks()
        out = {"context_id": got, "offsets": tok.offsets.to_numpy().astype(np.int64),
               "token_ids": tok.values.to_numpy().astype(np.int32)}
        if with_strings:
            s = t.column("tokens").combine_chunks()
            out["tokens"] = s.values.to_pylist()
        return out

    # -- samples ----------------------------------------------------------------------------------

    def sample_refs(self, dictionary_id: int, feature: int) -> tuple[dict | None, list[tuple]]:
        """The stored sample of one feature: its status row and its window references in order."""
        st = self._one(
            "SELECT s.status, s.reason, s.n_candidates, s.seed, s.created_at, c.config FROM sample_status s "
            "JOIN sampler_configs c USING (config_hash) WHERE s.dictionary_id = ? AND s.feature = ?",
            [dictionary_id, feature])
        if st is None:
            return None, []
        status = dict(zip(("status", "reason", "n_candidates", "seed", "created_at"), st[:5]))
        status["config"] = json.loads(st[5])
        refs = self.con.execute(
            "SELECT sample_set, kind, context_id, start, length FROM samples "
            "WHERE dictionary_id = ? AND feature = ? ORDER BY sample_set, rank", [dictionary_id, feature]).fetchall()
        return status, refs

    def sample_summary(self, dictionary_id: int) -> dict[str, int]:
        rows = self.con.execute("SELECT status, count(*) FROM sample_status WHERE dictionary_id = ? GROUP BY status",
                                [dictionary_id]).fetchall()
        return dict(rows)

    # -- integrity --------------------------------------------------------------------------------

    def content_digest(self) -> str:
        """A hash of every table's content, order-independent: equal digests mean equal stores."""
        import hashlib

        h = hashlib.sha256()
        tables = [r[0] for r in self.con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' "
            "AND table_name <> 'schema_migrations' ORDER BY table_name").fetchall()]
        for t in tables:
            n, x = self._one(f"SELECT count(*), coalesce(sum(hash(t)), 0) FROM {t} t")
            h.update(f"{t}:{n}:{x};".encode())
        return h.hexdigest()


def open_store(path: str | Path, *, read_only: bool = False) -> Store:
    """Open a store, turning unexpected DuckDB failures into a one-line StoreError."""
    try:
        return Store(path, read_only=read_only)
    except AutointerpError:
        raise
    except duckdb.Error as e:
        raise StoreError(f"cannot open store {path}: {str(e).splitlines()[0]}") from None
