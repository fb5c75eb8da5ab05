"""The one shared connection object under the store's repositories: which DuckDB instance is open (read-only
between transactions, read-write only inside one), who may use it, and what a failure means.

- `read()`: a connection for a few statements, on this thread (a cursor of the open instance; inside this
  thread's own transaction, the transaction's connection, so a write is seen by the reads after it). A
  read never outlives its block: between blocks the instance may be swapped for a commit.
- `transaction()`: one transaction (a `Transaction`): the instance is swapped for a read-write one (see
  gate.py for how other processes are kept out meanwhile), and swapped back when it ends. Commits on
  success; rolls back and re-raises on any exception, leaving the store exactly as it was.

Reads from other threads of this process go on during a transaction (DuckDB's MVCC: they see committed
data only); only the swaps themselves wait for reads in flight. DuckDB failures become one-line typed
errors: a lock held by another process, a damaged file, a full disk.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import pyarrow as pa

from ..clock import utcnow
from ..errors import AutointerpError, DiskFull, OlderStoreError, StoreBusy, StoreCorrupt, StoreError
from .gate import Gate
from .schema import LATEST_VERSION, MIGRATIONS

if TYPE_CHECKING:
    from concurrent.futures import Future, ThreadPoolExecutor

READ_WAIT = 60.0  # seconds a reader waits for a writer's transaction before it gives up (StoreBusy)
WATCH = 0.02  # seconds between a reader's looks for a commit waiting


class _SwapLock:
    """Many holders of `shared` (reads) or one of `exclusive` (a swap of the instance); a waiting swap goes
    before new reads."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._waiting = 0

    def acquire_shared(self) -> None:
        with self._cond:
            while self._writer or self._waiting:
                self._cond.wait()
            self._readers += 1

    def release_shared(self) -> None:
        with self._cond:
            self._readers -= 1
            if not self._readers:
                self._cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            self._waiting += 1
            try:
                while self._writer or self._readers:
                    self._cond.wait()
            finally:
                self._waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


class Transaction:
    """One open transaction (from `Database.transaction()`): its connection, inserts by column name, and
    what must run before it commits. Valid only inside that `with` block, on the thread that opened it."""

    def __init__(self, db: Database, con: duckdb.DuckDBPyConnection) -> None:
        self.db, self._con = db, con
        self.thread = threading.current_thread()
        self._pending: Future[None] | None = None  # an INSERT running on the background thread
        self._background: ThreadPoolExecutor | None = None
        self._on_close: list[Callable[[], None]] = []
        self.scratch: dict = {}  # what a repository keeps for the length of the transaction

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        """The connection; waits first for a background INSERT to finish, so statements stay in order."""
        if self._pending is not None:
            self._wait()
        return self._con

    def one(self, sql: str, params: list | None = None) -> tuple | None:
        rows = self.con.execute(sql, params or []).fetchall()
        return rows[0] if rows else None

    def insert(self, table: str, rows: pa.Table) -> None:
        """INSERT `rows` into `table` by column name, now."""
        if self._pending is not None:
            self._wait()
        self._insert(table, rows)

    def insert_background(self, table: str, rows: pa.Table) -> None:
        """INSERT `rows` on a background thread, so the caller can prepare the next batch meanwhile (DuckDB
        releases the GIL). At most one is in flight; any later use of `con` waits for it and raises its error."""
        if self._pending is not None:
            self._wait()
        if self._background is None:
            from concurrent.futures import ThreadPoolExecutor

            self._background = ThreadPoolExecutor(1, thread_name_prefix="store-insert")
        self._pending = self._background.submit(self._insert, table, rows)

    def _insert(self, table: str, rows: pa.Table) -> None:
        # DuckDB keeps what a statement scanned referenced until the transaction ends, so a registered
        # table would stay in memory for the whole transaction (an ingest of 540M rows: 8.6 GB more). A
        # reader that hands its batches over one by one leaves nothing behind.
        batches = rows.to_batches()[::-1]

        def drain():
            while batches:
                yield batches.pop()

        name = f"_insert_{threading.get_ident()}"
        self._con.register(name, pa.RecordBatchReader.from_batches(rows.schema, drain()))
        try:
            self._con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM {name}")
        finally:
            self._con.unregister(name)

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
                raise self.db.error(e, "writing to") from None
        except BaseException:
            if raise_errors:
                raise

    def on_close(self, fn: Callable[[], None]) -> None:
        """Run `fn` when the transaction ends, committed or not (drop a staging table)."""
        self._on_close.append(fn)

    def _close(self, raise_errors: bool) -> None:
        self._wait(raise_errors)
        for fn in self._on_close:
            fn()
        self._on_close.clear()
        if self._background is not None:
            self._background.shutdown()
            self._background = None


