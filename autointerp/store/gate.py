"""How processes share one store file: many readers, one writer, and a writer's commit never waits on a reader
for longer than the reader's query.

DuckDB lets one process hold a file for writing and then no other process may even read it. So no process
keeps the file open for writing: a writer reads, like everyone else, through a read-only instance, and opens
the file for writing only for the length of a transaction (`Database.transaction`). Three advisory locks
(flock, freed by the kernel when a process dies, even by kill -9) beside the store order this:

- `<store>.write.lock`: held (exclusive) for a whole writer session, so writers keep today's rule, one at a
  time (`--wait` waits); its text names the holder for the message the next writer gets.
- `<store>.read.lock`: every process holding the file open read-only holds it shared; a commit holds it
  exclusive, so it opens the file for writing only when no reader has it open.
- `<store>.turn.lock`: a writer about to commit takes it exclusive first. Readers pass it (shared, for a
  moment) before they take `read.lock`, so no new reader gets in while a commit waits, and each reader's
  watcher sees it taken and closes its instance once its queries in flight end. Without it a server with
  requests always in flight would keep `read.lock` forever.

A folder where the lock files cannot be made (a read-only mount): the gate is off, and the store is shared
as DuckDB alone allows (readers only).
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import sys
import time
from pathlib import Path
from typing import TextIO

from ..clock import utc_iso
from ..errors import StoreBusy, StoreError

LOCK_SUFFIXES = (".write.lock", ".read.lock", ".turn.lock")
POLL = 0.02  # seconds between tries of a lock that is waited for with a deadline


class Gate:
    """The three locks of one store, as one process holds them (one open file each)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._files: dict[str, TextIO] = {}
        self.enabled = True
        try:
            for name in ("write", "read", "turn"):
                self._files[name] = open(f"{self.path}.{name}.lock", "a+", encoding="utf-8")
            # the watcher's look at the turnstile goes through a file of its own: a lock taken through one
            # open file is converted, not tested, by a second flock on it (this process's own commit included)
            self._files["probe"] = open(f"{self.path}.turn.lock", "a+", encoding="utf-8")
        except OSError as e:
            if e.errno not in (errno.EACCES, errno.EROFS, errno.EPERM):
                raise StoreError(f"cannot make the lock files beside {self.path}: {e.strerror}") from None
            self.close()
            self.enabled = False

    def close(self) -> None:
        for fh in self._files.values():
            fh.close()  # closing frees what it holds
        self._files.clear()

    def _try(self, name: str, how: int) -> bool:
        try:
            fcntl.flock(self._files[name], how | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False

    def _wait(self, name: str, how: int, deadline: float | None) -> bool:
        """Take a lock, waiting until `deadline` (monotonic; None: for ever). False when the deadline passed."""
        if deadline is None:
            fcntl.flock(self._files[name], how)
            return True
        while not self._try(name, how):
            if time.monotonic() >= deadline:
                return False
            time.sleep(POLL)
        return True

    def _unlock(self, name: str) -> None:
        fcntl.flock(self._files[name], fcntl.LOCK_UN)

    # -- a writer session --------------------------------------------------------------------------

    def begin_writer(self, wait: float | None) -> None:
        """One writer at a time: take `write.lock` (waiting up to `wait` seconds; None: not at all) and write
        who holds it."""
        if not self.enabled:
            return
        fh = self._files["write"]
        deadline = time.monotonic() + (wait or 0)
        if not self._wait("write", fcntl.LOCK_EX, deadline):
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            waited = f" (waited {wait:g} s)" if wait else ""
            raise StoreBusy(f"store {self.path} is being written by {holder}{waited}: one writer at a time")
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on {socket.gethostname()} ({_command()}, since {utc_iso('seconds')})")
        fh.flush()

    def writer_holder(self) -> str:
        """Who holds the writer lock, as its holder wrote it ("" when nobody does)."""
        if not self.enabled or self._try("write", fcntl.LOCK_SH):
            if self.enabled:
                self._unlock("write")
            return ""
        fh = self._files["write"]
        fh.seek(0)
        return fh.read().strip()

    # -- readers -----------------------------------------------------------------------------------

    def enter_reader(self, deadline: float | None) -> None:
        """Before opening the file read-only: past the turnstile (a commit waiting goes first), then
        `read.lock` shared. Past `deadline`: StoreBusy (a long transaction holds the file)."""
        if not self.enabled:
            return
        if not self._wait("turn", fcntl.LOCK_SH, deadline):
            raise self._busy()
        try:
            if not self._wait("read", fcntl.LOCK_SH, deadline):
                raise self._busy()
        finally:
            self._unlock("turn")

    def leave_reader(self) -> None:
        """After closing the read-only instance."""
        if self.enabled:
            self._unlock("read")

    def commit_waiting(self) -> bool:
        """Does a writer wait to commit (the turnstile is taken)? A reader's watcher asks every few ms."""
        if not self.enabled:
            return False
        if self._try("probe", fcntl.LOCK_SH):
            self._unlock("probe")
            return False
        return True

    def _busy(self) -> StoreBusy:
        holder = self.writer_holder() or "another process"
        return StoreBusy(f"store {self.path} is being written by {holder} in one long transaction; "
                         "try again when it ends")

    # -- a commit ----------------------------------------------------------------------------------

    def announce_commit(self) -> None:
        """A writer about to commit: take the turnstile (readers stop coming in)."""
        if self.enabled:
            self._wait("turn", fcntl.LOCK_EX, None)

    def enter_commit(self) -> None:
        """With this process's own read-only instance closed: wait until no reader has the file open."""
        if self.enabled:
            self._wait("read", fcntl.LOCK_EX, None)

    def leave_commit(self) -> None:
        if self.enabled:
            self._unlock("read")
            self._unlock("turn")


def _command() -> str:
    if not sys.argv or not sys.argv[0]:
        return "python"
    prog = Path(sys.argv[0])
    name = prog.parent.name if prog.name == "__main__.py" else prog.name  # python -m autointerp: its folder
    return " ".join([name, *sys.argv[1:3]])


def lock_files(path: Path) -> list[Path]:
    """The lock files beside a store (removed with a store a failed first command made)."""
    return [Path(f"{path}{s}") for s in LOCK_SUFFIXES]
