"""What one labelling run does: a frozen `LabelRun`, built alike by the CLI (`autointerp label`) and by job
files (`autointerp job run`), and the `Budget` that may stop it."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from ..errors import UsageError
from ..llm import LLMOptions
from ..records import SamplerConfig, check_seed
from ..score.base import ScoringOptions


class Spending(Protocol):
    """What a budget reads of each LLM client: what this run's calls cost so far."""

    @property
    def spent_usd(self) -> float: ...

    @property
    def spent_tokens(self) -> int: ...


class BudgetCheck(Protocol):
    """Asked before each feature starts: which limit is reached (a reason), or None. `Budget` answers at
    once; a Ray worker's stand-in asks the run's coordinator (an awaitable answer)."""

    def reached(self, clients: Sequence[Spending], started: int,
                elapsed: float) -> str | None | Awaitable[str | None]: ...


@dataclass(frozen=True)
class Budget:
    """Limits of one run; None is no limit. When one is reached no new feature starts, the features in
    flight finish and are committed, and the summary says which limit stopped the run. Dollars and
    tokens are what this run's LLM calls cost (cache hits are free), so the run may pass the limit by
    what the features in flight spend (at most `concurrency` features)."""

    dollars: float | None = None
    tokens: int | None = None
    features: int | None = None
    seconds: float | None = None

    def reached(self, clients: Sequence[Spending], started: int, elapsed: float) -> str | None:
        return self.exceeded(sum(c.spent_usd for c in clients), sum(c.spent_tokens for c in clients), started,
                             elapsed)

    def exceeded(self, usd: float, tokens: int, started: int, elapsed: float) -> str | None:
        """Which limit the spending so far has reached ("budget: dollars (...)"), or None."""
        for name, used, limit in (("dollars", usd, self.dollars), ("tokens", tokens, self.tokens),
                                  ("features", started, self.features), ("seconds", elapsed, self.seconds)):
            if limit is not None and used >= limit:
                return f"budget: {name} ({used:.4g} of {limit:.4g})"
        return None


@dataclass(frozen=True)
class BatchOptions:
    """Send every uncached LLM request through the providers' batch APIs first (half price, slower)."""

    enabled: bool = False
    poll: float = 30.0  # seconds between status polls
    wait: float | None = None  # stop polling after this many seconds (a rerun collects what is pending)

    def __post_init__(self) -> None:
        if not self.poll > 0:
            raise UsageError(f"--batch-poll must be a positive number of seconds, got {self.poll}")
        if self.wait is not None and not self.wait >= 0:
            raise UsageError(f"--batch-wait must be 0 or more seconds, got {self.wait}")


@dataclass(frozen=True)
class CarryOptions:
    """Carry labels from a matched dictionary (`label --carry-from`): a feature of this dictionary whose
    partner in `source` (by `method`, similarity at least `min_similarity`; see match/) has a label made by
    this run's explainer and prompt first gets that label, graded on its own held-out windows by the run's
    scorers. It is explained anew only when its grade by the deciding scorer (`select_by`, or the first
    scorer) is below `min_score`, or below the partner's own grade by more than `margin`, or failed. A
    feature with no such partner is explained as usual. The match is computed first if it is not stored."""

    source: str | None = None
    min_similarity: float = 0.8
    method: str = "coactivation"
    min_score: float | None = None
    margin: float = 0.1

    def __post_init__(self) -> None:
        if self.method not in ("coactivation", "decoder"):
            raise UsageError(f"carry method must be coactivation or decoder, not {self.method!r}")
        if not -1.0 <= self.min_similarity <= 1.0:
            raise UsageError(f"--min-similarity must be between -1 and 1, got {self.min_similarity}")
        if not 0 <= self.margin <= 2:  # grades lie in [-1, 1]; NaN fails this too
            raise UsageError(f"--carry-margin must be from 0 to 2, got {self.margin}")
        if self.min_score is not None and not math.isfinite(self.min_score):  # above every grade: never kept
            raise UsageError(f"--carry-min-score must be a finite number, got {self.min_score}")


MIN_EVIDENCE = ScoringOptions.min_evidence  # activating and non-firing windows a classification grade needs, each