class Database:
    """A store file as this process uses it. `write=True` makes this process the store's one writer (waiting
    up to `wait` seconds for another); reads are always allowed."""

    def __init__(self, path: str | Path, *, write: bool = False, wait: float | None = None,
                 memory_limit: str = "1GB", threads: int | None = None, read_wait: float = READ_WAIT) -> None:
        self.path = Path(path)
        self.writable = write
        self.memory_limit, self.threads, self.read_wait = memory_limit, threads, read_wait
        self.generation = 0  # +1 each time an instance is opened: what was read before may have changed
        self.memo: dict = {}  # what a repository keeps of the store for this process (the LLM cache's keys)
        self._instance: duckdb.DuckDBPyConnection | None = None
        self._rw = False
        self._swap = _SwapLock()
        self._tx_mutex = threading.Lock()
        self._tx: Transaction | None = None
        self._local = threading.local()
        self._closed = False
        self._watcher: threading.Thread | None = None
        self._stop = threading.Event()
        self.gate = Gate(self.path)
        try:
            if write:
                self.gate.begin_writer(wait)
            self._migrate()
        except BaseException:
            self.close()
            raise

    # -- errors ------------------------------------------------------------------------------------

    def error(self, e: Exception, doing: str = "reading") -> AutointerpError:
        """A DuckDB failure as one line of the right kind."""
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        low = msg.lower()
        if "no space left" in low or "disk is full" in low or "disk quota" in low:
            if doing == "closing":
                return disk_full(self.path, "while folding its write-ahead log into it: what was committed is "
                                            "kept in the log (the next open folds it in)")
            return disk_full(self.path, f"while {doing} it: that transaction was rolled back")
        if "could not set lock on file" in low or "conflicting lock" in low:
            return StoreBusy(f"store {self.path} is held by a process outside autointerp (another DuckDB "
                             "client, or an older autointerp): close it and try again")
        if isinstance(e, (duckdb.SerializationException,)) or any(
                w in low for w in ("corrupt", "checksum", "not a valid duckdb", "invalid database", "wal file",
                                   "replaying wal", "failed to read", "malformed")):
            return StoreCorrupt(f"store {self.path} is damaged or not a DuckDB store: {msg}")
        return StoreError(f"{doing} {self.path} failed: {msg}")

    # -- the instance ------------------------------------------------------------------------------

    def _open(self, rw: bool) -> duckdb.DuckDBPyConnection:
        """Open the instance (the caller holds the swap lock and the gate's side for it); returns it."""
        deadline = time.monotonic() + self.read_wait
        while True:
            try:
                con = duckdb.connect(str(self.path), read_only=not rw)
                break
            except duckdb.Error as e:
                err = self.error(e, "opening")
                if isinstance(err, StoreBusy) and time.monotonic() < deadline:
                    time.sleep(0.05)  # a process outside the gate: it may be closing
                    continue
                raise err from None
        try:
            con.execute(f"SET memory_limit='{self.memory_limit}'")
            con.execute("SET preserve_insertion_order=true")
            if self.threads:
                con.execute(f"SET threads={int(self.threads)}")
        except BaseException:
            con.close()
            raise
        self._instance, self._rw = con, rw
        self.generation += 1
        return con

    def _close_instance(self) -> None:
        con, self._instance = self._instance, None
        if con is None:
            return
        rw, self._rw = self._rw, False
        try:
            con.close()  # a read-write instance folds its write-ahead log into the file here
        except duckdb.Error as e:
            raise self.error(e, "closing") from None
        finally:
            if not rw:
                self.gate.leave_reader()

    def _open_reader(self) -> None:
        with self._swap.exclusive():
            if self._instance is not None:
                return
            if self._closed:
                raise StoreError(f"store {self.path} is closed")
            self.gate.enter_reader(time.monotonic() + self.read_wait)
            try:
                self._open(rw=False)
            except BaseException:
                self.gate.leave_reader()
                raise
            self._start_watcher()

    def _start_watcher(self) -> None:
        if self._watcher is None and self.gate.enabled:
            self._watcher = threading.Thread(target=self._watch, name="store-watch", daemon=True)
            self._watcher.start()

    def _watch(self) -> None:
        """Close the read-only instance when a writer waits to commit (its reads in flight end first)."""
        while not self._stop.wait(WATCH):
            if self._instance is not None and not self._rw and self._tx is None and self.gate.commit_waiting():
                with self._swap.exclusive():
                    if self._instance is not None and not self._rw:
                        self._close_instance()

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        loc = self._local
        if getattr(loc, "generation", None) != self.generation:
            # the caller holds the swap lock shared and saw the instance open: no swap can close it meanwhile
            assert self._instance is not None
            loc.cursor, loc.generation = self._instance.cursor(), self.generation
        return loc.cursor

    @contextmanager
    def read(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection for the statements of the block (see the module's docstring). Read results in full
        inside the block."""
        tx = self._tx
        if tx is not None and tx.thread is threading.current_thread():
            yield tx.con
            return
        loc = self._local
        if getattr(loc, "depth", 0):  # a read inside a read of this thread: the same connection
            loc.depth += 1
            try:
                yield loc.held
            finally:
                loc.depth -= 1
            return
        self._swap.acquire_shared()
        try:
            while self._instance is None:
                self._swap.release_shared()
                try:
                    self._open_reader()
                finally:
                    self._swap.acquire_shared()
            con = self._cursor()
            loc.depth, loc.held = 1, con
            try:
                yield con
            except duckdb.Error as e:
                raise self.error(e) from None
            finally:
                loc.depth, loc.held = 0, None
        finally:
            self._swap.release_shared()

    def holding(self) -> bool:
        """Is this thread inside a read (or its own transaction)?"""
        return bool(getattr(self._local, "depth", 0)) or self.in_transaction()

    def held(self) -> duckdb.DuckDBPyConnection:
        """The connection of the read (or transaction) this thread is inside."""
        tx = self._tx
        if tx is not None and tx.thread is threading.current_thread():  # in_transaction()
            return tx.con
        if not getattr(self._local, "depth", 0):
            raise StoreError(f"a read of {self.path} outside Database.read()")
        return self._local.held

    def in_transaction(self) -> bool:
        tx = self._tx
        return tx is not None and tx.thread is threading.current_thread()

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """One transaction; see the module's docstring."""
        if not self.writable:
            raise StoreError(f"store {self.path} is open read-only")
        if self.in_transaction():
            raise StoreError("a transaction is already open on this thread")
        if self.holding():
            raise StoreError("a transaction inside a read of the same thread (read results in full first)")
        with self._tx_mutex:
            tx, committed, announced = None, False, False
            try:
                with self._swap.exclusive():  # this process's reads wait from here until the file is open to write
                    self.gate.announce_commit()
                    announced = True
                    self._close_instance()
                    self.gate.enter_commit()
                    tx = self._tx = Transaction(self, self._open(rw=True))
                try:
                    tx.con.execute("BEGIN")
                    yield tx
                    tx._close(raise_errors=True)
                    tx.con.execute("COMMIT")
                    committed = True
                except duckdb.Error as e:
                    raise self.error(e, "writing to") from None
            except BaseException:
                if tx is not None and not committed:  # an interrupt just after COMMIT must not roll it back
                    tx._close(raise_errors=False)
                    try:
                        tx._con.execute("ROLLBACK")
                    except duckdb.Error:
                        pass  # BEGIN itself failed, or a failed COMMIT ended it
                raise
            finally:
                with self._swap.exclusive():
                    self._tx = None
                    try:
                        self._close_instance()
                    finally:
                        if announced:
                            self.gate.leave_commit()

    def release_cache(self) -> None:
        """Give back the pages DuckDB cached while reading (after a one-off scan whose data now lives
        elsewhere, as the label matrix does): the memory limit (database-wide) is lowered for a moment,
        which evicts them, and always set back. Best effort: if the database cannot shrink now (a query
        elsewhere holds more), the pages stay cached and nothing fails."""
        with self.read() as con:
            try:
                con.execute("SET memory_limit = '256MB'")
            except duckdb.Error:
                pass
            finally:
                con.execute(f"SET memory_limit = '{self.memory_limit}'")

    def close(self) -> None:
        self._closed = True
        self._stop.set()
        if self._watcher is not None and self._watcher is not threading.current_thread():
            self._watcher.join()
        with self._swap.exclusive():
            try:
                self._close_instance()
            finally:
                self.gate.close()

    # -- schema ------------------------------------------------------------------------------------

    def _migrate(self) -> None:
        version, has = 0, False
        if self.path.exists():
            with self.read() as con:
                has = one_row(con.execute("SELECT count(*) FROM information_schema.tables "
                                          "WHERE table_name = 'schema_migrations'"))[0] > 0
                if has:
                    version = one_row(con.execute("SELECT coalesce(max(version), 0) FROM schema_migrations"))[0]
        if version > LATEST_VERSION:
            raise StoreError(f"store {self.path} has schema version {version}, newer than this autointerp "
                             f"supports ({LATEST_VERSION}); upgrade autointerp to read it")
        pending = [m for m in MIGRATIONS if m[0] > version]
        if not pending:
            return
        if not self.writable:
            raise OlderStoreError(f"store {self.path} has schema version {version}, older than {LATEST_VERSION}; "
                                  "open it once for writing to migrate")
        with self.transaction() as tx:
            if not has:
                tx.con.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, "
                               "name VARCHAR NOT NULL, applied_at TIMESTAMP NOT NULL)")
            for number, name, fn in pending:
                fn(tx.con)
                tx.con.execute("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                               [number, name, utcnow()])


def one_row(result: duckdb.DuckDBPyConnection) -> tuple[Any, ...]:
    """`result.fetchone()` of a statement that always returns a row (an aggregate; an INSERT or UPDATE, its
    count); a statement that returned none is a StoreError, not a `None` indexed further on."""
    r = result.fetchone()
    if r is None:
        raise StoreError("a statement that returns one row returned none")
    return r


def disk_full(path, what: str = "") -> DiskFull:
    """The one line a full disk gets: the path, and the space left on its device."""
    path = Path(path or ".")
    return DiskFull(f"no space left on the device of {path} ({_free(path)} free){' ' + what if what else ''}")


def _free(path: Path) -> str:
    try:
        n: float = shutil.disk_usage(path if path.is_dir() else path.parent).free
    except OSError:
        return "unknown"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"
