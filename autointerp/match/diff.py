"""`diff`: what changed between two labelling runs, or between a dictionary and its retrained successor.

Two sides, A (before) and B (after). A side is a dictionary's labels: its current ones (the newest chosen
label of each feature) or, for a run, the labels that run wrote (else the ones it graded), each with its
grades (a run's own where it wrote them). Features are paired by id when both sides are one dictionary,
else by the stored match of A's dictionary to B's (match/run.py, computed first if missing) at
`min_similarity` or more. Each change is one row:

- `added`: a feature of B with a label (a dictionary: a live feature) and no partner in A;
- `gone`: a feature of A with a label (a dictionary: a live feature) that no feature of B pairs with;
- `relabelled`: a pair whose label texts differ; `distance` is 1 - the cosine of the two labels'
  embeddings (the stored label vectors of search, MiniLM; embedded now where none is stored), so a
  reworded label scores near 0 and a label that now means something else near 1;
- `grade`: a pair graded by one scorer (by name) on both sides whose 95% intervals do not overlap (grades
  made before intervals existed are not compared); `delta` is B's value less A's.

A side that is a run holds only the features that run covered (explained, carried a label to, or
graded): a pair is compared only when both runs covered it, and the rest is counted, not listed:
`not_in_b`, features of A whose run B did not cover them (a rerun of 200 features of 1,536 leaves 1,336
of them, which are not gone), and `not_in_a` the other way. `features` (ids, "0-199,300") narrows either
kind of diff: B's features, and A's for what is gone. Two dictionaries are paired at `min_similarity`;
without one, at the threshold the newest `label --carry-from A` into B recorded (so a diff of a carry
judges pairs as the carry did), else 0.8; the result says which and why.

Impact orders the rows: how much changed (1 for added and gone, the distance, |delta|) times how often
the feature fires, as log(1 + firings) / log(1 + the most firings of either dictionary), so a change to a
feature that fires everywhere comes before the same change to one that fires twice. Counts cover every
feature; the rows listed are the `limit` most impactful, shared among the kinds (a kind with fewer rows
than an even share lists them all, the others split the rest), so a thousand gone features cannot hide
ten relabelled ones. Labels, grades and vectors are read a range of features at a time (`block`); what
is held whole is a few numbers a feature (the pairs, firing counts, a few flags).

Two runs of one dictionary under the same explainer, prompt, sampler and seed cannot be compared: the
later one replaced the earlier one's labels (the store keeps one label per such key), and saying so beats
reporting them as gone.
"""

from __future__ import annotations

import heapq
import time
from dataclasses import dataclass, field

import numpy as np

from ..errors import MatchError, UsageError
from ..records import Dictionary
from ..store import Store
from .run import MatchConfig, check_pair, match_dictionaries

KINDS = ("added", "gone", "relabelled", "grade")
MIN_SIMILARITY = 0.8  # pairs of two dictionaries compared, without a given or recorded threshold


@dataclass(frozen=True)
class DiffConfig:
    """`method` and `min_similarity`: how features of two dictionaries are paired (None: as the newest
    `label --carry-from` A into B recorded them, else coactivation at MIN_SIMILARITY: `pairing`); `meaning`: the label
    distance counted as a change of meaning; `limit`: rows listed, most impactful first, shared among the
    kinds; `features`: ids ("0-199,300") the diff is narrowed to; `block`: features read at a time."""

    method: str | None = None
    min_similarity: float | None = None
    meaning: float = 0.3
    limit: int = 100
    features: str | None = None
    block: int = 65_536

    def __post_init__(self) -> None:
        if self.method is not None and self.method not in ("coactivation", "decoder"):
            raise UsageError(f"--method must be coactivation or decoder, not {self.method!r}")
        if self.min_similarity is not None and not -1.0 <= self.min_similarity <= 1.0:
            raise UsageError(f"--min-similarity must be between -1 and 1, got {self.min_similarity}")
        if not 0.0 <= self.meaning <= 2.0:
            raise UsageError(f"--meaning must be between 0 and 2, got {self.meaning}")
        if self.limit < 0:
            raise UsageError(f"--limit must be 0 or more, got {self.limit}")
        if self.block < 1:
            raise UsageError(f"block must be at least 1, got {self.block}")
        if self.features is not None:
            from ..pipeline.config import parse_ranges

            parse_ranges(self.features)  # malformed or reversed: refused before anything is read


