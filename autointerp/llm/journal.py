"""The LLM response cache and cost ledger, with a write-ahead journal in front of the store.

Every reply is appended to the client's own journal, `<store>.llm-journal-<id>` (one JSON line,
flushed to the OS), the moment it arrives: a process killed right after still has it, so a rerun
never pays for it twice. The journal is folded into the store's `llm_cache` and `llm_calls` tables in
one transaction whenever the pipeline commits its labels, and at the end of a run; journals left by a
crashed run are folded when the next client opens the store. Folding skips keys and call ids already stored, so a fold repeated
after a crash adds nothing twice. Cost per call: one small file write instead of three DuckDB
statements (~3 ms of CPU), and lookups that miss are answered from a sorted array of key prefixes.
"""

from __future__ import annotations

import fcntl
import json
import os
import uuid
from pathlib import Path
from typing import TextIO

import numpy as np

from ..clock import utcnow
from ..store import Store


def read_journal(path: str | Path) -> tuple[list[tuple], list[dict]]:
    """A journal file's (cache rows, ledger rows); a torn last line (a crash mid-write) is dropped."""
    cache: dict[str, tuple] = {}
    calls: list[dict] = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if "cache" in doc:
            k, prov, model, resp = doc["cache"]
            cache[k] = (prov, model, resp)
        calls.append(doc["call"])
    return [(k, *v) for k, v in cache.items()], calls


class CallLog:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.path = Path(f"{store.path}.llm-journal-{uuid.uuid4().hex[:12]}")
        self._cache: dict[str, tuple[str, str, str]] = {}  # key -> (provider, model, response JSON), not folded
        self._calls: list[dict] = []
        self._fh: TextIO | None = None
        self._recovered = False  # the journals of crashed runs are folded in before this log's first use

    def _ready(self) -> None:
        if not self._recovered:
            self._recovered = True
            self.recover()

    @property
    def _prefixes(self) -> np.ndarray:
        """The store's cache keys (prefixes), as every client of this process has folded them."""
        return self.store.ledger.key_prefixes()

    # -- reading ------------------------------------------------------------------------------------

    def get(self, key: str) -> dict | None:
        self._ready()
        hit = self._cache.get(key)
        if hit is not None:
            return json.loads(hit[2])
        p = np.uint64(int(key[:16], 16))
        i = int(np.searchsorted(self._prefixes, p))
        if i == len(self._prefixes) or self._prefixes[i] != p:
            return None  # certainly not in the store
        return self.store.ledger.cache_get(key)

    # -- writing ------------------------------------------------------------------------------------

    def _append(self, doc: dict) -> None:
        if self._fh is None:
            self._fh = self.path.open("a", encoding="utf-8")
            fcntl.flock(self._fh, fcntl.LOCK_EX | fcntl.LOCK_NB)  # ours while we live: recovery leaves it alone
        self._fh.write(json.dumps(doc, ensure_ascii=False) + "\n")
        self._fh.flush()  # to the OS: survives the process being killed

    def record(self, call: dict, response: dict | None = None) -> None:
        """One ledger row, and the reply to cache when there is one."""
        self._ready()
        call = {**call, "call_id": uuid.uuid4().hex,
                "created_at": utcnow().isoformat()}
        doc: dict = {"call": call}
        if response is not None:
            doc["cache"] = [call["cache_key"], call["provider"], call["model"], json.dumps(response, sort_keys=True)]
        self._append(doc)
        self._take(doc)

    def _take(self, doc: dict) -> None:
        if "cache" in doc:
            k, prov, model, resp = doc["cache"]
            self._cache[k] = (prov, model, resp)
        self._calls.append(doc["call"])

    def fold(self) -> None:
        """Write what the journal holds into the store (one transaction), then empty the journal."""
        if not self._cache and not self._calls:
            return
        with self.store.transaction() as w:
            w.ledger.add_llm_records([(k, *v) for k, v in self._cache.items()], self._calls)
        self.store.ledger.remember_keys(self._cache)
        self._cache.clear()
        self._calls.clear()
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if self.path.exists():
            os.truncate(self.path, 0)

    def recover(self) -> int:
        """Fold the journals crashed runs left behind; a torn last line (the crash itself) is dropped.

        A journal whose owner is alive holds an exclusive lock on its file and is left alone."""
        n = 0
        for path in Path(self.store.path).parent.glob(f"{Path(self.store.path).name}.llm-journal-*"):
            if path == self.path:
                continue
            with path.open("r+", encoding="utf-8") as fh:
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # another live client's journal
                for line in fh.read().splitlines():
                    try:
                        doc = json.loads(line)
                    except ValueError:
                        continue
                    self._take(doc)
                    n += 1
                self.fold()
                path.unlink(missing_ok=True)
        return n

    def close(self) -> None:
        self.fold()
        if self.path.exists() and self.path.stat().st_size == 0:
            self.path.unlink()
