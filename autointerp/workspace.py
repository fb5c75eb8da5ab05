"""The Python API: a store as a notebook holds it.

    import autointerp

    ws = autointerp.open("sae.duckdb")                     # a reader (write=True: the store's one writer)
    ws.dictionaries()                                      # [Dictionary(...)]
    ws.features(sort="simulation", by="lower", limit=20)   # a pyarrow Table (.to_pandas() for a DataFrame)
    ws.labels(features=[3, 17])                            # label records, as `export` writes them
    ws.show(17)                                            # one feature in full (a dict, as `show --json`)
    ws.search("months of the year")                        # the features whose labels mean that
    ws.label(LabelRun(features=range(100)))                # label (needs write=True); a RunSummary

Every read goes through the store's repositories, so a workspace reads beside a running job or `serve`; a
workspace opened for writing is the store's one writer until `close()` (or the `with` block ends).
`autointerp.scan` labels a model and dictionary a notebook already holds (a torch module and an `encode`
callable), with no files of the caller's.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import numpy as np
import pyarrow as pa

from .errors import UsageError
from .records import Dictionary, FeatureSample, FeatureStats, OutputTokens, SamplerConfig
from .store import FIXED_SORTS, FeatureIndex, open_store

if TYPE_CHECKING:
    from .search import LabelIndex


@dataclass(frozen=True)
class FeatureView:
    """One feature in full (`show`, `Workspace.show`): its statistics, every label with every grade, the
    outcomes of runs that left it without one, its sample (drawn as its label's run drew it) and its
    logit-lens tokens."""

    dictionary: Dictionary
    feature: int
    stats: FeatureStats
    labels: list[dict]
    outcomes: list[dict]
    sample: FeatureSample
    outputs: OutputTokens | None

    @classmethod
    def read(cls, store, d: Dictionary, feature: int) -> FeatureView:
        from .sample import Sampler

        if not 0 <= feature < d.width:
            raise UsageError(f"feature {feature} out of range: dictionary {d.name!r} has features 0..{d.width - 1}")
        stats = store.activations.feature_stats(d.dictionary_id, [feature])[0]
        rows = store.labels.find(d.dictionary_id, [feature], candidates=True)
        outcomes = [o for st in ("failed", "skipped") for o in store.labels.label_outcomes(d.dictionary_id, st)
                    if o["feature_id"] == feature]
        chosen = next((r for r in rows if r["chosen"]), None)
        config = SamplerConfig(**chosen["sampler"]) if chosen else SamplerConfig()
        sample = Sampler(store, d, config, chosen["seed"] if chosen else 0).sample(feature)
        outputs = store.activations.output_tokens(d.dictionary_id, [feature]).get(feature)
        return cls(d, feature, stats, rows, outcomes, sample, outputs)

    def to_json(self) -> dict:
        return {"dictionary": self.dictionary.name, "feature": self.feature, "stats": self.stats.__dict__,
                "labels": self.labels, "outcomes": self.outcomes, "sample": self.sample.to_json(),
                "outputs": self.outputs.to_json() if self.outputs else None}


class Workspace:
    """One store, for a notebook (see the module's docstring). Open with `autointerp.open(path)`."""

    def __init__(self, path: str | Path, *, write: bool = False, wait: float | None = None) -> None:
        path = Path(path)
        if not write and not path.exists():
            from .errors import StoreError

            raise StoreError(f"no store at {path} (ingest or capture into it first, or open it with write=True)")
        self.store = open_store(path, read_only=not write, wait=wait)
        self._mem = duckdb.connect(":memory:")
        self._indexes: dict[int, tuple[int, FeatureIndex]] = {}  # dictionary id -> (change seq, its index)
        self._search: tuple[int, LabelIndex] | None = None  # (the change seq it was read at, the index)

    # -- lifecycle ---------------------------------------------------------------------------------

    @property
    def path(self) -> Path:
        return self.store.path

    def close(self) -> None:
        self._mem.close()
        self.store.close()

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        names = ", ".join(d.name for d in self.store.dictionaries())
        return f"<autointerp workspace {self.path} ({'writer' if not self.store.read_only else 'reader'}): {names}>"

    # -- reads -------------------------------------------------------------------------------------

    def dictionaries(self) -> list[Dictionary]:
        return self.store.dictionaries()

    def dictionary(self, name: str | None = None) -> Dictionary:
        """The named dictionary; with no name, the store's only one."""
        return self.store.dictionary(name)

    def features(self, dictionary: str | None = None, *, sort: str = "feature", descending: bool = False,
                 query: str = "", offset: int = 0, limit: int = 100, by: str = "value") -> pa.Table:
        """One page of a dictionary's features with their label and grades, as the browser's index pages
        them: `sort` by feature, density, max or a scorer (`by="lower"`: the lower end of its 95% interval);
        `query` keeps the features whose label contains it. Columns: feature, label, density, max,
        n_firing, then per scorer its value and interval ends (<scorer>, <scorer>_low, <scorer>_high)."""
        if limit < 1 or offset < 0:
            raise UsageError(f"limit must be positive and offset not negative (got {limit}, {offset})")
        if by not in ("value", "lower"):
            raise UsageError(f"by must be value or lower, not {by!r}")
        d = self.dictionary(dictionary)
        ix = self._index(d)
        if sort not in (*FIXED_SORTS, *ix.scorers):
            raise UsageError(f"sort {sort!r} is not one of: {', '.join((*FIXED_SORTS, *ix.scorers))}")
        _, rows = ix.page(sort, "desc" if descending else "asc", query, offset, limit, by)
        cols: dict[str, list] = {k: [r[k] for r in rows] for k in ("feature", "label", "density", "max", "n_firing")}
        for name in ix.scorers:
            cols[name] = [r["scores"][name] for r in rows]
            cols[f"{name}_low"] = [None if r["ci"][name] is None else r["ci"][name][0] for r in rows]
            cols[f"{name}_high"] = [None if r["ci"][name] is None else r["ci"][name][1] for r in rows]
        return pa.table(cols)

    def _index(self, d: Dictionary) -> FeatureIndex:
        """The dictionary's feature index, read again when a writer changed labels since it was read."""
        seq = self.store.labels.change_seq()
        held = self._indexes.get(d.dictionary_id)
        if held is not None and held[0] == seq:
            return held[1]
        if held is not None:
            _, changed = self.store.labels.changes_after(held[0])
            if held[1].update(self.store, changed.get(d.dictionary_id, np.zeros(0, np.int64))) is not None:
                self._indexes[d.dictionary_id] = (seq, held[1])
                return held[1]
            self._mem.execute(f"DROP TABLE IF EXISTS {held[1].table}")
        ix = FeatureIndex(self.store, d.dictionary_id, d.width, self._mem, f"idx_{d.dictionary_id}_{seq}")
        self._indexes[d.dictionary_id] = (seq, ix)
        return ix

    def labels(self, dictionary: str | None = None, features: Iterable[int] | None = None, *,
               sort: str | None = None, descending: bool = True, limit: int | None = None,
               candidates: bool = False) -> list[dict]:
        """Labels with their grades and provenance (the records `export` writes, one per label): of
        `features` (default: all), sorted by feature or by a scorer's grade."""
        d = self.dictionary(dictionary)
        feats = None if features is None else sorted({int(f) for f in features})
        return self.store.labels.find(d.dictionary_id, feats, sort_by=sort, descending=descending, limit=limit,
                                      candidates=candidates)

    def show(self, feature: int, dictionary: str | None = None) -> dict:
        """One feature in full, as `autointerp show --json` prints it: statistics, every label with every
        grade, outcomes without a label, its sample (top and quantile windows, held-out windows) and its
        logit-lens tokens."""
        return FeatureView.read(self.store, self.dictionary(dictionary), feature).to_json()

    def search(self, text: str, dictionary: str | None = None, limit: int = 20) -> list[dict]:
        """The features whose labels are nearest `text` in meaning, best first: {dictionary, feature, label,
        similarity, scores, top window}. Labels without a stored vector are not found (`autointerp search`
        embeds them first)."""
        from .export.browser import describe_hits
        from .search import LabelIndex

        if not text.strip():
            raise UsageError("the query is empty")
        d = self.dictionary(dictionary) if dictionary else None
        seq = self.store.labels.change_seq()
        if self._search is None or self._search[0] != seq:
            self._search = (seq, LabelIndex(self.store))
        return describe_hits(self.store, self._search[1].query(text, limit, None if d is None else d.dictionary_id))

    def sample(self, feature: int, dictionary: str | None = None, config: SamplerConfig | None = None,
               seed: int = 0):
        """A feature's sample (nothing stored): the windows an explainer sees and the held-out ones it is
        graded on."""
        from .sample import Sampler

        return Sampler(self.store, self.dictionary(dictionary), config or SamplerConfig(), seed).sample(feature)

    # -- writes ------------------------------------------------------------------------------------

    def label(self, run=None, dictionary: str | None = None, progress: bool = False):
        """Label a dictionary's features as `run` (a LabelRun) says; returns the RunSummary. The workspace
        must be open for writing."""
        from .pipeline import label

        return label(self.store, self.dictionary(dictionary), run, progress=progress)

    def capture(self, config):
        """Capture a model's activations into the store (a CaptureConfig); returns the CaptureResult."""
        from .capture import capture

        return capture(self.store, config)


def open(path: str | Path, *, write: bool = False, wait: float | None = None) -> Workspace:  # noqa: A001
    """The store at `path` as a Workspace: a reader, or (`write=True`) the store's one writer, made if it
    does not exist (`wait`: seconds to wait for another writer)."""
    return Workspace(path, write=write, wait=wait)
