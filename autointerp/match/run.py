"""`match`: for every feature of dictionary B (the new one), its closest feature of dictionary A (the old one).

Two methods, each stored as its own set of pairs (`feature_matches`):

- **coactivation** (always): the Pearson correlation of the two features' activations over every token of
  the shared corpus, a feature's value being 0 where it does not fire. Computed in DuckDB a range of B's
  features at a time: A's features firing at each B feature's `probes` strongest tokens are its
  candidates (the `candidates` most frequent), then each candidate pair's cross sum is joined exactly
  over every token where both fire. Ranges are sized so the joined rows stay under
  `MatchConfig.pairs_per_chunk`: memory is bounded by that, never by the widths (no width_A x width_B
  matrix exists); time grows with B's nonzeros x (candidates + probes x L0_A / mean firings). Features
  of B that never fire get no partner.
- **decoder** (when both dictionaries have output directions, stored at capture): the cosine of the
  directions. Exhaustive (blocked matrix products) while width_A x width_B x dim stays under
  `MatchConfig.exhaustive_flops`; beyond that, among each feature's `candidates` best co-activation
  partners only (said in the result).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from ..errors import MatchError, UsageError
from ..progress import Progress
from ..records import Dictionary
from ..store import Store

METHODS = ("auto", "coactivation", "decoder")
BINS = (0.0, 0.2, 0.4, 0.6, 0.8, 0.9, 0.95, 1.0)


@dataclass(frozen=True)
class MatchConfig:
    """`method`: auto (co-activation, and decoder cosine when both dictionaries have directions),
    coactivation, or decoder (which still runs co-activation for its candidates when the widths are too
    large for an exhaustive search). `threshold`: what the summary counts as matched."""

    method: str = "auto"
    threshold: float = 0.8
    pairs_per_chunk: int = 20_000_000
    exhaustive_flops: float = 2e12
    candidates: int = 8
    probes: int = 16
    block: int = 1024

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise UsageError(f"unknown match method {self.method!r} (choose from {', '.join(METHODS)})")
        if not -1.0 <= self.threshold <= 1.0:
            raise UsageError(f"--threshold must be between -1 and 1, got {self.threshold}")
        if min(self.pairs_per_chunk, self.candidates, self.probes, self.block) < 1:
            raise UsageError("pairs_per_chunk, candidates, probes and block must be at least 1")


@dataclass
class MatchResult:
    """What a match stored, per method: pairs, how many reach the threshold, their median and histogram."""

    from_dictionary: str
    to_dictionary: str
    live: int = 0  # features of B that fire
    width_from: int = 0
    width_to: int = 0
    methods: dict = field(default_factory=dict)
    agreement: float | None = None  # of B's features with both partners, the share where the two agree
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {"from": self.from_dictionary, "to": self.to_dictionary, "width_from": self.width_from,
                "width_to": self.width_to, "live_to": self.live, "methods": self.methods,
                "agreement": self.agreement, "seconds": self.seconds}


def check_pair(store: Store, a: Dictionary, b: Dictionary, method: str) -> tuple[bool, int]:
    """Refuse two dictionaries that cannot be matched, before anything is written. Returns (decoder:
    whether directions are compared, their dimension)."""
    if a.dictionary_id == b.dictionary_id:
        raise MatchError(f"--from and --to are both {a.name!r}: match a dictionary with another")
    if a.corpus_id != b.corpus_id:
        ca, cb = store.corpus(a.corpus_id), store.corpus(b.corpus_id)
        raise MatchError(f"{a.name!r} is over corpus {ca.name!r} and {b.name!r} over {cb.name!r}: co-activation "
                         "needs both dictionaries over the same tokens (capture or ingest them over one corpus)")
    dims = {d.name: store.activations.direction_dim(d.dictionary_id) for d in (a, b)}
    has = all(dims.values())
    if method == "decoder" and not has:
        lacking = [repr(n) for n, v in dims.items() if not v]
        raise MatchError(f"{' and '.join(lacking)} {'have' if len(lacking) > 1 else 'has'} no output directions (captured with --no-outputs, or ingested): "
                         "match by --method coactivation")
    if has and dims[a.name] != dims[b.name] and method != "coactivation":
        raise MatchError(f"the output directions of {a.name!r} are {dims[a.name]}-wide and those of {b.name!r} "
                         f"{dims[b.name]}-wide: not one model's space (match by --method coactivation)")
    return has and method != "coactivation", dims[a.name] or 0


def match_dictionaries(store: Store, a: Dictionary, b: Dictionary, config: MatchConfig = MatchConfig(),
                       progress: bool = False) -> MatchResult:
    """Match B's features to A's (see the module doc) and store the pairs, replacing an earlier match of
    the same two dictionaries by the same method. One transaction: an error or interrupt writes nothing."""
    decoder, dim = check_pair(store, a, b, config.method)
    t0 = time.perf_counter()
    res = MatchResult(a.name, b.name, width_from=a.width, width_to=b.width)
    exhaustive = decoder and float(a.width) * b.width * dim <= config.exhaustive_flops
    coact = config.method != "decoder" or not exhaustive
    with store.transaction() as w:
        cands = None
        if coact:
            cands = _coactivation(store, w, a, b, config, res, keep=config.candidates if decoder else 1,
                                  store_pairs=config.method != "decoder", progress=progress)
        if decoder:
            _decoder(store, w, a, b, config, res, None if exhaustive else cands, progress)
    if "coactivation" in res.methods and "decoder" in res.methods:
        co = store.matches.pairs(a.dictionary_id, b.dictionary_id, "coactivation")
        de = store.matches.pairs(a.dictionary_id, b.dictionary_id, "decoder", features=co["to_feature"])
        same = np.isin(co["to_feature"], de["to_feature"])
        both = co["from_feature"][same] == de["from_feature"]
        res.agreement = round(float(both.mean()), 4) if len(both) else None
    res.seconds = round(time.perf_counter() - t0, 2)
    return res


def _summary(similarity: np.ndarray, threshold: float, **extra) -> dict:
    hist, _ = np.histogram(np.clip(similarity, 0, 1), bins=BINS)
    return {"pairs": int(len(similarity)), "matched": int((similarity >= threshold).sum()), "threshold": threshold,
            "median": round(float(np.median(similarity)), 4) if len(similarity) else None,
            "histogram": {f"{lo:g}-{hi:g}": int(n) for lo, hi, n in zip(BINS, BINS[1:], hist)}, **extra}


def _coactivation(store: Store, w, a: Dictionary, b: Dictionary, config: MatchConfig, res: MatchResult, *,
                  keep: int, store_pairs: bool, progress: bool) -> dict[str, np.ndarray] | None:
    """Co-activation partners of B's live features; stores the best of each (`store_pairs`) and returns the
    `keep` best per feature when the decoder method needs them as candidates."""
    n_tokens = store.activations.corpus_tokens(b.corpus_id)
    firing_b = store.activations.firing_counts(b.dictionary_id)
    live = np.flatnonzero(firing_b > 0)
    res.live = int(len(live))
    moments = []
    for d in (b, a):
        s, q = store.matches.activation_moments(d.dictionary_id, d.width)
        moments.append(pa.table({"feature": pa.array(np.arange(d.width, dtype=np.int64)), "s": s, "q": q}))
    l0_a = store.activations.dictionary_summary(a.dictionary_id)["nonzeros"] / max(n_tokens, 1)
    if store_pairs:
        w.matches.clear_matches(a.dictionary_id, b.dictionary_id, "coactivation")
    kept, sims = [], []
    bar = Progress(2 * len(live), f"match {a.name} -> {b.name}: coactivation", "feat", progress)
    try:
        # 1. candidates: a range's probe rows x A's features per token stay within the budget
        cands = []
        for lo, hi in _ranges(np.minimum(firing_b[live], config.probes) * max(l0_a, 1.0), config.pairs_per_chunk):
            cands.append(store.matches.match_candidates(b.dictionary_id, a.dictionary_id, int(live[lo]), int(live[hi - 1]),
                                                config.probes, config.candidates))
            bar.update(hi - lo)
        cand = {k: np.concatenate([c[k] for c in cands]) if cands else np.zeros(0, np.int64)
                for k in ("to_feature", "from_feature")}
        # 2. exact correlations of the candidate pairs: a range's rows x its candidates within the budget
        tf = cand["to_feature"]
        starts = np.flatnonzero(np.r_[True, tf[1:] != tf[:-1]]) if len(tf) else np.zeros(0, np.int64)
        per = firing_b[tf[starts]] * np.diff(np.r_[starts, len(tf)])
        for lo, hi in _ranges(per, config.pairs_per_chunk):
            i, j = starts[lo], starts[hi] if hi < len(starts) else len(tf)
            r = store.matches.pair_correlations(b.dictionary_id, a.dictionary_id, {k: v[i:j] for k, v in cand.items()},
                                        n_tokens, moments[0], moments[1], top=keep)
            first = np.r_[True, r["to_feature"][1:] != r["to_feature"][:-1]] if len(r["to_feature"]) else \
                np.zeros(0, bool)
            if store_pairs and first.any():
                w.matches.add_matches(a.dictionary_id, b.dictionary_id, "coactivation", r["to_feature"][first],
                              r["from_feature"][first], r["similarity"][first])
            sims.append(r["similarity"][first])
            if keep > 1:
                kept.append(r)
            bar.update(hi - lo)
    finally:
        bar.close()
    similarity = np.concatenate(sims) if sims else np.zeros(0)
    if store_pairs:
        w.matches.end_match(a.dictionary_id, b.dictionary_id, "coactivation", {
            "similarity": "pearson correlation of activations over every token", "tokens": n_tokens})
        res.methods["coactivation"] = _summary(similarity, config.threshold, unpaired_live=int(len(live) -
                                                                                              len(similarity)))
    if keep > 1:
        return {k: np.concatenate([r[k] for r in kept]) if kept else np.zeros(0, np.int64)
                for k in ("to_feature", "from_feature")}
    return None


def _ranges(cost: np.ndarray, budget: float) -> list[tuple[int, int]]:
    """Consecutive slices [lo, hi) of items whose costs sum to about `budget` each (an item costing more
    has a slice of its own)."""
    out, lo, acc = [], 0, 0.0
    for i, c in enumerate(np.asarray(cost, np.float64).tolist()):
        if acc and acc + c > budget:
            out.append((lo, i))
            lo, acc = i, 0.0
        acc += c
    if lo < len(cost):
        out.append((lo, len(cost)))
    return out


def _normalized(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float32)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(n > 0, n, 1)


def _decoder(store: Store, w, a: Dictionary, b: Dictionary, config: MatchConfig, res: MatchResult,
             candidates: dict | None, progress: bool) -> None:
    """Decoder-cosine partners: exhaustive (candidates None), or among the given candidate pairs."""
    w.matches.clear_matches(a.dictionary_id, b.dictionary_id, "decoder")
    sims = []
    bar = Progress(b.width, f"match {a.name} -> {b.name}: decoder", "feat", progress)
    try:
        if candidates is None:
            fa, va = store.activations.directions(a.dictionary_id)
            va = _normalized(va)
            for lo in range(0, b.width, config.block):
                fb, vb = store.activations.directions(b.dictionary_id, lo, lo + config.block - 1)
                if len(fb):
                    sim = _normalized(vb) @ va.T
                    best = sim.argmax(axis=1)
                    s = sim[np.arange(len(fb)), best]
                    w.matches.add_matches(a.dictionary_id, b.dictionary_id, "decoder", fb, fa[best], s)
                    sims.append(s)
                bar.update(min(config.block, b.width - lo))
        else:
            tf, ff = candidates["to_feature"], candidates["from_feature"]
            starts = np.flatnonzero(np.r_[True, tf[1:] != tf[:-1]]) if len(tf) else np.zeros(0, np.int64)
            for i in range(0, len(starts), config.block):  # whole features' candidates at a time
                lo, hi = starts[i], starts[i + config.block] if i + config.block < len(starts) else len(tf)
                t, f = tf[lo:hi], ff[lo:hi]
                ub, ib = np.unique(t, return_inverse=True)
                ua, ia = np.unique(f, return_inverse=True)
                vb, va = (_normalized(store.activations.directions_of(d.dictionary_id, u)) for d, u in ((b, ub), (a, ua)))
                s = np.einsum("ij,ij->i", vb[ib], va[ia])
                order = np.lexsort((-s, t))
                t, f, s = t[order], f[order], s[order]
                first = np.r_[True, t[1:] != t[:-1]]
                w.matches.add_matches(a.dictionary_id, b.dictionary_id, "decoder", t[first], f[first], s[first])
                sims.append(s[first])
                bar.update(int(first.sum()))
    finally:
        bar.close()
    similarity = np.concatenate(sims) if sims else np.zeros(0)
    w.matches.end_match(a.dictionary_id, b.dictionary_id, "decoder", {
        "similarity": "cosine of output directions",
        "search": "exhaustive" if candidates is None else f"among the {config.candidates} best co-activation partners"})
    res.methods["decoder"] = _summary(similarity, config.threshold,
                                      search="exhaustive" if candidates is None else "coactivation candidates")
