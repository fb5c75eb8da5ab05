"""The capture loop's two halves: the device side (forward pass, encode, nonzeros) and the store side (a
background thread with a bounded queue that copies the nonzeros to the host and writes them).

The device side keeps everything on the model's device: one forward pass feeds every member, each SAE
encodes a block of tokens at a time (so a 2^20-wide SAE never holds a [batch_tokens, d_sae] float32 block
over `ENCODE_BYTES`), and only the nonzero (token, feature, value) triples leave the device, 12 bytes each.
On a CUDA device the copy to pinned host memory is issued on a side stream and waited for by the writer
thread, so the GPU goes on with the next batch while DuckDB writes the last one; the queue is bounded, so a
store slower than the GPU holds the GPU back rather than filling the host's memory.

The store side commits every `commit_contexts` contexts (a checkpoint): the contexts (when the capture packs
the corpus), each member's rows, and how far it got. An interrupt commits what is queued; any other error
rolls the open checkpoint back. Either way what was committed before stays, and the same command resumes.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass

import duckdb
import numpy as np
import torch

from ..errors import CaptureError, StoreError
from ..store import Store
from ..store.captures import CaptureState
from .model import run_hooks
from .plan import Member

ENCODE_BYTES = {"cpu": 256 << 20, "cuda": 2 << 30, "mps": 512 << 20}
QUEUE_BATCHES = 4
_END, _STOP = "end", "stop"


@dataclass
class Batch:
    """One forward pass's output on its way to the store: contexts `first`.. of token `ids` [b, ctx_len], and
    per member (token index within the batch, feature, value) arrays, on the host once `ready` has fired."""

    first: int
    ids: np.ndarray
    rows: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
    ready: torch.cuda.Event | None = None

    def host(self) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        if self.ready is not None:
            self.ready.synchronize()
        return [(tok.cpu().numpy(), feat.cpu().numpy(), val.cpu().numpy()) for tok, feat, val in self.rows]


class DeviceSide:
    """Runs batches of contexts through the model and every member's encoder on `device`."""

    def __init__(self, net: torch.nn.Module, members: list[Member], device: torch.device, threshold: float,
                 special_ids: np.ndarray) -> None:
        self.net, self.members, self.device, self.threshold = net, members, device, threshold
        self.points = [m.point for m in members]
        self.special = torch.as_tensor(special_ids, dtype=torch.long, device=device)
        self.copy_stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        self.budget = ENCODE_BYTES.get(device.type, ENCODE_BYTES["cpu"])
        self._first = 0  # the batch being run (for messages)

    @torch.no_grad()
    def widths(self, ids: np.ndarray) -> list[int]:
        """Each member's hook width, from one forward pass over `ids`."""
        xs = run_hooks(self.net, self.points, torch.tensor(ids, dtype=torch.long, device=self.device))
        return [int(x.shape[-1]) for x in xs]

    @torch.no_grad()
    def run(self, first: int, ids: np.ndarray) -> tuple[Batch, int]:
        """(the batch's nonzeros on their way to the host, how many there are). Out of device memory, or a
        value that is not finite (a model overflowing in float16), is one line naming what to change."""
        try:
            return self._run(first, ids)
        except torch.OutOfMemoryError:
            raise CaptureError(f"out of memory on {self.device} with batches of {ids.size:,} tokens: lower "
                               "--batch-tokens") from None

    def _run(self, first: int, ids: np.ndarray) -> tuple[Batch, int]:
        self._first = first
        t = torch.tensor(ids, dtype=torch.long).to(self.device, non_blocking=True)
        xs = run_hooks(self.net, self.points, t)
        keep = ~torch.isin(t, self.special).reshape(-1)  # special tokens are never recorded
        rows, n = [], 0
        for m, x in zip(self.members, xs):
            tok, feat, val = self._nonzeros(m, x.reshape(-1, x.shape[-1]), keep)
            rows.append((tok, feat, val))
            n += len(val)
        batch = Batch(first, ids, rows)
        if self.copy_stream is not None:
            batch.rows, batch.ready = self._to_host(self.copy_stream, rows)
        return batch, n

    def _nonzeros(self, m: Member, x: torch.Tensor, keep: torch.Tensor):
        """(token, feature, value) of every value above the threshold at a token that is not special."""
        width = m.sae.d_sae if m.sae is not None else x.shape[-1]
        step = max(1, self.budget // (4 * width))
        parts = []
        for lo in range(0, len(x), step):
            if m.sae is not None and self.threshold >= 0:
                row, feat, val = m.sae.encode_sparse(x[lo:lo + step], self.threshold)
                ok = keep[lo:lo + step][row]
                row, feat, val = row[ok], feat[ok], val[ok]
            else:
                acts = m.sae.encode(x[lo:lo + step]) if m.sae is not None else x[lo:lo + step]
                sel = (acts > self.threshold) & keep[lo:lo + step, None]
                where = sel.nonzero()
                row, feat, val = where[:, 0], where[:, 1], acts[sel]
            val = val.float()
            if not bool(torch.isfinite(val).all()):
                raise CaptureError(f"{m.name}: values that are not finite (NaN or infinity) at contexts from "
                                   f"{self._first}: the model overflows in its dtype; use --dtype float32 or "
                                   "bfloat16")
            nz = val != 0  # a threshold below zero must not store the zeros
            parts.append(((row[nz] + lo).to(torch.int32), feat[nz].to(torch.int32), val[nz]))
        if len(parts) == 1:
            return parts[0]
        return tuple(torch.cat(p) for p in zip(*parts))

    def _to_host(self, stream: torch.cuda.Stream, rows):
        """Issue the device-to-host copies on the side stream; the writer thread waits on the event."""
        stream.wait_stream(torch.cuda.current_stream(self.device))
        out = []
        with torch.cuda.stream(stream):
            for r in rows:
                host = []
                for t in r:
                    h = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
                    h.copy_(t, non_blocking=True)
                    t.record_stream(stream)
                    host.append(h)
                out.append(tuple(host))
        ready = torch.cuda.Event()
        ready.record(stream)
        return out, ready


class StoreSide(threading.Thread):
    """Owns the store while a capture runs: takes batches from a bounded queue, writes them, and commits a
    checkpoint every `commit_contexts` contexts."""

    def __init__(self, store: Store, state: CaptureState, strings, writes_contexts: bool,
                 commit_contexts: int) -> None:
        super().__init__(name="capture-store", daemon=True)
        self.store, self.state, self.strings = store, state, strings
        self.writes_contexts, self.commit_contexts = writes_contexts, commit_contexts
        self.queue: queue.Queue = queue.Queue(QUEUE_BATCHES)
        self.done, self.nonzeros = state.contexts_done, state.nonzeros
        self.error: BaseException | None = None

    def put(self, batch: Batch) -> None:
        """Hand a batch over (waits while the queue is full); raises the writer's error if it stopped."""
        while True:
            if self.error is not None:
                raise self.error
            try:
                self.queue.put(batch, timeout=0.5)
                return
            except queue.Full:
                continue

    def finish(self, interrupted: bool = False, failed: bool = False) -> None:
        """Commit what is queued (or, `failed`, roll the open checkpoint back) and wait for the thread."""
        signal = _STOP if failed else _END
        while self.is_alive():
            try:
                self.queue.put(signal, timeout=0.5)
                break
            except queue.Full:
                if failed:  # drop what is queued: it will not be committed
                    try:
                        self.queue.get_nowait()
                    except queue.Empty:
                        pass
        self.join()
        if self.error is not None and not (interrupted or failed):
            raise self.error

    def run(self) -> None:
        try:
            finished = False
            while not finished:
                with self.store.transaction() as w:
                    if self.writes_contexts:
                        w.activations.continue_corpus(self.state.corpus_id)
                    since = 0
                    while since < self.commit_contexts:
                        item = self.queue.get()
                        if item is _STOP:
                            raise _Rollback
                        if item is _END:
                            finished = True
                            break
                        since += self._write(w, item)
                    w.captures.capture_progress(self.state.capture_id, self.done, self.nonzeros)
        except _Rollback:
            pass
        except duckdb.Error as e:  # a full disk, a damaged file: one line, not a traceback
            self.error = StoreError(f"writing to {self.store.path} failed: {str(e).strip().splitlines()[0]}")
        except BaseException as e:  # handed to the device side at its next put()
            self.error = e

    def _write(self, w, b: Batch) -> int:
        if b.first != self.done:
            raise RuntimeError(f"capture batches out of order: got context {b.first}, expected {self.done}")
        if self.writes_contexts:
            w.activations.add_contexts(self.state.corpus_id, list(b.ids), self.strings(b.ids))
        ctx_len = b.ids.shape[1]
        for m, (tok, feat, val) in enumerate(b.host()):
            tok = tok.astype(np.int64)
            w.captures.add_capture_rows(self.state.capture_id, m, feat, tok // ctx_len + b.first, tok % ctx_len, val)
            self.nonzeros += len(val)
        self.done += len(b.ids)
        return len(b.ids)


class _Rollback(Exception):
    """Raised inside the writer's transaction to roll the open checkpoint back."""
