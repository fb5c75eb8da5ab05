"""Live captures in progress: their state (reads) and their checkpoints (writes), in one place.

A capture commits every `--checkpoint-tokens`: the contexts packed so far (when it makes the corpus), each
member dictionary's rows so far in a staging table of its own (`capture_<id>_<member>`: feature, context,
position, value, in arrival order), and how many contexts are done. The same command resumes from there.
When the last context is in, the rows move into `activations` sorted by feature (as any dictionary's do), the
dictionaries appear, and the staging tables are dropped, all in one transaction: a reader never sees a half
capture as a dictionary.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from ..clock import utcnow
from .repo import Repo, reads

def staging_table(capture_id: int, member: int) -> str:
    return f"capture_{int(capture_id)}_{int(member)}"


@dataclass(frozen=True)
class CaptureState:
    """One capture's row: its inputs' fingerprint, the corpus it reads or makes, where it stands."""

    capture_id: int
    fingerprint: str
    corpus_id: int
    creates_corpus: bool
    batch_contexts: int
    contexts_done: int
    nonzeros: int
    status: str  # running | done
    members: tuple[dict, ...]  # {"name", "kind", "hook", "source", "width"} in member order
    config: dict

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(m["name"] for m in self.members)




class CaptureRepo(Repo):
    # -- reads --------------------------------------------------------------------------------------

    @reads
    def all(self) -> list[CaptureState]:
        """Every capture row, newest last (a handful: one per capture command ever run on this store)."""
        rows = self.con.execute(
            "SELECT capture_id, fingerprint, corpus_id, creates_corpus, batch_contexts, contexts_done, nonzeros, "
            "status, members, config FROM captures ORDER BY capture_id").fetchall()
        return [CaptureState(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], members=tuple(json.loads(r[8])),
                             config=json.loads(r[9])) for r in rows]

    @reads
    def captures_of(self, names) -> list[CaptureState]:
        """The captures that make (or made) a dictionary of any of these names."""
        want = set(names)
        return [c for c in self.all() if want & set(c.names)]

    @reads
    def corpus_in_progress(self, corpus_id: int) -> CaptureState | None:
        """The unfinished capture still packing this corpus's contexts, if any."""
        return next((c for c in self.all() if c.corpus_id == corpus_id and c.creates_corpus
                     and c.status == "running"), None)

    # -- writes (inside a transaction) --------------------------------------------------------------

    def begin_capture(self, *, fingerprint: str, corpus_id: int, creates_corpus: bool, batch_contexts: int,
                      members: list[dict], config: dict) -> int:
        """A new capture row (status running, nothing done) and an empty staging table per member."""
        cid = self._row("SELECT coalesce(max(capture_id), 0) + 1 FROM captures")[0]
        now = utcnow()
        self.con.execute("INSERT INTO captures (capture_id, fingerprint, corpus_id, creates_corpus, batch_contexts, "
                         "contexts_done, nonzeros, status, members, config, created_at, updated_at) "
                         "VALUES (?, ?, ?, ?, ?, 0, 0, 'running', ?, ?, ?, ?)",
                         [cid, fingerprint, corpus_id, creates_corpus, batch_contexts, json.dumps(members),
                          json.dumps(config, sort_keys=True, default=str), now, now])
        for m in range(len(members)):
            self.con.execute(f"CREATE TABLE {staging_table(cid, m)} (feature UINTEGER, context_id UINTEGER, "
                             "position USMALLINT, value FLOAT)")
        return cid

    def add_capture_rows(self, capture_id: int, member: int, feature: np.ndarray, context: np.ndarray,
                         position: np.ndarray, value: np.ndarray) -> None:
        """Append one member's nonzero activations (in any order: they are sorted when the capture ends)."""
        rows = pa.table({"feature": pa.array(np.asarray(feature, np.uint32)),
                         "context_id": pa.array(np.asarray(context, np.uint32)),
                         "position": pa.array(np.asarray(position, np.uint16)),
                         "value": pa.array(np.asarray(value, np.float32))})
        self.writing.insert(staging_table(capture_id, member), rows)

    def capture_progress(self, capture_id: int, contexts_done: int, nonzeros: int) -> None:
        self.con.execute("UPDATE captures SET contexts_done = ?, nonzeros = ?, updated_at = ? WHERE capture_id = ?",
                         [int(contexts_done), int(nonzeros), utcnow(), capture_id])

    def end_capture(self, state: CaptureState) -> None:
        """Mark a capture done and drop its staging tables (its rows are in `activations` now)."""
        for m in range(len(state.members)):
            self.con.execute(f"DROP TABLE IF EXISTS {staging_table(state.capture_id, m)}")
        self.con.execute("UPDATE captures SET status = 'done', updated_at = ? WHERE capture_id = ?",
                         [utcnow(), state.capture_id])

    def drop_capture(self, state: CaptureState) -> None:
        """Forget a capture (an unfinished one being started over, or a finished one being replaced): its row,
        its staging tables, and the contexts it was packing when no dictionary reads that corpus yet."""
        for m in range(len(state.members)):
            self.con.execute(f"DROP TABLE IF EXISTS {staging_table(state.capture_id, m)}")
        self.con.execute("DELETE FROM captures WHERE capture_id = ?", [state.capture_id])
        if state.creates_corpus and state.status == "running":
            used = self._row("SELECT count(*) FROM dictionaries WHERE corpus_id = ?", [state.corpus_id])[0]
            if not used:
                self.con.execute("DELETE FROM contexts WHERE corpus_id = ?", [state.corpus_id])
                self.con.execute("DELETE FROM corpora WHERE corpus_id = ?", [state.corpus_id])

