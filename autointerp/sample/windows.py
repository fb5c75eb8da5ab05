"""The small records the sampler's phases (select.py) pass along: a chunk of features, its activation rows,
windows at each stage (candidates, ranked, split, chosen), and the sets and kinds a window is stored under
(IntEnums whose values are the indices the store receives)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from enum import IntEnum

import numpy as np

from ..records import SamplerConfig


class SampleSet(IntEnum):
    """The set a window goes to. The value is the index into SAMPLE_SETS that the store receives."""

    EXPLAIN = 0
    SCORE = 1


class WindowKind(IntEnum):
    """How a window was chosen. The value is the index into WINDOW_KINDS that the store receives."""

    TOP = 0
    QUANTILE = 1
    RANDOM = 2
    NEIGHBOR = 3


EXPLAIN, SCORE = "explain", "score"
SAMPLE_SETS = (EXPLAIN, SCORE)  # refs["sample_set"] holds indices into this
WINDOW_KINDS = ("top", "quantile", "random", "neighbor")  # refs["kind"] holds indices into this


# -- records --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Chunk:
    """What every phase shares: the chunk's features, the corpus's context lengths, config and seed."""

    features: np.ndarray  # sorted global feature ids; position i is chunk-local feature i
    lengths: np.ndarray  # tokens in each context of the corpus (int64)
    cfg: SamplerConfig
    seed: int


@dataclass
class ChunkRows:
    """The chunk's activation rows, in (feature, context, position) order."""

    feature: np.ndarray  # chunk-local feature index (int64)
    context: np.ndarray  # int64
    position: np.ndarray
    value: np.ndarray


@dataclass
class Windows:
    """Windows, one element each: chunk-local feature, context, first token, number of tokens."""

    feature: np.ndarray
    context: np.ndarray
    start: np.ndarray
    length: np.ndarray

    def __len__(self) -> int:
        return len(self.feature)

    def take(self, index: np.ndarray):
        """The windows at `index` (integer indices or a mask), as a record of the same type."""
        return type(self)(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    @classmethod
    def concat(cls, parts: list):
        return cls(**{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(cls)})


@dataclass
class Candidates(Windows):
    """Candidate activating windows (rule 1), with the peak activation of each."""

    peak: np.ndarray  # float32

    @classmethod
    def empty(cls) -> Candidates:
        e = np.zeros(0, dtype=np.int64)
        return cls(e, e, e, e, np.zeros(0, dtype=np.float32))


@dataclass
class Ranked:
    """Candidates in rank order: by feature, then peak descending, ties in keyed-hash order."""

    windows: Candidates
    draw: np.ndarray  # keyed hash of each window (feature, context, start): the order of ties and within bins
    rank: np.ndarray  # 0, 1, 2, ... within each feature
    n_candidates: np.ndarray  # per feature


@dataclass
class Budgets:
    """Windows each feature gets (rule 2), scaled down for features with few candidates."""

    top: np.ndarray
    quantile_explain: np.ndarray
    score_activating: np.ndarray


@dataclass
class Split:
    """The ranked candidates each set takes (indices into `Ranked.windows`), before de-duplication."""

    top: np.ndarray  # explain, "top"
    explain_quantile: np.ndarray  # explain, "quantile"
    score_quantile: np.ndarray  # score, "quantile" (held out)


@dataclass
class Chosen(Windows):
    """Chosen windows, with the set each goes to and its kind (int8 SampleSet and WindowKind values)."""

    sample_set: np.ndarray
    kind: np.ndarray

    @classmethod
    def of(cls, w: Windows, sample_set: SampleSet, kind: WindowKind) -> Chosen:
        n = len(w)
        return cls(w.feature, w.context, w.start, w.length,
                   np.full(n, sample_set, dtype=np.int8), np.full(n, kind, dtype=np.int8))

    @classmethod
    def empty(cls) -> Chosen:
        e = np.zeros(0, dtype=np.int64)
        return cls(e, e, e, e, np.zeros(0, np.int8), np.zeros(0, np.int8))


@dataclass
class Occupied:
    """Where non-firing windows may not go: sorted cell keys (`cell_key`) of every activation row, and
    of the first token of every explain window."""

    firing: np.ndarray
    explain_starts: np.ndarray