@dataclass(frozen=True)
class LabelRun:
    """One labelling run of one dictionary.

    `explainer`: "offline", "anthropic:MODEL", "openai:MODEL", "compat:MODEL" (or an explainer object);
    `scorers`: names or scorer objects; `scorer_model`: the model the LLM forms of the scorers run on;
    `select_by`: best-of-k, the scorer that picks the label among candidates (default: the first scorer).
    `features`: the selection (ids, a spec like "0-99,123", or None for all). `scoring`: how every
    scorer grades (minimum evidence, the LLM simulator's prompt, intruder questions, bootstrap, an
    adaptive window budget: see score/base.py). `force`: redo features that are done.
    `sample_batch`, `flush_every`, `flush_seconds`: features sampled per batch; commit every so many
    finished features or seconds. `carry`: labels carried from a matched dictionary (CarryOptions).
    """

    explainer: object = "offline"
    scorers: tuple = ("simulation",)
    scorer_model: str | None = None
    select_by: object = None  # a scorer's name, a scorer object, or None (the first scorer)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    seed: int = 0
    features: object = None
    concurrency: int = 8
    llm: LLMOptions = field(default_factory=LLMOptions)
    batch: BatchOptions = field(default_factory=BatchOptions)
    budget: BudgetCheck = field(default_factory=Budget)
    force: bool = False
    scoring: ScoringOptions = field(default_factory=ScoringOptions)
    carry: CarryOptions = field(default_factory=CarryOptions)
    sample_batch: int = 256
    flush_every: int = 64
    flush_seconds: float = 5.0

    def __post_init__(self) -> None:
        for name in ("concurrency", "sample_batch", "flush_every"):
            if getattr(self, name) < 1:
                raise UsageError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.concurrency > MAX_CONCURRENCY:
            raise UsageError(f"concurrency must be at most {MAX_CONCURRENCY} (features in flight at once; the "
                             f"provider's --max-in-flight bounds the calls), got {self.concurrency}")
        check_seed(self.seed)  # a 64-bit integer, else UsageError (exit 2)
        if isinstance(self.scorers, str):
            object.__setattr__(self, "scorers", (self.scorers,))
        else:
            object.__setattr__(self, "scorers", tuple(self.scorers))

    def selected(self, width: int) -> np.ndarray:
        """The selected feature ids, sorted and unique; an id outside 0..width-1 is an error."""
        if self.features is None:
            return np.arange(width, dtype=np.int64)
        if isinstance(self.features, str):
            return parse_features(self.features, width)
        feats = np.unique(np.asarray(list(self.features) if isinstance(self.features, range) else self.features,
                                     dtype=np.int64))
        if len(feats) and (feats[0] < 0 or feats[-1] >= width):
            _out_of_range(int(feats[0] if feats[0] < 0 else feats[-1]), width)
        return feats


def _out_of_range(bad: int, width: int) -> None:
    raise UsageError(f"feature {bad} is out of range: the dictionary has features 0..{width - 1}")


MAX_FEATURE_ID = 2**32 - 1  # the store's feature column is a UINTEGER
MAX_CONCURRENCY = 1024  # features explained and scored at once: each holds its sample and a worker


def parse_ranges(spec: str) -> list[tuple[int, int]]:
    """"0-99,123" -> [(0, 99), (123, 123)]; a malformed, reversed or impossible range is a UsageError naming it.
    Checks the text only (cheap whatever the ranges span): `parse_features` makes the ids."""
    out: list[tuple[int, int]] = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        try:
            a, b = (int(lo), int(hi)) if sep else (int(part), int(part))
        except ValueError:
            raise UsageError(f"bad feature list {spec!r}: {part!r} is not an id or a range like 0-99") from None
        if b < a:
            raise UsageError(f"bad feature list {spec!r}: the range {part} is reversed (did you mean {b}-{a}?)")
        if b > MAX_FEATURE_ID:
            raise UsageError(f"bad feature list {spec!r}: {b} is beyond any dictionary (ids are below 2^32)")
        out.append((a, b))
    if not out:
        raise UsageError(f"bad feature list {spec!r}: no feature ids in it")
    return out


def parse_features(spec: str, width: int) -> np.ndarray:
    """"0-99,123" -> the ids, sorted and unique, of a dictionary `width` wide (an id past it: LabelError,
    raised before any range is made, so "0-5000000000" costs nothing)."""
    ranges = sorted(parse_ranges(spec))
    top = max(b for _, b in ranges)
    if top >= width:
        _out_of_range(top, width)
    merged = [list(ranges[0])]  # overlapping ranges joined first: memory is the ids, never their repeats
    for a, b in ranges[1:]:
        if a <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return np.concatenate([np.arange(a, b + 1, dtype=np.int64) for a, b in merged])
