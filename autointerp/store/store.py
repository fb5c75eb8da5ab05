"""The DuckDB store: one file holding corpora, dictionaries, sparse activations, statistics, samples, labels,
grades and ledgers.

All SQL of autointerp lives in this package, by domain, one repository each (reads and writes together):
`activations` (corpora, contexts, dictionaries, activations, statistics, directions), `samples`, `labels`
(labels, grades, outcomes), `vectors` (label and context embeddings), `ledger` (LLM cache, cost ledger,
batches, job runs), `matches`, `captures`. They share one `Database` (db.py): the connection, the
transactions, and how processes share the file (gate.py: many readers beside one writer).

    store = Store(path)                       # the one writer of this store (read_only=True: a reader)
    store.labels.label_summary(d)             # a read
    with store.transaction() as tx:           # one transaction: everything or nothing
        tx.labels.add_labels(d, labels)
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import numpy as np

from ..errors import AutointerpError, OlderStoreError, StoreError
from ..records import Corpus, Dictionary
from .activations import ActivationRepo
from .calibrations import CalibrationRepo
from .captures import CaptureRepo
from .db import READ_WAIT, Database, Transaction, one_row
from .labels import LabelRepo
from .ledger import LedgerRepo
from .matches import MatchRepo
from .samples import SampleRepo
from .vectors import VectorRepo


class Rows:
    """The rows of a query already read (`Store.query`)."""

    def __init__(self, rows: list[tuple], columns: list[str]) -> None:
        self.rows, self.columns = rows, columns

    def fetchnumpy(self) -> dict[str, np.ndarray]:
        return {c: np.asarray([r[i] for r in self.rows]) for i, c in enumerate(self.columns)}

    def fetchall(self) -> list[tuple]:
        return self.rows

    def fetchone(self) -> tuple | None:
        return self.rows[0] if self.rows else None


class Repos:
    """The repositories over one database; bound to a transaction (`StoreTx`), they also write."""

    def __init__(self, db: Database, tx: Transaction | None = None) -> None:
        self.activations = ActivationRepo(db, tx)
        self.samples = SampleRepo(db, tx)
        self.labels = LabelRepo(db, tx)
        self.vectors = VectorRepo(db, tx)
        self.ledger = LedgerRepo(db, tx)
        self.matches = MatchRepo(db, tx)
        self.captures = CaptureRepo(db, tx)
        self.calibrations = CalibrationRepo(db, tx)


class StoreTx(Repos):
    """One open transaction (`Store.transaction()`): the repositories that write to it, and the transaction
    itself (`tx.raw`) for a statement of the caller's own."""

    def __init__(self, db: Database, tx: Transaction) -> None:
        super().__init__(db, tx)
        self.raw = tx


class Store(Repos):
    """A store file. `Store(path)` opens it as this process's one writer (creating and migrating it; `wait`:
    seconds to wait for another writer); `Store(path, read_only=True)` as a reader. Readers and the writer
    work side by side; see db.py and gate.py."""

    def __init__(self, path: str | Path, *, read_only: bool = False, wait: float | None = None,
                 memory_limit: str = "1GB", threads: int | None = None, read_wait: float = READ_WAIT) -> None:
        self.path = Path(path)
        self.read_only = read_only
        if read_only and not self.path.exists():
            raise StoreError(f"no store at {self.path}")
        self.db = Database(self.path, write=not read_only, wait=wait, memory_limit=memory_limit, threads=threads,
                           read_wait=read_wait)
        super().__init__(self.db)

    # -- lifecycle ---------------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[StoreTx]:
        """One transaction: commits when the block ends, rolls back (store unchanged) when it raises. Every
        transaction ends with the file closed for writing, its log folded in (readers open it next)."""
        with self.db.transaction() as tx:
            yield StoreTx(self.db, tx)

    @contextmanager
    def read(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection for statements of the caller's own (read results in full inside the block)."""
        with self.db.read() as con:
            yield con

    def sql(self, query: str, params: list | None = None) -> list[tuple]:
        """All rows of one query of the caller's own (tests, notebooks)."""
        with self.db.read() as con:
            return con.execute(query, params or []).fetchall()

    def query(self, query: str, params: list | None = None) -> Rows:
        """One query of the caller's own, read in full: `.fetchall()`, `.fetchone()` as DuckDB's."""
        with self.db.read() as con:
            cur = con.execute(query, params or [])
            rows = cur.fetchall()
            return Rows(rows, [d[0] for d in cur.description or []])

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def schema_version(self) -> int:
        return self.sql("SELECT max(version) FROM schema_migrations")[0][0]

    def release_cache(self) -> None:
        self.db.release_cache()

    # -- the catalogue (what most callers ask first) -------------------------------------------------

    def dictionaries(self) -> list[Dictionary]:
        return self.activations.dictionaries()

    def dictionary(self, name: str | None = None) -> Dictionary:
        """The named dictionary; with no name, the store's only dictionary."""
        return self.activations.dictionary(name)

    def corpus(self, corpus_id: int) -> Corpus:
        return self.activations.corpus(corpus_id)

    # -- integrity ---------------------------------------------------------------------------------

    def content_digest(self) -> str:
        """A hash of every table's content, order-independent: equal digests mean equal stores."""
        h = hashlib.sha256()
        with self.db.read() as con:
            tables = [r[0] for r in con.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' "
                "AND table_name NOT IN ('schema_migrations', 'label_changes') ORDER BY table_name").fetchall()]
            for t in tables:
                n, x = one_row(con.execute(f"SELECT count(*), coalesce(sum(hash(t)), 0) FROM {t} t"))
                h.update(f"{t}:{n}:{x};".encode())
        return h.hexdigest()


def open_store(path: str | Path, *, read_only: bool = False, wait: float | None = None) -> Store:
    """Open a store, turning unexpected DuckDB failures into a one-line StoreError. A store made by an earlier
    autointerp opened for reading is migrated first (opened once for writing)."""
    try:
        try:
            return Store(path, read_only=read_only, wait=wait)
        except OlderStoreError:
            Store(path, wait=wait).close()
            return Store(path, read_only=read_only, wait=wait)
    except AutointerpError:
        raise
    except duckdb.Error as e:
        raise StoreError(f"cannot open store {path}: {str(e).splitlines()[0]}") from None