@dataclass(frozen=True)
class Side:
    """One side of a diff: a dictionary, and the run whose labels it holds (None: the current labels)."""

    dictionary: Dictionary
    run_id: str | None = None

    @property
    def name(self) -> str:
        return self.dictionary.name + (f" (run {self.run_id})" if self.run_id else "")


@dataclass
class DiffResult:
    a: str
    b: str
    paired_by: str
    counts: dict = field(default_factory=lambda: {k: 0 for k in (*KINDS, "changed_meaning", "grade_up",
                                                                  "grade_down", "pairs", "labelled_a",
                                                                  "labelled_b", "not_in_a", "not_in_b")})
    moved: dict = field(default_factory=dict)  # scorer -> {"up": n, "down": n}
    rows: list = field(default_factory=list)
    similarity: dict | None = None  # two dictionaries: {"min": the threshold, "why": where it came from}
    features: str | None = None
    meaning: float = 0.3
    run_a: str | None = None
    run_b: str | None = None
    seconds: float = 0.0

    def listed(self) -> dict[str, int]:
        """Rows listed of each kind (the counts say how many there are)."""
        return {k: sum(r["kind"] == k for r in self.rows) for k in KINDS}

    def to_dict(self) -> dict:
        return {"a": self.a, "b": self.b, "run_a": self.run_a, "run_b": self.run_b, "paired_by": self.paired_by,
                "similarity": self.similarity, "features": self.features, "meaning": self.meaning,
                "counts": self.counts, "grades_moved": self.moved, "listed": self.listed(), "rows": self.rows,
                "seconds": self.seconds}


def run_side(store: Store, run_id: str) -> Side:
    """The side of a run: the dictionary its labels and grades belong to."""
    ds = store.labels.run_dictionaries(run_id)
    if not ds:
        raise UsageError(f"no label or grade of run {run_id!r} in the store (`autointerp job list` and `label "
                         "--json`'s run_id name runs)")
    if len(ds) > 1:
        raise UsageError(f"run {run_id!r} labelled several dictionaries: diff them with --dictionaries")
    return Side(next(d for d in store.dictionaries() if d.dictionary_id == ds[0]), run_id)


def diff(store: Store, a: Side, b: Side, config: DiffConfig = DiffConfig()) -> DiffResult:
    """Compare side A with side B (see the module doc). Reads only; a missing match is computed and stored
    first (unless the store is read-only, which is then an error saying how to make it)."""
    t0 = time.perf_counter()
    same = a.dictionary.dictionary_id == b.dictionary.dictionary_id
    if same and a.run_id == b.run_id:
        raise UsageError("both sides are the same labels: give two runs, or two dictionaries")
    if same and a.run_id and b.run_id and store.labels.run_keys(a.run_id) & store.labels.run_keys(b.run_id):
        # a rerun under the same explainer, prompt, sampler and seed replaces the earlier run's labels
        raise UsageError(f"run {b.run_id} labelled under run {a.run_id}'s settings (explainer, prompt, sampler, "
                         "seed), which replaces its labels: there is no earlier label left to compare; diff runs "
                         "that differ in one of them, or two dictionaries")
    res = DiffResult(a.name, b.name, "feature id", features=config.features, meaning=config.meaning,
                     run_a=a.run_id, run_b=b.run_id)
    pairs = None
    if not same:
        method, sim, why = pairing(store, a.dictionary, b.dictionary, config)
        res.similarity = {"min": sim, "why": why}
        res.paired_by = f"{method} match, similarity >= {sim:g}"
        pairs = _pairs(store, a.dictionary, b.dictionary, method, sim)
    fires_a = store.activations.firing_counts(a.dictionary.dictionary_id)
    fires_b = fires_a if same else store.activations.firing_counts(b.dictionary.dictionary_id)
    sel_a, sel_b = _selected(config.features, a.dictionary.width, b.dictionary.width)
    w = _Walk(store, a, b, config, same, res, _Rows(config.limit), fires_a, fires_b,
              np.log1p(max(int(fires_a.max(initial=0)), int(fires_b.max(initial=0)), 1)),
              sel_a, sel_b, _covered(store, a), _covered(store, b), np.zeros(a.dictionary.width, bool),
              np.zeros(a.dictionary.width, bool), np.zeros(a.dictionary.width, bool))
    for lo in range(0, b.dictionary.width, config.block):
        fb = np.arange(lo, min(lo + config.block, b.dictionary.width), dtype=np.int64)
        if pairs is None:  # the same dictionary
            fa = fb.copy()
        else:
            i, j = np.searchsorted(pairs["to_feature"], [lo, lo + len(fb)])
            fa = np.full(len(fb), -1, np.int64)
            fa[pairs["to_feature"][i:j] - lo] = pairs["from_feature"][i:j]
        _block(w, fa, fb)
    _gone(w)
    res.rows = w.top.listed()
    res.seconds = round(time.perf_counter() - t0, 2)
    return res


