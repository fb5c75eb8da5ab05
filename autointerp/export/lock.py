"""One export at a time to one path.

Every export writes beside its final place (`OUT.tmp`, `.OUT.autointerp-tmp`) and renames into it. Two
exports to one path at once would write, rename and remove each other's temporary files (a traceback,
or a file mixed from both), so each holds a lock first: an advisory lock on `.OUT.autointerp-lock`
beside OUT. The first takes it and writes; a second one finds it held and stops with one line
(ExportError, exit 8) before it touches anything. The lock file is removed when the export ends, and a
lock left by a killed export is free again (the kernel drops it with the process), so the next export
takes it.
"""

from __future__ import annotations

import fcntl
import functools
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import ExportError


def lock_path(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(f".{out.name}.autointerp-lock")


@contextmanager
def exclusive(out: str | Path) -> Iterator[None]:
    """Hold the export lock of `out` inside the block; ExportError at once if another export holds it."""
    out = Path(out)
    path = lock_path(out)
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise ExportError(f"--out {out}: cannot create its lock file {path.name} ({e.strerror or e})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ExportError(f"another export is writing {out} now: nothing written (try again when it is done)") \
                from None
        try:  # the holder before us may have removed the file we opened (and a third made a new one): retry
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        yield
    finally:
        try:
            os.unlink(path)  # while still held: whoever opened this file sees it gone and opens anew
        finally:
            os.close(fd)


def one_export_at_a_time(write):
    """A writer `write(store, out, ...)` run under the export lock of `out`."""

    @functools.wraps(write)
    def locked(store, out, *args, **kwargs):
        with exclusive(out):
            return write(store, out, *args, **kwargs)

    return locked
