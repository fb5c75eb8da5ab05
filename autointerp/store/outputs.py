"""Reads of what features write: output directions and their logit-lens tokens (capture/lens.py).

A mixin of `Store` (which supplies `con`); the writes are `StoreWriter.add_directions` and
`add_output_tokens`.
"""

from __future__ import annotations

import numpy as np

from ..errors import StoreError
from ..records import OutputTokens
from .vectors import _blobs


class OutputReads:
    def has_output_tokens(self, dictionary_id: int) -> bool:
        return self.con.execute("SELECT 1 FROM output_tokens WHERE dictionary_id = ? LIMIT 1",
                                [dictionary_id]).fetchone() is not None

    def output_tokens(self, dictionary_id: int, features) -> dict[int, OutputTokens]:
        """feature -> its OutputTokens, for those of `features` that have them."""
        feats = np.asarray(list(features), np.int64)
        if not len(feats):
            return {}
        rows = self.con.execute(
            "SELECT feature, promoted, promoted_logits, suppressed, suppressed_logits, promoted_ids, suppressed_ids "
            "FROM output_tokens WHERE dictionary_id = ? AND feature BETWEEN ? AND ? "
            "AND feature IN (SELECT unnest(?::UINTEGER[]))",
            [dictionary_id, int(feats.min()), int(feats.max()), feats.tolist()]).fetchall()
        return {int(f): OutputTokens(tuple(zip(p, map(float, pl))), tuple(zip(s, map(float, sl))), tuple(pi), tuple(si))
                for f, p, pl, s, sl, pi, si in rows}

    def directions(self, dictionary_id: int, lo: int = 0, hi: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(features, float16 [n, dim]) output directions of features lo..hi (inclusive; None: to the end)."""
        t = self.con.sql("SELECT feature, direction FROM feature_directions WHERE dictionary_id = ? "
                         "AND feature BETWEEN ? AND ? ORDER BY feature",
                         params=[dictionary_id, lo, 2**32 - 1 if hi is None else hi]).to_arrow_table()
        flat, off = _blobs(t.column("direction"))
        n = len(t)
        return t.column("feature").to_numpy().astype(np.int64), flat.reshape(n, -1) if n else flat.reshape(0, 0)

    def direction_dim(self, dictionary_id: int) -> int | None:
        """The dimension of a dictionary's output directions (None: it has none)."""
        row = self._one("SELECT octet_length(direction) // 2 FROM feature_directions WHERE dictionary_id = ? LIMIT 1",
                        [dictionary_id])
        return None if row is None else int(row[0])

    def directions_of(self, dictionary_id: int, features: np.ndarray) -> np.ndarray:
        """float16 [n, dim] output directions of the given sorted, unique features, in that order."""
        feats = np.asarray(features, np.int64)
        t = self.con.sql("SELECT feature, direction FROM feature_directions WHERE dictionary_id = ? "
                         "AND feature BETWEEN ? AND ? AND feature IN (SELECT unnest(?::UINTEGER[])) ORDER BY feature",
                         params=[dictionary_id, int(feats.min()), int(feats.max()), feats.tolist()]).to_arrow_table()
        if len(t) != len(feats):
            raise StoreError(f"{len(feats) - len(t)} of {len(feats)} features have no output direction")
        flat, _ = _blobs(t.column("direction"))
        return flat.reshape(len(t), -1)
