"""A dictionary's activations and per-feature statistics, streamed into the store inside one transaction
(`ActivationRepo.add_dictionary` hands a DictionaryBuilder out): checked, clustered by (feature, context,
position), appended on a background thread, statistics computed in numpy as rows arrive."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np
import pyarrow as pa

from ..arrays import feature_stats, is_sorted_rows, sort_rows
from ..errors import IngestError

if TYPE_CHECKING:
    import duckdb

    from .db import Transaction

MAX_POSITION = 2**16 - 1  # positions are stored as USMALLINT


class Rows(Protocol):
    """What a builder needs of the repository that made it (an ActivationRepo bound to the transaction)."""

    @property
    def con(self) -> duckdb.DuckDBPyConnection: ...

    @property
    def writing(self) -> Transaction: ...

    def _one(self, sql: str, params: list | None = None) -> tuple | None: ...

    def context_lengths(self, corpus_id: int) -> np.ndarray: ...

    def read_activations(self, dictionary_id: int, lo: int, hi: int) -> dict[str, np.ndarray]: ...


def set_activation_hashes(con, dictionary_id: int) -> None:
    """feature_stats.act_hash: a fingerprint of each feature's activations (order-free: an XOR of row
    hashes; 0 for a dead feature), so a label can tell when the activations it was made from changed."""
    con.execute("""
        UPDATE feature_stats f SET act_hash = coalesce(h.x, 0)
        FROM (SELECT r.range AS feature, a.x FROM range((SELECT max(feature) + 1 FROM feature_stats
                                                          WHERE dictionary_id = $1)) r
              LEFT JOIN (SELECT feature, bit_xor(hash(context_id, position, value)) AS x FROM activations
                         WHERE dictionary_id = $1 GROUP BY feature) a ON a.feature = r.range) h
        WHERE f.dictionary_id = $1 AND f.feature = h.feature""", [dictionary_id])


def _sorted_cells(f, c, p, v):
    """Rows in (feature, context, position) order; a cell given twice is an error."""
    if not is_sorted_rows(f, c, p):
        f, c, p, v = sort_rows(f, c, p, v)
        if not is_sorted_rows(f, c, p):
            raise IngestError("duplicate (feature, context, position) cells in the activations")
    return f, c, p, v


@dataclass
class DictionaryBuilder:
    """Appends one dictionary's activations, validating every chunk; `finish()` writes its statistics."""

    repo: Rows  # the ActivationRepo bound to the transaction the dictionary is made in
    dictionary_id: int
    corpus_id: int
    width: int
    sorted_input: bool
    n_rows: int = 0
    _lengths: np.ndarray | None = None
    _carry: dict | None = None  # rows of the last feature seen, held until the feature is complete
    _last_feature: int = -1
    _staging: str | None = None
    _checked: bool = False  # staged rows known to hold no cell twice
    _stats_parts: list = field(default_factory=list)

    def append(self, feature, context, position, value) -> None:
        """Append rows (any integer/float arrays of equal length). Exact zeros are dropped."""
        feature, context, position, value = (np.asarray(x) for x in (feature, context, position, value))
        n = len(feature)
        if not (len(context) == len(position) == len(value) == n):
            raise IngestError(f"activation columns disagree in length: feature {n}, context {len(context)}, "
                              f"position {len(position)}, value {len(value)}")
        if n == 0:
            return
        value = value.astype(np.float32, copy=False)
        bad = ~np.isfinite(value)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise IngestError(f"{int(bad.sum())} activation values are NaN or Inf (first: feature {int(feature[i])}, "
                              f"context {int(context[i])}, position {int(position[i])})")
        keep = value != 0
        if not keep.all():
            feature, context, position, value = feature[keep], context[keep], position[keep], value[keep]
            if len(feature) == 0:
                return
        self._check_ranges(feature, context, position)
        feature = feature.astype(np.uint32, copy=False)
        context = context.astype(np.uint32, copy=False)
        position = position.astype(np.uint16, copy=False)
        if self.sorted_input:
            self._append_sorted(feature, context, position, value)
        else:
            self._append_staged(feature, context, position, value)

    def _check_ranges(self, feature, context, position) -> None:
        if self._lengths is None or len(self._lengths) == 0 or context.max() >= len(self._lengths):
            self._lengths = self.repo.context_lengths(self.corpus_id)
        n_ctx = len(self._lengths)
        if feature.min() < 0 or feature.max() >= self.width:
            raise IngestError(f"feature id {int(feature.max() if feature.max() >= self.width else feature.min())} "
                              f"out of range: the dictionary has {self.width} features (0..{self.width - 1})")
        if context.min() < 0 or context.max() >= n_ctx:
            bad = int(context.max() if context.max() >= n_ctx else context.min())
            raise IngestError(f"context id {bad} out of range: the corpus has {n_ctx} contexts")
        if position.min() < 0:
            raise IngestError(f"negative token position {int(position.min())}")
        if int(position.max()) < int(self._lengths.min()):
            return  # every position fits in even the shortest context
        over = position >= self._lengths[context]
        if over.any():
            i = int(np.flatnonzero(over)[0])
            raise IngestError(f"token position {int(position[i])} out of range for context {int(context[i])} "
                              f"of {int(self._lengths[context[i]])} tokens")

    def _append_sorted(self, f, c, p, v) -> None:
        f, c, p, v = _sorted_cells(f, c, p, v)
        if self._carry is not None:
            cf, cc, cp, cv = (self._carry[k] for k in "fcpv")
            if int(f[0]) == self._last_feature:
                f, c, p, v = (np.concatenate(x) for x in ((cf, f), (cc, c), (cp, p), (cv, v)))
                f, c, p, v = _sorted_cells(f, c, p, v)
            else:
                self._flush(cf, cc, cp, cv)
        if int(f[0]) < self._last_feature:
            raise IngestError(f"rows of feature {int(f[0])} arrive after feature {self._last_feature}: "
                              "input is not partitioned by feature (overlapping shards?)")
        # hold back the last feature: the next chunk may continue it
        cut = int(np.searchsorted(f, f[-1], side="left"))
        if cut:
            self._flush(f[:cut], c[:cut], p[:cut], v[:cut])
        self._carry = {"f": f[cut:], "c": c[cut:], "p": p[cut:], "v": v[cut:]}
        self._last_feature = int(f[-1])

    def _flush(self, f, c, p, v) -> None:
        tbl = pa.table({"dictionary_id": np.full(len(f), self.dictionary_id, np.uint16),
                        "feature": f, "context_id": c, "position": p, "value": v})
        self.repo.writing.insert_background("activations", tbl)
        self.n_rows += len(f)
        self._stats_parts.append(self._stats_table(f, c, p, v))

    def _stats_table(self, f, c, p, v) -> pa.Table:
        s = feature_stats(f, c, p, v)
        return pa.table({"feature": s["feature"], "n_firing": s["n_firing"], "n_contexts": s["n_contexts"],
                         "max_value": s["max_value"], "mean_value": s["mean_value"],
                         "quantile_edges": pa.FixedSizeListArray.from_arrays(
                             s["quantile_edges"].ravel(), s["quantile_edges"].shape[1]).cast(pa.list_(pa.float32())),
                         "max_context": s["max_context"], "max_position": s["max_position"]})

    def take_staged(self, table: str) -> None:
        """Adopt `table` (feature, context_id, position, value; any order; no cell twice: a capture writes each
        cell once) as this dictionary's staged rows: `finish()` moves them into place and drops the table."""
        if self.sorted_input or self._staging is not None:
            raise IngestError("take_staged needs an unsorted builder with nothing staged yet")
        self._staging, self._checked = table, True

    def _append_staged(self, f, c, p, v) -> None:
        con = self.repo.con
        if self._staging is None:
            self._staging = f"_staging_{self.dictionary_id}"
            con.execute(f"CREATE TEMP TABLE {self._staging} (feature UINTEGER, context_id UINTEGER, "
                        "position USMALLINT, value FLOAT)")
        tbl = pa.table({"feature": f, "context_id": c, "position": p, "value": v})
        con.execute(f"INSERT INTO {self._staging} BY NAME SELECT * FROM tbl")

    def _drop_staging(self) -> None:
        if self._staging is not None:
            try:
                self.repo.con.execute(f"DROP TABLE IF EXISTS {self._staging}")
            except Exception:
                pass  # the transaction is being rolled back; the temp table goes with the connection
            self._staging = None

    def finish(self, max_rows_per_chunk: int = 4_000_000) -> int:
        """Complete the dictionary: move staged rows into place and write per-feature statistics."""
        con = self.repo.con
        if self.sorted_input:
            if self._carry is not None:
                self._flush(*(self._carry[k] for k in "fcpv"))
                self._carry = None
        elif self._staging is not None:
            dup = None if self._checked else self.repo._one(
                f"SELECT feature, context_id, position FROM {self._staging} GROUP BY ALL HAVING count(*) > 1 LIMIT 1")
            if dup is not None:
                raise IngestError(f"duplicate activation for feature {dup[0]}, context {dup[1]}, position {dup[2]}")
            con.execute(f"INSERT INTO activations BY NAME SELECT ?::USMALLINT AS dictionary_id, * FROM {self._staging} "
                        "ORDER BY feature, context_id, position", [self.dictionary_id])
            self._drop_staging()
            counts = con.execute("SELECT feature, count(*) AS n FROM activations WHERE dictionary_id = ? "
                                 "GROUP BY feature ORDER BY feature", [self.dictionary_id]).fetchnumpy()
            bounds = np.cumsum(counts["n"])
            lo_i = 0
            while lo_i < len(bounds):
                base = bounds[lo_i - 1] if lo_i else 0
                hi_i = max(lo_i, int(np.searchsorted(bounds, base + max_rows_per_chunk, side="right")) - 1)
                r = self.repo.read_activations(self.dictionary_id, int(counts["feature"][lo_i]),
                                                       int(counts["feature"][hi_i]))
                self.n_rows += len(r["feature"])
                self._stats_parts.append(self._stats_table(r["feature"], r["context_id"], r["position"], r["value"]))
                lo_i = hi_i + 1
        self._write_stats()
        return self.n_rows

    def _write_stats(self) -> None:
        con = self.repo.con
        n_tokens = int(self.repo.context_lengths(self.corpus_id).sum())
        schema = pa.schema([("feature", pa.uint32()), ("n_firing", pa.int64()), ("n_contexts", pa.int64()),
                            ("max_value", pa.float32()), ("mean_value", pa.float64()),
                            ("quantile_edges", pa.list_(pa.float32())), ("max_context", pa.uint32()),
                            ("max_position", pa.uint16())])
        live = pa.concat_tables([t.cast(schema) for t in self._stats_parts]) if self._stats_parts \
            else schema.empty_table()
        self._stats_parts = []
        con.execute("""
            INSERT INTO feature_stats (dictionary_id, feature, n_firing, n_contexts, density, max_value, mean_value,
                                       quantile_edges, max_context, max_position)
            SELECT ?, r.range::UINTEGER, coalesce(l.n_firing, 0), coalesce(l.n_contexts, 0),
                   coalesce(l.n_firing, 0) / ?::DOUBLE, l.max_value, l.mean_value,
                   coalesce(l.quantile_edges, []::FLOAT[]), l.max_context, l.max_position
            FROM range(?) r LEFT JOIN live l ON l.feature = r.range
            ORDER BY r.range""", [self.dictionary_id, max(n_tokens, 1), self.width])
        set_activation_hashes(con, self.dictionary_id)
