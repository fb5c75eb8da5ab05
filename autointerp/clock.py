"""The one clock: naive UTC datetimes (what the store's TIMESTAMP columns hold) and ISO strings for logs."""

from __future__ import annotations

from datetime import datetime, timezone


def utcnow() -> datetime:
    """Now, in UTC, without tzinfo (DuckDB TIMESTAMP)."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def utc_iso(timespec: str = "milliseconds") -> str:
    """Now, in UTC, as ISO 8601 with the offset (logs, lock files)."""
    return datetime.now(timezone.utc).isoformat(timespec=timespec)
