"""Reads of stored vectors: a corpus's context encoding and the label embeddings search uses.

A mixin of `Store` (which supplies `con`); the writes are `StoreWriter.add_context_vectors` and
`add_label_vectors`. Vectors are float16 BLOBs, read back without a copy per row: the Arrow binary
column's data buffer is one contiguous block.
"""

from __future__ import annotations


import numpy as np
import pyarrow as pa

from .repo import Repo, reads

DIM = 384


def _blobs(col: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(flat float16 values, int64 offsets in values) of a binary column of float16 arrays."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if len(arr) == 0:
        return np.zeros(0, np.float16), np.zeros(1, np.int64)
    if arr.type != pa.large_binary():
        arr = arr.cast(pa.large_binary())
    _, off, data = arr.buffers()
    offsets = np.frombuffer(off, np.int64, len(arr) + 1, arr.offset * 8)
    flat = np.frombuffer(data, np.uint8)[offsets[0]:offsets[-1]].view(np.float16)
    return flat, (offsets - offsets[0]) // 2


class VectorRepo(Repo):
    # -- reads --------------------------------------------------------------------------------------

    @reads
    def encoded_contexts(self, corpus_id: int, encoding: str) -> np.ndarray:
        """Sorted ids of the contexts whose encoding under `encoding` the store holds."""
        t = self.con.execute("SELECT context_id FROM context_vectors WHERE corpus_id = ? AND encoding = ? "
                             "ORDER BY context_id", [corpus_id, encoding]).fetchnumpy()
        return np.asarray(t["context_id"], np.int64)

    @reads
    def read_context_vectors(self, corpus_id: int, encoding: str, context_ids=None) -> dict[int, np.ndarray]:
        """context id -> float16 [n_tokens, dim] for those of `context_ids` (None: all) the store holds."""
        sql = "SELECT context_id, vectors FROM context_vectors WHERE corpus_id = ? AND encoding = ?"
        params = [corpus_id, encoding]
        if context_ids is not None:
            ids = sorted(int(c) for c in context_ids)
            sql += " AND context_id BETWEEN ? AND ? AND context_id IN (SELECT unnest(?::UINTEGER[]))"
            params += [ids[0] if ids else 0, ids[-1] if ids else -1, ids]
        t = self.con.sql(sql, params=params).to_arrow_table()
        flat, off = _blobs(t.column("vectors"))
        return {int(c): flat[off[i]:off[i + 1]].reshape(-1, DIM)
                for i, c in enumerate(t.column("context_id").to_numpy())}

    @reads
    def label_ids(self, encoding: str, dictionary_id: int | None = None, upto: int | None = None) -> np.ndarray:
        """Sorted ids of the explanations with a stored label embedding (`upto`: only ids up to it)."""
        where = "" if dictionary_id is None else f" AND dictionary_id = {int(dictionary_id)}"
        if upto is not None:
            where += f" AND explanation_id <= {int(upto)}"
        t = self.con.execute(f"SELECT explanation_id FROM label_vectors WHERE encoding = ?{where} ORDER BY 1",
                             [encoding]).fetchnumpy()
        return np.asarray(t["explanation_id"], dtype=np.int64)

    @reads
    def label_matrix(self, encoding: str, dictionary_id: int | None = None,
                     after: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every stored label embedding: (explanation ids, dictionary_id << 32 | feature, float16 [n, dim]),
        in the order stored; `dictionary_id` limits it to one dictionary. Only chosen labels have one, and
        replacing a label removes its vector (`add_labels`), so no join is needed: one scan. Read a batch at
        a time into arrays made once, so memory is the matrix (768 bytes a label) and one batch, never the
        whole column twice; Arrow's pool gives the batches back after. `after`: only explanation ids above it
        (what was written since a reader read up to it)."""
        where = "" if dictionary_id is None else f"AND dictionary_id = {int(dictionary_id)}"
        if after is not None:
            where += f" AND explanation_id > {int(after)}"
        n = self.con.execute(f"SELECT count(*) FROM label_vectors WHERE encoding = ? {where}", [encoding]).fetchall()[0][0]
        ids, keys, matrix = np.empty(n, np.int64), np.empty(n, np.int64), np.empty((n, DIM), np.float16)
        reader = self.con.sql(f"SELECT explanation_id, dictionary_id, feature, vector FROM label_vectors "
                              f"WHERE encoding = ? {where}", params=[encoding]).to_arrow_reader(65_536)
        i = 0
        for batch in reader:
            k = min(batch.num_rows, n - i)  # a label written since the count (never, read-only) is left out
            flat, _ = _blobs(batch.column(3))
            matrix[i:i + k] = flat[:k * DIM].reshape(-1, DIM)
            ids[i:i + k] = batch.column(0).to_numpy()[:k]
            keys[i:i + k] = batch.column(1).to_numpy()[:k].astype(np.int64) << 32 | batch.column(2).to_numpy()[:k]
            i += k
            del batch, flat
        pa.default_memory_pool().release_unused()
        self.db.release_cache()  # the vectors' pages, cached as they were read, would double the memory held
        return ids[:i], keys[:i], matrix[:i]

    @reads
    def unindexed_labels(self, encoding: str, dictionary_id: int | None = None) -> list[tuple[int, int, int, str]]:
        """Chosen explanations with no label embedding under `encoding`: (dictionary_id, explanation_id,
        feature, text). Gold dictionaries' (calibration's planted features) are never searched: left out."""
        where = "" if dictionary_id is None else f"AND e.dictionary_id = {int(dictionary_id)}"
        return self.con.execute(
            "SELECT e.dictionary_id, e.explanation_id, e.feature, e.text FROM explanations e WHERE e.chosen "
            f"{where} AND NOT EXISTS (SELECT 1 FROM label_vectors v WHERE v.explanation_id = e.explanation_id "
            "AND v.encoding = ?) AND e.dictionary_id NOT IN (SELECT dictionary_id FROM dictionaries WHERE kind = 'gold') "
            "ORDER BY e.explanation_id", [encoding]).fetchall()

    @reads
    def label_vectors_of(self, encoding: str, explanation_ids: np.ndarray) -> dict[int, np.ndarray]:
        """The stored label embeddings (float32) of those of `explanation_ids` that have one."""
        ids = np.asarray(explanation_ids, np.int64).tolist()
        rows = self.con.execute("SELECT explanation_id, vector FROM label_vectors WHERE encoding = ? AND "
                                "explanation_id IN (SELECT unnest(?::BIGINT[]))", [encoding, ids]).fetchall()
        return {int(e): np.frombuffer(v, np.float16).astype(np.float32) for e, v in rows}

    # -- writes (inside a transaction) --------------------------------------------------------------

    def add_label_vectors(self, dictionary_id: int, encoding: str, rows: list[tuple[int, int, str]],
                          vectors: np.ndarray) -> None:
        """Label embeddings (float16) of explanations (explanation_id, feature, text), for search."""
        if not rows:
            return
        v = np.ascontiguousarray(vectors, dtype=np.float16)
        ids = pa.array([r[0] for r in rows], pa.int64())
        with self.tables(_vec_ids=pa.table({"explanation_id": ids})) as con:
            con.execute("DELETE FROM label_vectors WHERE encoding = ? AND explanation_id IN "
                        "(SELECT explanation_id FROM _vec_ids)", [encoding])
        self.writing.insert("label_vectors", pa.table({
            "explanation_id": ids, "dictionary_id": pa.array([dictionary_id] * len(rows), pa.uint16()),
            "feature": pa.array([r[1] for r in rows], pa.uint32()), "encoding": [encoding] * len(rows),
            "vector": pa.array([x.tobytes() for x in v], pa.binary())}))

    def add_context_vectors(self, corpus_id: int, encoding: str, vectors: dict[int, np.ndarray]) -> None:
        """A corpus's context encoding: context id -> float16 [n_tokens, dim]."""
        if not vectors:
            return
        ids = sorted(vectors)
        self.writing.insert("context_vectors", pa.table({
            "corpus_id": pa.array([corpus_id] * len(ids), pa.int32()), "context_id": pa.array(ids, pa.uint32()),
            "encoding": [encoding] * len(ids),
            "vectors": pa.array([np.ascontiguousarray(vectors[c], np.float16).tobytes() for c in ids], pa.binary())}))