def pairing(store: Store, a: Dictionary, b: Dictionary, config: DiffConfig) -> tuple[str, float, str]:
    """(method, min_similarity, why) the features of two dictionaries are paired by: as given; else as the
    newest `label --carry-from A` into B recorded them (its method, its threshold), so a diff sees the pairs
    the carry saw; else a coactivation match at MIN_SIMILARITY."""
    carry = None
    if config.method is None or config.min_similarity is None:
        carry = store.matches.carry_threshold(a.name, b.dictionary_id, config.method)
    method = config.method or (carry["method"] if carry else "coactivation")
    if config.min_similarity is not None:
        return method, config.min_similarity, "--min-similarity"
    if carry is not None:
        return method, carry["min_similarity"], (f"the {carry['method']} match and threshold of the newest "
                                                 f"`label --carry-from {a.name}` into {b.name} (run {carry['run_id']})")
    return method, MIN_SIMILARITY, f"the default: no `label --carry-from {a.name}` into {b.name}" + (
        f" by {method}" if config.method else "") + " recorded a threshold"


def _selected(spec: str | None, width_a: int, width_b: int) -> tuple[np.ndarray, np.ndarray]:
    """Masks over A's and B's features of the ids `spec` names (every feature without one)."""
    if spec is None:
        return np.ones(width_a, bool), np.ones(width_b, bool)
    from ..pipeline.config import parse_features

    ids = parse_features(spec, max(width_a, width_b))  # an id past both widths: a usage error
    out = []
    for width in (width_a, width_b):
        m = np.zeros(width, bool)
        m[ids[ids < width]] = True
        out.append(m)
    return out[0], out[1]


def _covered(store: Store, side: Side) -> np.ndarray:
    """A mask of the features the side holds: a run's covered features, or every one (current labels)."""
    if side.run_id is None:
        return np.ones(side.dictionary.width, bool)
    m = np.zeros(side.dictionary.width, bool)
    m[store.matches.run_features(side.dictionary.dictionary_id, side.run_id)] = True
    return m


def _pairs(store: Store, a: Dictionary, b: Dictionary, method: str, min_similarity: float
           ) -> dict[str, np.ndarray]:
    check_pair(store, a, b, method)
    if method not in store.matches.match_methods(a.dictionary_id, b.dictionary_id):
        if store.read_only:
            raise MatchError(f"no {method} match from {a.name!r} to {b.name!r} in the store: run "
                             f"`autointerp match --from {a.name} --to {b.name}` first")
        match_dictionaries(store, a, b, MatchConfig(method=method))
    return store.matches.pairs(a.dictionary_id, b.dictionary_id, method, min_similarity)


def _grades(store: Store, eids: np.ndarray, run_id: str | None) -> dict[int, dict[str, tuple]]:
    g = store.labels.side_grades(eids, run_id)
    out: dict[int, dict[str, tuple]] = {}
    for e, s, v, lo, hi in zip(g["explanation_id"].tolist(), g["scorer"].tolist(), g["value"].tolist(),
                               g["ci_low"].tolist(), g["ci_high"].tolist()):
        out.setdefault(e, {})[s] = (v, None if lo != lo else lo, None if hi != hi else hi)
    return out


