"""Per-feature samples: explain set and held-out score set, as records, from the store."""

from __future__ import annotations

import json
import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime

import numpy as np
from ..progress import Progress

from ..arrays import is_sorted_rows, sort_rows
from ..errors import SampleError, UsageError
from ..records import Dictionary, FeatureSample, SamplerConfig, Window, check_seed
from ..store import Store
from .keys import MAX_CHUNK_FEATURES
from .select import select_chunk
from .windows import EXPLAIN, SAMPLE_SETS, WINDOW_KINDS

# `sample_all` over several chunks holds a corpus of at most this many tokens in memory (4 bytes a token,
# 256 MB): each chunk's de-duplication then gathers its windows' contexts in numpy instead of a query that
# scans the contexts table (a third of sampling's time at 16.8M tokens, 3% at 1M)
CORPUS_TOKENS_IN_MEMORY = 64_000_000


def take_contexts(corpus: dict, context_ids: np.ndarray) -> dict:
    """The contexts `context_ids` of `corpus` (a `Store.read_contexts` answer without strings), in the
    same form: {"context_id": sorted unique ids, "offsets", "token_ids"}."""
    ids = np.unique(np.asarray(context_ids, dtype=np.int64))
    have = corpus["context_id"]
    at = np.minimum(np.searchsorted(have, ids), max(len(have) - 1, 0))
    if len(ids) and (not len(have) or (have[at] != ids).any()):
        raise SampleError(f"contexts {np.setdiff1d(ids, have)[:5].tolist()} missing from the corpus")
    lo = corpus["offsets"][at]
    lens = corpus["offsets"][at + 1] - lo
    offsets = np.zeros(len(ids) + 1, dtype=np.int64)
    np.cumsum(lens, out=offsets[1:])
    flat = corpus["token_ids"][np.repeat(lo - offsets[:-1], lens) + np.arange(offsets[-1])]
    return {"context_id": ids.astype(np.uint32), "offsets": offsets, "token_ids": flat}


