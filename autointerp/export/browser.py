"""What `autointerp serve`'s app reads (api.py answers with it): the store and, per dictionary, its feature
index, the label search index, the trace models (loaded once, warmed as the server starts) and the index's
plots, kept current while writers commit; and search hits described as the API, the CLI and the Python API
show them.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, TypedDict

import duckdb

from ..records import Dictionary, traceable
from ..store import FeatureIndex, Store

if TYPE_CHECKING:
    from ..search import LabelIndex


class BadRequest(ValueError):
    """A parameter the API cannot answer (400)."""


REFRESH_SECONDS = 5.0  # how often the server looks for a writer's commits (and takes them into its indexes)


class Refreshed(TypedDict):
    """What `Browser.refresh` took in so far: refreshes, features read again, labels, indexes rebuilt, when."""

    refreshes: int
    features: int
    labels: int
    rebuilt: int
    at: str | None


class Browser:
    """What the app reads: the store and, per dictionary, its feature index (and the label search index), kept
    current while writers commit: `refresh` reads only the features whose labels or grades changed."""

    def __init__(self, store: Store, dictionary: str | None = None) -> None:
        self.store = store
        self.default = store.dictionary(dictionary)  # raises on an unknown name, before the server starts
        self.seq = store.labels.change_seq()  # the last change the indexes hold
        self.dictionaries = store.dictionaries()
        self.refreshed: Refreshed = {"refreshes": 0, "features": 0, "labels": 0, "rebuilt": 0, "at": None}
        self.db = duckdb.connect(":memory:")
        self._indexes: dict[int, FeatureIndex] = {}
        self._labels: LabelIndex | None = None  # the label search index, loaded on the first search
        self._lock = threading.Lock()  # held only while an index is built or refreshed, never by a read
        self._built = 0
        self._tracers: dict[int, tuple] = {}  # dictionary id -> (Tracer, its lock): one text at a time per model
        self._tracer_lock = threading.Lock()  # held while a model loads: an index build never waits for it
        self._warming: set[int] = set()  # dictionaries whose model `warm` is loading
        self._overviews: dict[int, dict] = {}  # dictionary id -> its last overview, with what it was asked with

    def dictionary(self, name: str | None) -> Dictionary:
        if not name:
            return self.default
        for d in self.dictionaries:
            if d.name == name:
                return d
        raise BadRequest(f"unknown dictionary {name!r}")

    def index(self, d: Dictionary) -> FeatureIndex:
        if d.dictionary_id not in self._indexes:
            with self._lock:
                if d.dictionary_id not in self._indexes:
                    self._indexes[d.dictionary_id] = FeatureIndex(self.store, d.dictionary_id, d.width, self.db,
                                                                  f"idx_{d.dictionary_id}")
        return self._indexes[d.dictionary_id]

    def tracer(self, d: Dictionary):
        """(the dictionary's Tracer, the lock a trace holds while it runs), loaded on first use."""
        if d.dictionary_id not in self._tracers:
            with self._tracer_lock:
                if d.dictionary_id not in self._tracers:
                    from ..capture import Tracer

                    self._tracers[d.dictionary_id] = (Tracer(d), threading.Lock())
        return self._tracers[d.dictionary_id]

    def tracer_state(self, d: Dictionary) -> str:
        """"ready" (its model is loaded), "loading", "cold" (loaded on the first trace) or "none" (no local
        model: ingested, or its model is gone)."""
        if d.dictionary_id in self._tracers:
            return "ready"
        if d.dictionary_id in self._warming:
            return "loading"
        return "cold" if traceable(d) else "none"

    def warm(self, d: Dictionary | None = None) -> threading.Thread | None:
        """Load the model of `d` (default: the served dictionary) for trace in a thread of its own, so the first
        trace does not wait for it; None when it has no local model. A model that fails to load is left to the
        first trace, which says why."""
        d = d or self.default
        if not traceable(d) or d.dictionary_id in self._tracers:
            return None
        self._warming.add(d.dictionary_id)

        def load() -> None:
            try:
                self.tracer(d)
            except Exception:  # noqa: BLE001 - the first trace loads it again and answers its error
                pass
            finally:
                self._warming.discard(d.dictionary_id)

        t = threading.Thread(target=load, name="autointerp-warm", daemon=True)
        t.start()
        return t

    def refresh(self) -> bool:
        """Take in what writers committed since the last look: the features whose labels or grades changed
        are read again into the built indexes (the search index reads new labels' vectors), in place, while
        requests go on reading. Returns whether anything changed."""
        seq, changed = self.store.labels.changes_after(self.seq)
        if seq == self.seq:
            return False
        from ..clock import utc_iso

        with self._lock:
            self.dictionaries = self.store.dictionaries()
            for did, ix in list(self._indexes.items()):
                if did not in changed:
                    continue
                n = ix.update(self.store, changed[did])
                if n is None:  # every feature, or a new scorer: built anew, then swapped in
                    d = next((x for x in self.dictionaries if x.dictionary_id == did), None)
                    if d is None:
                        del self._indexes[did]
                        continue
                    self._built += 1
                    self._indexes[did] = FeatureIndex(self.store, did, d.width, self.db, f"idx_{did}_{self._built}")
                    self.db.execute(f"DROP TABLE IF EXISTS {ix.table}")
                    self.refreshed["rebuilt"] += 1
                else:
                    self.refreshed["features"] += n
            if self._labels is not None:
                self.refreshed["labels"] += self._labels.update(self.store)
            self.seq = seq
            self.refreshed["refreshes"] += 1
            self.refreshed["at"] = utc_iso("seconds")
        return True

    def watch(self, stop: threading.Event, every: float = REFRESH_SECONDS) -> None:
        """Refresh every `every` seconds until `stop` is set (the server's thread); a long transaction of a
        writer (StoreBusy) or a failed refresh is tried again at the next look."""
        while not stop.wait(every):
            try:
                self.refresh()
            except Exception:  # noqa: BLE001 - a look that failed is retried; requests are not affected
                continue

    def overview(self, d: Dictionary, scorer: str | None, limit: int) -> dict:
        """The index's plots of `d` (`/api/overview`); kept until the store changes."""
        ix = self.index(d)  # a scorer this dictionary has no grade of: an empty scatter
        scorer = scorer or ("simulation" if "simulation" in ix.scorers else (ix.scorers or [None])[0])
        key = (d.dictionary_id, scorer, limit)
        got = self._overviews.get(d.dictionary_id)  # one kept per dictionary: the last asked for
        if got is None or got["key"] != key or got["seq"] != self.seq:
            total, points = ix.scatter(scorer, limit) if scorer in ix.scorers else (0, [])
            got = {"key": key, "seq": self.seq,
                   "doc": {"dictionary": d.name, "density": self.store.activations.density_histogram(d.dictionary_id),
                           "scatter": {"scorer": scorer, "total": total, "points": points}}}
            self._overviews[d.dictionary_id] = got
        return got["doc"]

    def labels(self) -> "LabelIndex":
        if self._labels is None:
            with self._lock:
                if self._labels is None:
                    from ..search import LabelIndex

                    self._labels = LabelIndex(self.store)
        return self._labels


def dictionary_infos(b: Browser) -> list[dict]:
    """The store's dictionaries with their labelled counts, scorers (and what each measures) and whether a
    trace's model is loaded, the default one first."""
    from ..score import MEASURES

    out = []
    for d in sorted(b.dictionaries, key=lambda d: d.dictionary_id != b.default.dictionary_id):
        ix = b.index(d)
        out.append({"name": d.name, "model": d.model, "hook": d.hook, "kind": d.kind, "width": d.width,
                    "labelled": ix.labelled, "scorers": ix.scorers,
                    "measures": {n: MEASURES[n] for n in ix.scorers if n in MEASURES}, "tracer": b.tracer_state(d)})
    return out



def describe_hits(store: Store, hits: list[dict]) -> list[dict]:
    """Search hits with their dictionary name, label, its grades (newest per scorer, with their 95% intervals),
    the feature's density and max, and a top window."""
    names = {d.dictionary_id: d for d in store.dictionaries()}
    texts = store.labels.explanations([h["explanation_id"] for h in hits])
    grades = store.labels.grade_values([h["explanation_id"] for h in hits])
    tops: dict[tuple[int, int], dict] = {}
    stats: dict[tuple[int, int], Any] = {}
    for did in {h["dictionary_id"] for h in hits}:
        feats = [h["feature"] for h in hits if h["dictionary_id"] == did]
        got = store.activations.feature_stats(did, feats)
        stats.update({(did, st.feature): st for st in got})
        spots = [(st.feature, st.max_context, st.max_position) for st in got
                 if st.max_context is not None and st.max_position is not None]  # both set, or neither
        for (f, _, _), w in zip(spots, store.activations.top_windows(names[did].corpus_id, [(c, p) for _, c, p in spots])):
            tops[(did, f)] = w
    out = []
    for h in hits:
        key, g = (h["dictionary_id"], h["feature"]), grades.get(h["explanation_id"], {})
        st = stats.get(key)
        out.append({"dictionary": names[h["dictionary_id"]].name, "feature": h["feature"],
                    "label": texts[h["explanation_id"]].text, "similarity": h["similarity"],
                    "scores": {n: v for n, (v, _) in g.items()}, "ci": {n: ci for n, (_, ci) in g.items()},
                    "density": None if st is None else st.density, "max": None if st is None else st.max_value,
                    "top": tops.get(key)})
    return out
