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

Impact orders the rows: how much changed (1 for added and gone, the distance, |delta|) times how often
the feature fires, as log(1 + firings) / log(1 + the most firings of either dictionary), so a change to a
feature that fires everywhere comes before the same change to one that fires twice. Counts cover every
feature; rows are the `limit` most impactful. Labels, grades and vectors are read a range of features at a
time (`block`); what is held whole is a few numbers a feature (the pairs, firing counts, a flag).

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


@dataclass(frozen=True)
class DiffConfig:
    """`method` and `min_similarity`: how features of two dictionaries are paired (as `label --carry-from`);
    `meaning`: the label distance counted as a change of meaning; `limit`: rows kept, most impactful first;
    `block`: features read at a time."""

    method: str = "coactivation"
    min_similarity: float = 0.8
    meaning: float = 0.3
    limit: int = 100
    block: int = 65_536

    def __post_init__(self) -> None:
        if self.method not in ("coactivation", "decoder"):
            raise UsageError(f"--method must be coactivation or decoder, not {self.method!r}")
        if not -1.0 <= self.min_similarity <= 1.0:
            raise UsageError(f"--min-similarity must be between -1 and 1, got {self.min_similarity}")
        if not 0.0 <= self.meaning <= 2.0:
            raise UsageError(f"--meaning must be between 0 and 2, got {self.meaning}")
        if self.limit < 0:
            raise UsageError(f"--limit must be 0 or more, got {self.limit}")
        if self.block < 1:
            raise UsageError(f"block must be at least 1, got {self.block}")


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
    counts: dict = field(default_factory=lambda: {k: 0 for k in (*KINDS, "changed_meaning", "pairs",
                                                                  "labelled_a", "labelled_b")})
    moved: dict = field(default_factory=dict)  # scorer -> {"up": n, "down": n}
    rows: list = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {"a": self.a, "b": self.b, "paired_by": self.paired_by, "counts": self.counts,
                "grades_moved": self.moved, "rows": self.rows, "seconds": self.seconds}


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
    pairs = None if same else _pairs(store, a.dictionary, b.dictionary, config)
    res = DiffResult(a.name, b.name, "feature id" if same else
                     f"{config.method} match, similarity >= {config.min_similarity:g}")
    fires_a = store.activations.firing_counts(a.dictionary.dictionary_id)
    fires_b = fires_a if same else store.activations.firing_counts(b.dictionary.dictionary_id)
    w = _Walk(store, a, b, config, same, res, _Top(config.limit), fires_a, fires_b,
              np.log1p(max(int(fires_a.max(initial=0)), int(fires_b.max(initial=0)), 1)),
              np.zeros(a.dictionary.width, bool))
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
    res.rows = w.top.rows()
    res.seconds = round(time.perf_counter() - t0, 2)
    return res


def _pairs(store: Store, a: Dictionary, b: Dictionary, config: DiffConfig) -> dict[str, np.ndarray]:
    check_pair(store, a, b, config.method)
    if config.method not in store.matches.match_methods(a.dictionary_id, b.dictionary_id):
        if store.read_only:
            raise MatchError(f"no {config.method} match from {a.name!r} to {b.name!r} in the store: run "
                             f"`autointerp match --from {a.name} --to {b.name}` first")
        match_dictionaries(store, a, b, MatchConfig(method=config.method))
    return store.matches.pairs(a.dictionary_id, b.dictionary_id, config.method, config.min_similarity)


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


class _Top:
    """The `limit` most impactful rows seen, in bounded memory (ties: the first seen ranks first)."""

    def __init__(self, limit: int) -> None:
        self.limit, self.seen = limit, 0
        self.heap: list[tuple[float, int, dict]] = []

    def push(self, impact: float, row: dict) -> None:
        row["impact"] = round(impact, 4)
        item = (impact, -self.seen, row)
        self.seen += 1
        if len(self.heap) < self.limit:
            heapq.heappush(self.heap, item)
        elif self.limit and item[:2] > self.heap[0][:2]:
            heapq.heapreplace(self.heap, item)

    def rows(self) -> list[dict]:
        return [r for _, _, r in sorted(self.heap, key=lambda x: (-x[0], -x[1]))]


@dataclass
class _Walk:
    """What a diff carries from one range of features to the next: the two sides, the counts and rows so
    far, how often each feature fires (and the log scale impact is weighed on), and which of A's features
    some feature of B has paired with."""

    store: Store
    a: Side
    b: Side
    config: DiffConfig
    same: bool  # one dictionary, two runs: features paired by id
    res: DiffResult
    top: _Top
    fires_a: np.ndarray
    fires_b: np.ndarray
    scale: float
    partnered: np.ndarray


def _block(w: _Walk, fa: np.ndarray, fb: np.ndarray) -> None:
    """One range of B's features `fb` and their partners `fa` in A (-1: none)."""
    store, a, b, config, res, top, same = w.store, w.a, w.b, w.config, w.res, w.top, w.same
    fires_b, scale, partnered = w.fires_b, w.scale, w.partnered
    lab_b = store.labels.label_side(b.dictionary.dictionary_id, fb, b.run_id)
    want_a = np.unique(fa[fa >= 0])
    lab_a = store.labels.label_side(a.dictionary.dictionary_id, want_a, a.run_id)
    res.counts["labelled_b"] += len(lab_b["feature"])
    if same:
        res.counts["labelled_a"] += len(lab_a["feature"])
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
    for two runs of one dictionary, the ones A labelled that B did not."""
    store, a, config, res, top, same = w.store, w.a, w.config, w.res, w.top, w.same
    fires_a, scale, partnered = w.fires_a, w.scale, w.partnered
    for lo in range(0, a.dictionary.width, config.block):
        fa = np.arange(lo, min(lo + config.block, a.dictionary.width), dtype=np.int64)
        if same:
            lab = store.labels.label_side(a.dictionary.dictionary_id, fa, a.run_id)
            alone = [(f, t) for f, t in zip(lab["feature"].tolist(), lab["text"].tolist()) if not partnered[f]]
        else:
            cand = fa[(fires_a[fa] > 0) & ~partnered[fa]]
            lab = store.labels.label_side(a.dictionary.dictionary_id, cand, a.run_id)
            res.counts["labelled_a"] += len(store.labels.label_side(a.dictionary.dictionary_id, fa, a.run_id)["feature"])
            texts = dict(zip(lab["feature"].tolist(), lab["text"].tolist()))
            alone = [(f, texts.get(f)) for f in cand.tolist()]
        for f, t in alone:
            res.counts["gone"] += 1
            top.push(float(np.log1p(fires_a[f]) / scale),
                  {"kind": "gone", "feature_a": f, "label_a": t, "n_firing": int(fires_a[f])})