class Sampler:
    """Draws samples for one dictionary with one config and seed. Deterministic: same inputs, same windows."""

    def __init__(self, store: Store, dictionary: Dictionary, config: SamplerConfig | None = None, seed: int = 0,
                 max_rows: int = 1_000_000) -> None:
        self.store = store
        self.dictionary = dictionary
        self.config = config or SamplerConfig()
        self.seed = check_seed(seed)  # a 64-bit integer, else UsageError
        self.max_rows = max_rows
        self.corpus = store.corpus(dictionary.corpus_id)
        # read now, on the caller's connection: worker threads share it and never touch that connection
        self.lengths = store.activations.context_lengths(self.corpus.corpus_id)

    def _check(self, feature: int) -> None:
        if not 0 <= feature < self.dictionary.width:
            raise UsageError(f"feature {feature} out of range: dictionary {self.dictionary.name!r} has "
                              f"{self.dictionary.width} features (0..{self.dictionary.width - 1})")

    def _select(self, features: np.ndarray, rows: dict, store: Store | None = None, corpus: dict | None = None):
        """`corpus`: the corpus's token ids in memory (see `take_contexts`), else read per chunk."""
        store = store or self.store
        peaks = None
        if self.config.n_neighbor_negatives:
            peaks = store.activations.neighbor_peaks(self.dictionary.dictionary_id, features, self.config.n_neighbor_negatives * 4)
        read = ((lambda ids: take_contexts(corpus, ids)) if corpus is not None
                else (lambda ids: store.activations.read_contexts(self.corpus.corpus_id, ids)))
        return select_chunk(features, rows, self.lengths, self.config, self.seed, read, peaks)

    # -- one feature ------------------------------------------------------------------------------

    def sample(self, feature: int) -> FeatureSample:
        """Sample one feature now (nothing is stored): the same windows `sample_all` would store for it."""
        return self.sample_many([feature])[0]

    def sample_many(self, features, store: Store | None = None) -> list[FeatureSample]:
        """Sample several features now (nothing is stored), in ascending feature order.

        Reads their activations in feature-range chunks and each chunk's contexts once, so a batch
        costs about one query per chunk rather than two per feature. `store`: another store object to
        read through (any thread may read through the same one).
        """
        store = store or self.store
        feats = np.unique(np.asarray(features, dtype=np.int64))
        for f in feats[[0, -1]] if len(feats) else []:
            self._check(int(f))
        out: list[FeatureSample] = []
        for ch in store.activations.plan_chunks(self.dictionary.dictionary_id, feats, self.max_rows):
            for sub in np.array_split(ch, -(-len(ch) // MAX_CHUNK_FEATURES)):
                rows = store.activations.read_activations(self.dictionary.dictionary_id, int(sub[0]), int(sub[-1]))
                if not is_sorted_rows(rows["feature"], rows["context_id"], rows["position"]):
                    rows = dict(zip(("feature", "context_id", "position", "value"),
                                    sort_rows(rows["feature"], rows["context_id"], rows["position"], rows["value"])))
                status, refs = self._select(sub, rows, store)
                ctx = np.unique(refs["context_id"])
                toks = store.activations.read_contexts(self.corpus.corpus_id, ctx, with_strings=True) if len(ctx) else None
                # rows and refs are both in feature order: each feature's part is one slice
                r_lo, r_hi = np.searchsorted(rows["feature"], sub), np.searchsorted(rows["feature"], sub, "right")
                w_lo, w_hi = np.searchsorted(refs["feature"], sub), np.searchsorted(refs["feature"], sub, "right")
                for i, f in enumerate(sub.tolist()):
                    f_rows = {k: rows[k][r_lo[i]:r_hi[i]] for k in ("context_id", "position", "value")}
                    f_refs = list(zip([SAMPLE_SETS[j] for j in refs["sample_set"][w_lo[i]:w_hi[i]]],
                                      [WINDOW_KINDS[j] for j in refs["kind"][w_lo[i]:w_hi[i]]],
                                      *(refs[k][w_lo[i]:w_hi[i]] for k in ("context_id", "start", "length"))))
                    out.append(self._materialize(f, status["status"][i], status["reason"][i],
                                                 int(status["n_candidates"][i]), f_refs, f_rows, toks,
                                                 self.config, self.seed))
        return out

    def load(self, feature: int) -> FeatureSample | None:
        """The stored sample of a feature (from `sample_all`), with tokens and activations; None if absent."""
        self._check(feature)
        st, refs = self.store.samples.sample_refs(self.dictionary.dictionary_id, feature)
        if st is None:
            return None
        rows = self.store.activations.read_activations(self.dictionary.dictionary_id, feature, feature)
        ctx = np.array(sorted({int(r[2]) for r in refs}), dtype=np.int64)
        toks = self.store.activations.read_contexts(self.corpus.corpus_id, ctx, with_strings=True) if len(ctx) else None
        return self._materialize(feature, st["status"], st["reason"], st["n_candidates"], refs, rows, toks,
                                 SamplerConfig(**st["config"]), st["seed"], st["created_at"])

    def load_many(self, features, store: Store | None = None) -> list[FeatureSample]:
        """The stored samples of several features (each must have one), in ascending feature order:
        one read of their status rows and window references, and per chunk of features one read of
        activations and one of contexts, as `sample_many`."""
        store = store or self.store
        feats = np.unique(np.asarray(features, dtype=np.int64))
        if not len(feats):
            return []
        st, refs = store.samples.sample_rows(self.dictionary.dictionary_id, feats)
        if len(st["feature"]) != len(feats):
            raise SampleError(f"{len(feats) - len(st['feature'])} of the features have no stored sample")
        configs: dict[str, SamplerConfig] = {}
        out: list[FeatureSample] = []
        w_lo = np.searchsorted(refs["feature"], feats)
        w_hi = np.searchsorted(refs["feature"], feats, "right")
        for ch in store.activations.plan_chunks(self.dictionary.dictionary_id, feats, self.max_rows):
            rows = store.activations.read_activations(self.dictionary.dictionary_id, int(ch[0]), int(ch[-1]))
            i0 = int(np.searchsorted(feats, ch[0]))
            lo, hi = w_lo[i0], w_hi[i0 + len(ch) - 1]
            ctx = np.unique(refs["context_id"][lo:hi])
            toks = store.activations.read_contexts(self.corpus.corpus_id, ctx, with_strings=True) if len(ctx) else None
            r_lo, r_hi = np.searchsorted(rows["feature"], ch), np.searchsorted(rows["feature"], ch, "right")
            for j, f in enumerate(ch.tolist()):
                i = i0 + j
                f_rows = {k: rows[k][r_lo[j]:r_hi[j]] for k in ("context_id", "position", "value")}
                f_refs = list(zip(*(refs[k][w_lo[i]:w_hi[i]] for k in ("sample_set", "kind", "context_id", "start",
                                                                      "length"))))
                cfg = configs.setdefault(st["config"][i], SamplerConfig(**json.loads(st["config"][i])))
                out.append(self._materialize(f, str(st["status"][i]), str(st["reason"][i]), int(st["n_candidates"][i]),
                                             f_refs, f_rows, toks, cfg, int(st["seed"][i])))
        return out

    def _materialize(self, feature, status, reason, n_candidates, refs, rows, toks, config, seed,
                     created_at: datetime | None = None) -> FeatureSample:
        """Windows with tokens and activations from window refs, the feature's rows and the read contexts."""
        # one feature's rows are in (context, position) order: each window's rows are one slice
        explain: list[Window] = []
        score: list[Window] = []
        if refs:
            p, v = rows["position"].astype(np.int64), rows["value"]
            cells = (rows["context_id"].astype(np.int64) << 17) | p
            sets, kinds, ctxs, starts, lengths = zip(*refs)
            ctx, start, length = (np.asarray(x, np.int64) for x in (ctxs, starts, lengths))
            first = toks["offsets"][np.searchsorted(toks["context_id"], ctx)] + start
            lo = np.searchsorted(cells, (ctx << 17) | start)
            hi = np.searchsorted(cells, (ctx << 17) | (start + length))
            ids = toks["token_ids"]
            strings = toks["tokens"]
            for j in range(len(refs)):
                a, n = int(first[j]), int(length[j])
                acts = np.zeros(n, dtype=np.float32)  # the stored values (float32), then as float64
                acts[p[lo[j]:hi[j]] - start[j]] = v[lo[j]:hi[j]]
                win = Window(kind=str(kinds[j]), context_id=int(ctx[j]), start=int(start[j]),
                             tokens=tuple(strings[a:a + n]), token_ids=ids[a:a + n].astype(np.int64),
                             activations=acts.astype(np.float64))
                (explain if sets[j] == EXPLAIN else score).append(win)
        return FeatureSample(dictionary=self.dictionary.name, feature=feature, status=status, reason=reason,
                             explain=tuple(explain), score=tuple(score), config=config, seed=seed,
                             n_candidates=n_candidates, created_at=created_at)

    # -- every feature ----------------------------------------------------------------------------

    def sample_all(self, features: np.ndarray | None = None, progress: bool = False,
                   workers: int | None = None) -> dict:
        """Sample the given features (default: all) and store them, replacing their earlier samples.

        Reads the activations once, in feature-range chunks of about `max_rows` rows; `workers` threads
        (default: one per core, at most 4) each read and select a chunk on their own connection, while
        this thread writes the results in chunk order, all in one transaction. Returns counts per status.
        """
        d = self.dictionary
        feats = np.arange(d.width, dtype=np.int64) if features is None else np.unique(np.asarray(features, np.int64))
        for f in feats[[0, -1]] if len(feats) else []:
            self._check(int(f))
        chunks = []
        for ch in self.store.activations.plan_chunks(d.dictionary_id, feats, self.max_rows):
            chunks.extend(np.array_split(ch, -(-len(ch) // MAX_CHUNK_FEATURES)))
        workers = max(1, min(workers or min(os.cpu_count() or 1, 4), len(chunks) or 1))
        corpus = None
        if len(chunks) > 1 and int(self.lengths.sum()) <= CORPUS_TOKENS_IN_MEMORY:
            corpus = self.store.activations.read_contexts(self.corpus.corpus_id, np.arange(len(self.lengths)))

        def work(ch: np.ndarray):
            rows = self.store.activations.read_activations(d.dictionary_id, int(ch[0]), int(ch[-1]))
            return self._select(ch, rows, self.store, corpus)

        counts: dict[str, int] = {}
        n_windows = 0
        bar = Progress(len(feats), f"sample {d.name}", "feat", progress)
        try:
            with self.store.transaction() as w, ThreadPoolExecutor(workers) as pool:
                w.samples.clear_samples(d.dictionary_id, None if features is None else feats)
                pending: deque[tuple[np.ndarray, Future]] = deque()
                for ch in chunks:  # keep `workers + 1` chunks in flight; write them in order
                    pending.append((ch, pool.submit(work, ch)))
                    if len(pending) > workers:
                        n_windows += self._write(w, *pending.popleft(), counts, bar)
                while pending:
                    n_windows += self._write(w, *pending.popleft(), counts, bar)
        finally:
            bar.close()
        return {"dictionary": d.name, "features": int(len(feats)), "windows": n_windows,
                "sampler": self.config.to_dict(), "sampler_hash": self.config.hash, "seed": self.seed,
                **{k: counts.get(k, 0) for k in ("ok", "too_rare", "dead")}}

    def _write(self, w, ch: np.ndarray, future, counts: dict, bar) -> int:
        status, refs = future.result()
        w.samples.add_samples(self.dictionary.dictionary_id, self.config, self.seed, status, refs, SAMPLE_SETS, WINDOW_KINDS)
        for s in status["status"]:
            counts[s] = counts.get(s, 0) + 1
        bar.update(len(ch))
        return len(refs["feature"])