def _distances(store: Store, pairs: list[tuple[int, str, int, str]]) -> list[float]:
    """1 - cosine of each (eid A, text A, eid B, text B) pair's label embeddings."""
    from ..embed import embed_many
    from ..search import LABELS

    if not pairs:
        return []
    stored = store.vectors.label_vectors_of(LABELS, np.array([p[0] for p in pairs] + [p[2] for p in pairs]))
    missing = [t for ea, ta, eb, tb in pairs for e, t in ((ea, ta), (eb, tb)) if e not in stored]
    fresh = dict(zip(missing, embed_many(missing))) if missing else {}

    def vec(e: int, t: str) -> np.ndarray:
        v = stored[e] if e in stored else fresh[t]
        return v / max(float(np.linalg.norm(v)), 1e-12)

    return [round(1.0 - float(vec(ea, ta) @ vec(eb, tb)), 4) for ea, ta, eb, tb in pairs]


class _Rows:
    """The `limit` most impactful rows of each kind seen, in bounded memory (ties: the first seen first)."""

    def __init__(self, limit: int) -> None:
        self.limit, self.seen = limit, 0
        self.heaps: dict[str, list[tuple[float, int, dict]]] = {k: [] for k in KINDS}

    def push(self, impact: float, row: dict) -> None:
        row["impact"] = round(impact, 4)
        item = (impact, -self.seen, row)
        self.seen += 1
        heap = self.heaps[row["kind"]]
        if len(heap) < self.limit:
            heapq.heappush(heap, item)
        elif self.limit and item[:2] > heap[0][:2]:
            heapq.heapreplace(heap, item)

    def listed(self) -> list[dict]:
        """`limit` rows, most impactful first, shared among the kinds: a kind with fewer rows than an even
        share of what is left lists them all, the others split the rest."""
        kinds = sorted(self.heaps, key=lambda k: len(self.heaps[k]))
        left, items = self.limit, []
        for i, k in enumerate(kinds):
            n = min(len(self.heaps[k]), left // (len(kinds) - i))
            items += heapq.nlargest(n, self.heaps[k], key=lambda x: x[:2])
            left -= n
        return [r for _, _, r in sorted(items, key=lambda x: (-x[0], -x[1]))]


@dataclass
class _Walk:
    """What a diff carries from one range of features to the next: the two sides, the counts and rows so
    far, how often each feature fires (and the log scale impact is weighed on), the features each side
    holds, and which of A's features some feature of B has paired with."""

    store: Store
    a: Side
    b: Side
    config: DiffConfig
    same: bool  # one dictionary, two runs: features paired by id
    res: DiffResult
    top: _Rows
    fires_a: np.ndarray
    fires_b: np.ndarray
    scale: float
    sel_a: np.ndarray  # features --features names, of A and of B
    sel_b: np.ndarray
    cov_a: np.ndarray  # features each side holds (a run: those it covered)
    cov_b: np.ndarray
    partnered: np.ndarray  # A's features paired with a feature of B compared
    outside_b: np.ndarray  # ... with a selected feature of B that run B did not cover
    unselected: np.ndarray  # ... with a feature of B outside --features


def _block(w: _Walk, fa: np.ndarray, fb: np.ndarray) -> None:
    """One range of B's features `fb` and their partners `fa` in A (-1: none)."""
    store, a, b, config, res, top, same = w.store, w.a, w.b, w.config, w.res, w.top, w.same
    fires_b, scale, partnered = w.fires_b, w.scale, w.partnered
    paired, picked = fa >= 0, w.sel_b[fb]
    w.unselected[fa[paired & ~picked]] = True
    w.outside_b[fa[paired & picked & ~w.cov_b[fb]]] = True
    lost = paired & picked & w.cov_b[fb] & ~w.cov_a[np.maximum(fa, 0)]  # a partner run A did not cover
    res.counts["not_in_a"] += int(lost.sum())
    held = picked & w.cov_b[fb]
    lab_b = store.labels.label_side(b.dictionary.dictionary_id, fb[held], b.run_id)  # B's labels, all counted
    fa, fb = fa[held & ~lost], fb[held & ~lost]  # those compared
    want_a = np.unique(fa[fa >= 0])
    lab_a = store.labels.label_side(a.dictionary.dictionary_id, want_a, a.run_id)
    res.counts["labelled_b"] += len(lab_b["feature"])
    text_a = dict(zip(lab_a["feature"].tolist(), zip(lab_a["explanation_id"].tolist(), lab_a["text"].tolist())))
    text_b = dict(zip(lab_b["feature"].tolist(), zip(lab_b["explanation_id"].tolist(), lab_b["text"].tolist())))
    grades_a = _grades(store, lab_a["explanation_id"], a.run_id)
    grades_b = _grades(store, lab_b["explanation_id"], b.run_id)

    def weight(fires: np.ndarray, f: int) -> float:  # how often the feature fires, 0..1 on a log scale
        return float(np.log1p(fires[f]) / scale)

    relabel = []
    for f_b, f_a in zip(fb.tolist(), fa.tolist()):
        has_b = f_b in text_b
        live_b = fires_b[f_b] > 0
        if f_a < 0 or (same and f_a not in text_a):  # no partner
            if (has_b if same else live_b):
                res.counts["added"] += 1
                top.push(weight(fires_b, f_b), {"kind": "added", "feature_b": f_b,
                                                "label_b": text_b[f_b][1] if has_b else None,
                                                "n_firing": int(fires_b[f_b])})
            continue
        if same and not has_b:  # labelled before, not now: gone (below)
            continue
        partnered[f_a] = True
        if not has_b or f_a not in text_a:
            continue
        res.counts["pairs"] += 1
        (ea, ta), (eb, tb) = text_a[f_a], text_b[f_b]
        if ta != tb:
            relabel.append((f_a, f_b, ea, ta, eb, tb))
        for scorer, (vb, lob, hib) in grades_b.get(eb, {}).items():
            got = grades_a.get(ea, {}).get(scorer)
            if got is None:
                continue
            va, loa, hia = got
            if lob is None or loa is None:  # a grade without an interval (made before them): not compared
                continue
            if hib < loa or lob > hia:
                res.counts["grade"] += 1
                way = res.moved.setdefault(scorer, {"up": 0, "down": 0})
                way["up" if vb > va else "down"] += 1
                res.counts["grade_up" if vb > va else "grade_down"] += 1
                top.push(abs(vb - va) * weight(fires_b, f_b),
                      {"kind": "grade", "feature_a": f_a, "feature_b": f_b, "scorer": scorer, "label_b": tb,
                       "value_a": va, "ci_a": None if loa is None else [loa, hia], "value_b": vb,
                       "ci_b": None if lob is None else [lob, hib], "delta": round(vb - va, 4),
                       "n_firing": int(fires_b[f_b])})
    for (f_a, f_b, ea, ta, eb, tb), dist in zip(relabel, _distances(store, [(r[2], r[3], r[4], r[5])
                                                                            for r in relabel])):
        res.counts["relabelled"] += 1
        res.counts["changed_meaning"] += dist >= config.meaning
        top.push(min(dist, 1.0) * weight(fires_b, f_b),
              {"kind": "relabelled", "feature_a": f_a, "feature_b": f_b, "label_a": ta, "label_b": tb,
               "distance": dist, "n_firing": int(fires_b[f_b])})


def _gone(w: _Walk) -> None:
    """A's features that no feature of B pairs with: for two dictionaries, A's live ones (and their labels);
    for two runs of one dictionary, the ones A labelled that B did not. One whose partner run B did not
    cover is counted as not in run B instead, and one whose partner is outside --features not at all."""
    store, a, config, res, top, same = w.store, w.a, w.config, w.res, w.top, w.same
    fires_a, scale, partnered = w.fires_a, w.scale, w.partnered
    for lo in range(0, a.dictionary.width, config.block):
        fa = np.arange(lo, min(lo + config.block, a.dictionary.width), dtype=np.int64)
        fa = fa[w.sel_a[fa] & w.cov_a[fa]]
        lab = store.labels.label_side(a.dictionary.dictionary_id, fa, a.run_id)
        res.counts["labelled_a"] += len(lab["feature"])
        texts = dict(zip(lab["feature"].tolist(), lab["text"].tolist()))
        cand = lab["feature"] if same else fa[fires_a[fa] > 0]
        cand = cand[~partnered[cand] & ~w.unselected[cand]]
        res.counts["not_in_b"] += int(w.outside_b[cand].sum())
        for f in cand[~w.outside_b[cand]].tolist():
            res.counts["gone"] += 1
            top.push(float(np.log1p(fires_a[f]) / scale),
                     {"kind": "gone", "feature_a": f, "label_a": texts.get(f), "n_firing": int(fires_a[f])})
