"""Progress of long commands on stderr: a bar on a terminal; otherwise (piped, under cron, in CI) one status
line every `every` seconds (AUTOINTERP_STATUS_SECONDS, default 10), so a log shows the run is alive and how far it
is, without a bar's noise."""

from __future__ import annotations

import os
import sys
import time

from tqdm import tqdm

STATUS_SECONDS = 10.0


def status_seconds() -> float:
    """Seconds between status lines: AUTOINTERP_STATUS_SECONDS when set (0: a line at every update)."""
    try:
        return max(0.0, float(os.environ.get("AUTOINTERP_STATUS_SECONDS", STATUS_SECONDS)))
    except ValueError:
        return STATUS_SECONDS


class Progress:
    """`enabled`: report at all (the CLI turns it off for --json). `tty`: draw a bar (default: stderr is a
    terminal); else print "desc: done/total unit (rate/s) note" lines every `every` seconds, and a last one."""

    def __init__(self, total: int | None, desc: str, unit: str = "it", enabled: bool = True, *, tty: bool | None = None,
                 every: float | None = None, stream=None, unit_scale: bool = False) -> None:
        self.total, self.desc, self.unit = total, desc, unit
        self.every = status_seconds() if every is None else every
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = self.stream.isatty() if tty is None else tty
        self.n, self.note = 0, ""
        self.said = -1  # the count the last status line reported
        self.t0 = self.last = time.monotonic()
        self.bar = tqdm(total=total, unit=unit, desc=desc, unit_scale=unit_scale, file=self.stream) \
            if enabled and self.tty else None

    def update(self, n: int, note: str = "") -> None:
        self.n += n
        self.note = note or self.note
        if self.bar is not None:
            self.bar.update(n)
            if note:
                self.bar.set_postfix_str(note, refresh=False)
        elif self.enabled and time.monotonic() - self.last >= self.every:
            self._line()

    def _line(self) -> None:
        self.last = now = time.monotonic()
        self.said = self.n
        rate = self.n / max(now - self.t0, 1e-9)
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        of = f"/{self.total:,}" if self.total else ""
        self.stream.write(f"{self.desc}: {self.n:,}{of} {self.unit}{pct}, {rate:,.1f}/s, "
                          f"{now - self.t0:.0f} s" + (f"; {self.note}" if self.note else "") + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.enabled and self.n and self.n != self.said and time.monotonic() - self.t0 >= self.every:
            self._line()  # a long run ends with its final count (once: not again if the last line said it)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
