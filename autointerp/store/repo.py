"""What every repository of the store is: a domain's reads and writes over the one shared `Database`.

A repository made by `Store` reads (each read method runs inside `Database.read()`); the same repository
bound to a transaction (`Store.transaction()` hands them out: `tx.labels`, `tx.activations`, ...) also
writes, and its reads see that transaction's own writes.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from ..errors import StoreError

if TYPE_CHECKING:
    import duckdb

    from .db import Database, Transaction

F = TypeVar("F", bound=Callable[..., Any])


def reads(fn: F) -> F:
    """A read method: runs inside a read of the database (one already held by this thread is reused), or
    on the transaction's connection when the repository is bound to one."""

    @functools.wraps(fn)
    def wrapper(self: Repo, *args, **kwargs):
        if self.tx is not None or self.db.holding():
            return fn(self, *args, **kwargs)
        with self.db.read():
            return fn(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


class Repo:
    """A domain's reads and writes; `tx`: the transaction its writes go to (None: reads only)."""

    def __init__(self, db: Database, tx: Transaction | None = None) -> None:
        self.db, self.tx = db, tx

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        if self.tx is not None:
            return self.tx.con
        return self.db.held()

    @property
    def path(self):
        return self.db.path

    @property
    def writing(self) -> Transaction:
        """The transaction this repository writes to (a write outside one is a programming error)."""
        if self.tx is None:
            raise StoreError(f"a write to {self.db.path} outside a transaction (use Store.transaction())")
        return self.tx

    @contextmanager
    def tables(self, **tables) -> Iterator[duckdb.DuckDBPyConnection]:
        """Arrow tables known to the statements of the block under these names (registered on this
        repository's connection, unregistered after, also on an error); yields the connection."""
        con = self.con
        for name, t in tables.items():
            con.register(name, t)
        try:
            yield con
        finally:
            for name in tables:
                con.unregister(name)

    def _one(self, sql: str, params: list | None = None) -> tuple | None:
        """The first row of a query, or None. Reads the result to its end: DuckDB 2 refuses other work on a
        connection (such as registering a table) while a result is left half-read."""
        rows = self.con.execute(sql, params or []).fetchall()
        return rows[0] if rows else None

    def _row(self, sql: str, params: list | None = None) -> tuple[Any, ...]:
        """The first row of a query that always returns one (an aggregate, a row known to exist), read as
        `_one` reads; none is a StoreError."""
        row = self._one(sql, params)
        if row is None:
            raise StoreError(f"a query of {self.db.path} found no row where one is expected")
        return row
