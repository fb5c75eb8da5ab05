"""The activations domain: corpora and their contexts, dictionaries, sparse activations, per-feature statistics,
neighbours, output directions and logit-lens tokens. Reads and writes in one place; a dictionary's activations
stream in through `builder.py` (`add_dictionary` hands a DictionaryBuilder out)."""

from __future__ import annotations

import json
from collections.abc import Iterable

import numpy as np
import pyarrow as pa
from numpy.typing import ArrayLike

from ..clock import utcnow as _now
from ..errors import IngestError, StoreError
from ..records import Corpus, Dictionary, FeatureStats, OutputTokens
from .builder import MAX_POSITION, DictionaryBuilder
from .changes import note_change
from .repo import Repo, reads
from .vectors import _blobs


HISTOGRAM_GAP = 1024  # feature ids further apart than this are histogrammed by separate range scans


class ActivationRepo(Repo):
    # -- reads --------------------------------------------------------------------------------------

    @reads
    def corpus(self, corpus_id: int) -> Corpus:
        row = self._one("SELECT corpus_id, name, tokenizer, ctx_len, n_contexts, fingerprint "
                        "FROM corpora WHERE corpus_id = ?", [corpus_id])
        if row is None:
            raise StoreError(f"no corpus {corpus_id} in {self.path}")
        return Corpus(*row)

    @reads
    def corpus_by_fingerprint(self, fingerprint: str) -> Corpus | None:
        row = self._one("SELECT corpus_id FROM corpora WHERE fingerprint = ?", [fingerprint])
        return None if row is None else self.corpus(row[0])

    @reads
    def dictionaries(self, gold: bool = False) -> list[Dictionary]:
        """The store's dictionaries; the gold ones of calibration (kind "gold": planted features) only with
        `gold`, and then only they."""
        rows = self.con.execute("SELECT dictionary_id, name, corpus_id, model, hook, width, kind, source, config "
                                f"FROM dictionaries WHERE kind {'=' if gold else '<>'} 'gold' "
                                "ORDER BY dictionary_id").fetchall()
        return [Dictionary(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], config=json.loads(r[8])) for r in rows]

    @reads
    def dictionary(self, name: str | None = None) -> Dictionary:
        """The named dictionary (a gold one too, named); with no name, the store's only (real) dictionary."""
        dicts = self.dictionaries()
        if name is not None and name.startswith("gold/"):
            dicts += self.dictionaries(gold=True)
        if name is None:
            if len(dicts) == 1:
                return dicts[0]
            if not dicts:
                raise StoreError(f"store {self.path} holds no dictionary yet: ingest or capture one first")
            raise StoreError(f"store {self.path} holds {len(dicts)} dictionaries "
                             f"({', '.join(d.name for d in dicts)}): pass --dictionary NAME")
        for d in dicts:
            if d.name == name:
                return d
        known = ", ".join(d.name for d in dicts) or "none"
        raise StoreError(f"no dictionary named {name!r} in {self.path} (known: {known})")

    @reads
    def feature_stats(self, dictionary_id: int, features: Iterable[int] | None = None,
                      order_by: str = "feature", limit: int | None = None) -> list[FeatureStats]:
        orders = {"feature": "feature", "density": "density DESC, feature", "max": "max_value DESC NULLS LAST, feature"}
        if order_by not in orders:
            raise StoreError(f"cannot sort features by {order_by!r} (choose from {', '.join(orders)})")
        sql = ("SELECT feature, n_firing, n_contexts, density, max_value, mean_value, quantile_edges, "
               "max_context, max_position FROM feature_stats WHERE dictionary_id = ?")
        params: list = [dictionary_id]
        if features is not None:
            sql += " AND feature IN (SELECT unnest(?::UINTEGER[]))"
            params.append(list(map(int, features)))
        sql += f" ORDER BY {orders[order_by]}"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [FeatureStats(r[0], r[1], r[2], r[3], r[4], r[5], tuple(r[6]), r[7], r[8])
                for r in self.con.execute(sql, params).fetchall()]

    @reads
    def firing_counts(self, dictionary_id: int) -> np.ndarray:
        """n_firing per feature, indexed by feature id (length = width)."""
        t = self.con.execute("SELECT n_firing FROM feature_stats WHERE dictionary_id = ? ORDER BY feature",
                             [dictionary_id]).fetchnumpy()
        return t["n_firing"].astype(np.int64)

    @reads
    def activation_histograms(self, dictionary_id: int, features: list[int], bins: int = 40) -> dict[int, dict]:
        """feature -> {"hi": its max, "counts": how many of its firings fall in each of `bins` equal bins from 0
        to its max}: every firing, counted in DuckDB. Ids far apart are read as separate runs of ids (the rows
        are stored by feature: a run is one scan of its range, never of everything between two runs)."""
        feats = np.unique(np.asarray(list(features), np.int64))
        out: dict[int, dict] = {}
        for run in np.split(feats, np.flatnonzero(np.diff(feats) > HISTOGRAM_GAP) + 1) if len(feats) else []:
            rows = self.con.execute(f"""
                WITH s AS (SELECT feature, max_value AS hi FROM feature_stats
                           WHERE dictionary_id = $1 AND n_firing > 0 AND feature IN (SELECT unnest($2::UINTEGER[])))
                SELECT a.feature, s.hi, least({bins - 1}, greatest(0, floor(a.value / s.hi * {bins})))::INTEGER AS b,
                       count(*) FROM activations a JOIN s USING (feature)
                WHERE a.dictionary_id = $1 AND a.feature BETWEEN $3 AND $4 AND s.hi > 0
                GROUP BY ALL""", [dictionary_id, run.tolist(), int(run[0]), int(run[-1])]).fetchall()
            for f, hi, b, n in rows:
                doc = out.setdefault(int(f), {"hi": float(hi), "counts": [0] * bins})
                doc["counts"][b] = int(n)
        return out

    @reads
    def density_histogram(self, dictionary_id: int, bins: int = 40) -> dict:
        """The dictionary's live features by log10 density: {"lo", "hi" (log10 bounds), "counts", "dead" (features
        that never fire), "live"}; one aggregate over feature_stats."""
        lo, hi, live, dead = self._row("""
            SELECT min(log10(density)) FILTER (WHERE n_firing > 0), max(log10(density)) FILTER (WHERE n_firing > 0),
                   count(*) FILTER (WHERE n_firing > 0), count(*) FILTER (WHERE n_firing = 0)
            FROM feature_stats WHERE dictionary_id = ?""", [dictionary_id])
        counts = [0] * bins
        if live:
            lo, hi = float(np.floor(lo * 2) / 2), float(np.ceil(hi * 2) / 2)  # on half decades
            hi = max(hi, lo + 0.5)
            for b, n in self.con.execute(f"""
                    SELECT least({bins - 1}, floor((log10(density) - ?) / ? * {bins}))::INTEGER, count(*)
                    FROM feature_stats WHERE dictionary_id = ? AND n_firing > 0 GROUP BY ALL""",
                    [lo, hi - lo, dictionary_id]).fetchall():
                counts[b] = int(n)
        return {"lo": lo, "hi": hi, "counts": counts, "live": int(live), "dead": int(dead)}

    @reads
    def dictionary_summary(self, dictionary_id: int) -> dict:
        row = self._row("""
            SELECT count(*), count(*) FILTER (WHERE n_firing = 0), sum(n_firing),
                   avg(density) FILTER (WHERE n_firing > 0)
            FROM feature_stats WHERE dictionary_id = ?""", [dictionary_id])
        return {"features": row[0], "dead": row[1], "nonzeros": int(row[2] or 0),
                "mean_density_live": row[3]}

    @reads
    def plan_chunks(self, dictionary_id: int, features: np.ndarray, max_rows: int) -> list[np.ndarray]:
        """Split sorted feature ids into runs whose range (first..last id, as `read_activations` reads
        it) holds about `max_rows` activation rows at most, the rows of features between the ids
        included: scattered ids are not one read of everything between them.

        A feature with more rows than `max_rows` gets a chunk of its own.
        """
        features = np.asarray(features)
        if not len(features):
            return []
        below = np.concatenate(([0], np.cumsum(self.firing_counts(dictionary_id))))  # rows of features < f
        ends = below[features.astype(np.int64) + 1]  # rows of features <= each id
        chunks, lo = [], 0
        while lo < len(features):
            hi = max(lo + 1, int(np.searchsorted(ends, below[int(features[lo])] + max_rows, side="right")))
            chunks.append(features[lo:hi])
            lo = hi
        return chunks

    @reads
    def read_activations(self, dictionary_id: int, lo: int, hi: int) -> dict[str, np.ndarray]:
        """All rows of features lo..hi (inclusive), in stored order: (feature, context, position)."""
        return self.con.execute(
            "SELECT feature, context_id, position, value FROM activations "
            "WHERE dictionary_id = ? AND feature BETWEEN ? AND ?", [dictionary_id, lo, hi]).fetchnumpy()

    @reads
    def neighbor_peaks(self, dictionary_id: int, features: np.ndarray, per_feature: int) -> dict[str, np.ndarray]:
        """Peak locations of each feature's nearest stored neighbours, most similar first."""
        t = self.con.execute("""
            SELECT n.feature, s.max_context AS context, s.max_position AS position FROM (
                SELECT feature, neighbor, similarity,
                       row_number() OVER (PARTITION BY feature ORDER BY similarity DESC, neighbor) AS k
                FROM feature_neighbors
                WHERE dictionary_id = ? AND feature IN (SELECT unnest(?::UINTEGER[]))) n
            JOIN feature_stats s ON s.dictionary_id = ? AND s.feature = n.neighbor
            WHERE n.k <= ? AND s.n_firing > 0
            ORDER BY n.feature, n.k""", [dictionary_id, np.asarray(features).astype(np.int64).tolist(), dictionary_id,
                                        per_feature]).fetchnumpy()
        return {k: np.asarray(t[k]).astype(np.int64) for k in ("feature", "context", "position")}

    @reads
    def read_contexts(self, corpus_id: int, context_ids: ArrayLike, with_strings: bool = False) -> dict:
        """Token ids (and optionally strings) of the given contexts, as flat arrays plus offsets.

        Returns {"context_id": sorted unique ids, "offsets": int64 [n+1], "token_ids": int32 flat,
        "tokens": list[str] flat (only with_strings)}.
        """
        ids = np.unique(np.asarray(context_ids, dtype=np.uint32))
        cols = "context_id, token_ids" + (", tokens" if with_strings else "")
        t = self.con.sql(
            f"SELECT {cols} FROM contexts WHERE corpus_id = ? AND context_id IN (SELECT unnest(?::UINTEGER[])) "
            "ORDER BY context_id", params=[corpus_id, ids.tolist()]).to_arrow_table()
        got = t.column("context_id").to_numpy()
        if len(got) != len(ids):
            missing = np.setdiff1d(ids, got)[:5]
            raise StoreError(f"contexts {missing.tolist()} missing from corpus {corpus_id}")
        tok = t.column("token_ids").combine_chunks()
        out = {"context_id": got, "offsets": tok.offsets.to_numpy().astype(np.int64),
               "token_ids": tok.values.to_numpy().astype(np.int32)}
        if with_strings:
            s = t.column("tokens").combine_chunks()
            out["tokens"] = s.values.to_pylist()
        return out

    @reads
    def activation_hashes(self, dictionary_id: int, features) -> dict[int, int]:
        """feature -> fingerprint of its activations (feature_stats.act_hash)."""
        return dict(self.con.execute("SELECT feature, act_hash FROM feature_stats WHERE dictionary_id = ? AND "
                                     "feature IN (SELECT unnest(?::UINTEGER[]))",
                                     [dictionary_id, sorted(int(f) for f in features)]).fetchall())

    @reads
    def corpus_tokens(self, corpus_id: int) -> int:
        return int(self._row("SELECT n_tokens FROM corpora WHERE corpus_id = ?", [corpus_id])[0])

    @reads
    def top_windows(self, corpus_id: int, spots: list[tuple[int, int]], width: int = 16) -> list[dict]:
        """The tokens around each (context, position): {context, start, tokens, peak (index in tokens)}."""
        if not spots:
            return []
        ctx = self.read_contexts(corpus_id, [c for c, _ in spots], with_strings=True)
        where = {int(c): i for i, c in enumerate(ctx["context_id"])}
        out = []
        for c, p in spots:
            i = where[int(c)]
            a, b = int(ctx["offsets"][i]), int(ctx["offsets"][i + 1])
            start = max(0, min(int(p) - width * 3 // 4, b - a - width))
            out.append({"context": int(c), "start": start, "tokens": ctx["tokens"][a + start:min(b, a + start + width)],
                        "peak": int(p) - start})
        return out

    @reads
    def has_output_tokens(self, dictionary_id: int) -> bool:
        return self.con.execute("SELECT 1 FROM output_tokens WHERE dictionary_id = ? LIMIT 1",
                                [dictionary_id]).fetchone() is not None

    @reads
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

    @reads
    def directions(self, dictionary_id: int, lo: int = 0, hi: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(features, float16 [n, dim]) output directions of features lo..hi (inclusive; None: to the end)."""
        t = self.con.sql("SELECT feature, direction FROM feature_directions WHERE dictionary_id = ? "
                         "AND feature BETWEEN ? AND ? ORDER BY feature",
                         params=[dictionary_id, lo, 2**32 - 1 if hi is None else hi]).to_arrow_table()
        flat, off = _blobs(t.column("direction"))
        n = len(t)
        return t.column("feature").to_numpy().astype(np.int64), flat.reshape(n, -1) if n else flat.reshape(0, 0)

    @reads
    def direction_dim(self, dictionary_id: int) -> int | None:
        """The dimension of a dictionary's output directions (None: it has none)."""
        row = self._one("SELECT octet_length(direction) // 2 FROM feature_directions WHERE dictionary_id = ? LIMIT 1",
                        [dictionary_id])
        return None if row is None else int(row[0])

    @reads
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

    @reads
    def context_lengths(self, corpus_id: int) -> np.ndarray:
        """Tokens per context of a corpus, by context id (inside a transaction that made the corpus: the
        contexts it added so far)."""
        made = self._made().get(corpus_id)
        if made is not None and corpus_id not in self._base():
            return np.concatenate(made) if made else np.zeros(0, dtype=np.int64)
        t = self.con.execute("SELECT len(token_ids) AS n FROM contexts WHERE corpus_id = ? ORDER BY context_id",
                             [corpus_id]).fetchnumpy()
        return t["n"].astype(np.int64)

    # -- writes (inside a transaction) --------------------------------------------------------------

    def _made(self) -> dict[int, list[np.ndarray]]:
        """Corpora this transaction appends contexts to -> the lengths of the contexts it added."""
        return {} if self.tx is None else self.tx.scratch.setdefault("ctx_lengths", {})

    def _base(self) -> dict[int, int]:
        """Corpora continued from an earlier transaction -> contexts already in."""
        return {} if self.tx is None else self.tx.scratch.setdefault("ctx_base", {})


    def add_corpus(self, *, name: str, tokenizer: str, ctx_len: int, fingerprint: str,
                   source: str) -> tuple[int, bool]:
        """Return (corpus_id, created). An existing corpus with the same fingerprint is reused."""
        existing = self.corpus_by_fingerprint(fingerprint)
        if existing is not None:
            return existing.corpus_id, False
        if ctx_len > MAX_POSITION + 1:
            raise IngestError(f"contexts of {ctx_len} tokens exceed the store's limit of {MAX_POSITION + 1}")
        cid = self._row("SELECT coalesce(max(corpus_id), 0) + 1 FROM corpora")[0]
        self.writing.con.execute(
            "INSERT INTO corpora (corpus_id, name, tokenizer, ctx_len, n_contexts, n_tokens, fingerprint, source, "
            "created_at) VALUES (?, ?, ?, ?, 0, 0, ?, ?, ?)", [cid, name, tokenizer, ctx_len, fingerprint, source, _now()])
        self._made()[cid] = []
        return cid, True

    def continue_corpus(self, corpus_id: int) -> None:
        """Append to a corpus made by an earlier transaction (a capture resumed after a checkpoint): its next
        context gets the next id."""
        self._base()[corpus_id] = self.corpus(corpus_id).n_contexts
        self._made()[corpus_id] = []

    def add_contexts(self, corpus_id: int, token_ids: list[np.ndarray], tokens: list[list[str]]) -> int:
        """Append contexts in order; returns the first context id assigned. Ids are 0, 1, 2, ... per corpus."""
        made = self._made()
        if corpus_id not in made:
            raise IngestError(f"corpus {corpus_id} was not created in this transaction")
        if len(token_ids) != len(tokens):
            raise IngestError(f"{len(token_ids)} token-id rows but {len(tokens)} token-string rows")
        lengths = np.array([len(t) for t in token_ids], dtype=np.int64)
        if len(lengths) and (lengths.min() < 1 or lengths.max() > MAX_POSITION + 1):
            raise IngestError(f"context lengths must be 1..{MAX_POSITION + 1}, got {lengths.min()}..{lengths.max()}")
        for i, (a, b) in enumerate(zip(token_ids, tokens)):
            if len(a) != len(b):
                raise IngestError(f"context {i}: {len(a)} token ids but {len(b)} token strings")
        first = self._base().get(corpus_id, 0) + sum(len(x) for x in made[corpus_id])
        ids = np.arange(first, first + len(token_ids), dtype=np.uint32)
        tbl = pa.table({
            "corpus_id": pa.array(np.full(len(ids), corpus_id, dtype=np.int32)),
            "context_id": pa.array(ids),
            "token_ids": pa.array([np.asarray(t, dtype=np.int32) for t in token_ids], type=pa.list_(pa.int32())),
            "tokens": pa.array(tokens, type=pa.list_(pa.string())),
        })
        self.writing.insert("contexts", tbl)
        made[corpus_id].append(lengths)
        self.con.execute("UPDATE corpora SET n_contexts = n_contexts + ?, n_tokens = n_tokens + ? "
                         "WHERE corpus_id = ?", [len(ids), int(lengths.sum()), corpus_id])
        return first

    def add_dictionary(self, *, name: str, corpus_id: int, model: str, hook: str, width: int, kind: str,
                       source: str, config: dict | None = None, replace: bool = False,
                       sorted_input: bool = True) -> DictionaryBuilder:
        """Create a dictionary and return a builder to append its activations to.

        `sorted_input`: the caller promises rows arrive partitioned by feature in ascending order
        (a delphi cache, shard by shard). They go straight into the clustered table; otherwise rows
        are staged and sorted once at `finish()`.
        """
        if width < 1:
            raise IngestError(f"dictionary width must be >= 1, got {width}")
        tx = self.writing
        row = self._one("SELECT dictionary_id, corpus_id FROM dictionaries WHERE name = ?", [name])
        if row is not None:
            if not replace:
                raise IngestError(f"dictionary {name!r} already exists in {self.db.path}; "
                                  "pass --replace to overwrite it")
            # new activations, same dictionary: labels stay (over the same corpus and width), and a
            # labelling run redoes those whose feature's activations changed (feature_stats.act_hash)
            did = row[0]
            for t in ("activations", "feature_stats", "feature_neighbors", "samples", "sample_status",
                      "feature_directions", "output_tokens"):
                self.con.execute(f"DELETE FROM {t} WHERE dictionary_id = ?", [did])
            for t in ("feature_matches", "dictionary_matches"):  # matched on the activations replaced
                self.con.execute(f"DELETE FROM {t} WHERE ? IN (from_dictionary, to_dictionary)", [did])
            cut = 0 if row[1] != corpus_id else width  # other contexts: no label carries over
            for t in ("scores", "label_vectors"):
                self.con.execute(f"DELETE FROM {t} WHERE explanation_id IN (SELECT explanation_id FROM explanations "
                                 "WHERE dictionary_id = ? AND feature >= ?)", [did, cut])
            for t in ("explanations", "label_status"):
                self.con.execute(f"DELETE FROM {t} WHERE dictionary_id = ? AND feature >= ?", [did, cut])
            self.con.execute("DELETE FROM dictionaries WHERE dictionary_id = ?", [did])
            note_change(self.con, did, None)  # readers that keep a copy read its labels anew
        else:
            did = self._row("SELECT coalesce(max(dictionary_id), 0) + 1 FROM dictionaries")[0]
        self.con.execute("INSERT INTO dictionaries (dictionary_id, name, corpus_id, model, hook, width, kind, source, "
                         "config, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         [did, name, corpus_id, model, hook, width, kind, source,
                          json.dumps(config or {}, sort_keys=True), _now()])
        b = DictionaryBuilder(self, did, corpus_id, width, sorted_input)
        tx.on_close(b._drop_staging)
        return b

    def set_dictionary_config(self, dictionary_id: int, config: dict) -> None:
        _ = self.writing  # a write: inside a transaction only
        self.con.execute("UPDATE dictionaries SET config = ? WHERE dictionary_id = ?",
                         [json.dumps(config, sort_keys=True), dictionary_id])

    def add_neighbors(self, dictionary_id: int, feature: np.ndarray, neighbor: np.ndarray,
                      similarity: np.ndarray) -> None:
        tbl = pa.table({"dictionary_id": np.full(len(feature), dictionary_id, np.uint16),
                        "feature": feature.astype(np.uint32), "neighbor": neighbor.astype(np.uint32),
                        "similarity": similarity.astype(np.float32)})
        self.writing.insert("feature_neighbors", tbl)

    def add_directions(self, dictionary_id: int, vectors: np.ndarray, block: int = 65_536) -> None:
        """Output directions of features 0..n-1 (rows of `vectors`), stored as float16, a block of rows at a
        time (each block's blobs are one buffer, no copy per row)."""
        for lo in range(0, len(vectors), block):
            v = np.ascontiguousarray(vectors[lo:lo + block], dtype=np.float16)
            n, width = v.shape[0], v.shape[1] * 2
            blobs = pa.LargeBinaryArray.from_buffers(pa.large_binary(), n, [
                None, pa.py_buffer(np.arange(n + 1, dtype=np.int64) * width), pa.py_buffer(v)])
            self.writing.insert("feature_directions", pa.table({
                "dictionary_id": pa.array(np.full(n, dictionary_id, np.uint16)),
                "feature": pa.array(np.arange(lo, lo + n, dtype=np.uint32)), "direction": blobs}))

    def add_output_tokens(self, dictionary_id: int, features: np.ndarray, strings: np.ndarray,
                          promoted: tuple[np.ndarray, np.ndarray], suppressed: tuple[np.ndarray, np.ndarray]) -> None:
        """Logit-lens tokens of `features`: (ids [n, k], logits [n, k]) promoted and suppressed; `strings` maps
        a token id to its display string."""
        cols = {"dictionary_id": pa.array(np.full(len(features), dictionary_id, np.uint16)),
                "feature": pa.array(np.asarray(features, np.uint32))}
        for name, (ids, logits) in (("promoted", promoted), ("suppressed", suppressed)):
            cols[f"{name}_ids"] = pa.array(ids.astype(np.int32).tolist(), pa.list_(pa.int32()))
            cols[name] = pa.array(strings[ids].tolist(), pa.list_(pa.string()))
            cols[f"{name}_logits"] = pa.array(logits.astype(np.float32).tolist(), pa.list_(pa.float32()))
        self.writing.insert("output_tokens", pa.table(cols))

