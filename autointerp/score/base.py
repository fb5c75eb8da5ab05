"""What every scorer shares: its options, the evidence rule, and the loop that judges windows and grades them.

A scorer grades one explanation (or, for a feature-level scorer such as intruder, the feature itself)
on the feature's held-out windows. It is written as three steps:

- `units(sample)`: what is judged, in order: held-out windows, or intruder questions built from them;
- `judge(sample, explanation, units)`: an observation per unit (a similarity, a prediction per token, a
  yes/no answer); LLM scorers `await` it, and a reply that cannot be used raises `ReplyFailure`;
- `grade(sample, units, observations)`: the Score, with its value, 95% bootstrap interval
  (score/interval.py) and the evidence counts.

`score(sample, explanation)` runs them. With an adaptive budget (`ScoringOptions.adaptive`) the units are
put in a seeded, stratified order and judged in rounds: after each round the grade is computed on what
was judged so far, and the loop stops once the interval's half-width is at most the target, or the cap
is reached. The grade records how many units it used and why it stopped.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass

import numpy as np

from ..contracts import ScorerBase
from ..clock import utcnow as _now
from ..errors import UsageError
from ..llm import ProviderError, ReplyFailure
from ..records import MAX_SET_WINDOWS, Explanation, Failure, FeatureSample, Score, Window
from . import interval as ci
from . import metrics

NEGATIVE_KINDS = ("random", "neighbor")
MAX_BOOT = 10_000  # bootstrap replicates: ten times the default; each pool is 4 x n_boot x windows counts
FEATURE_LEVEL = ("intruder",)  # scorers that grade the feature, not its label: kept apart in exports


def activating(windows) -> np.ndarray:
    """1 for an activating held-out window, 0 for a non-firing one."""
    return np.array([0 if w.kind in NEGATIVE_KINDS else 1 for w in windows], dtype=np.int64)


@dataclass(frozen=True)
class AdaptiveBudget:
    """Judge held-out windows in rounds until the grade's 95% interval is narrow enough."""

    target: float = 0.05  # stop once the interval's half-width is at most this
    start: int = 20  # units in the first round
    step: int = 20  # units added each further round
    cap: int | None = None  # at most this many units (None: every held-out window)

    def __post_init__(self) -> None:
        if not 0 < self.target < 1:
            raise UsageError(f"adaptive target must be a half-width in (0, 1), got {self.target}")
        if self.start < 2 or self.step < 1 or (self.cap is not None and self.cap < self.start):
            raise UsageError("adaptive budget needs start >= 2, step >= 1 and cap >= start")
        for name in ("start", "step", "cap"):  # windows: a sample holds at most MAX_SET_WINDOWS held out
            if (getattr(self, name) or 0) > MAX_SET_WINDOWS:
                raise UsageError(f"adaptive {name} must be at most {MAX_SET_WINDOWS} windows (what a sample holds), "
                                 f"got {getattr(self, name)}")

    @property
    def key(self) -> str:
        return f"adaptive={self.target:g},{self.start},{self.step},{self.cap}"

    def ends(self, n: int) -> list[int]:
        """How many units are judged after each round."""
        top = n if self.cap is None else min(n, self.cap)
        out = list(range(min(self.start, top), top, self.step))
        return (out + [top]) if not out or out[-1] != top else out


@dataclass(frozen=True)
class ScoringOptions:
    """How every scorer of a run grades.

    `min_evidence`: a classification grade (embedding AUROC, detection, fuzzing) needs at least this
    many activating and this many non-firing windows, an intruder grade this many questions, else it is
    "undefined". `simulator`: the LLM simulator's prompt template (simulate_json: a number for every
    token; simulate_sparse: only the tokens it predicts non-zero), a name in prompts/ or a path.
    `intruder_k`: activating windows per intruder question (chance is 1/(k+1)). `n_boot`: bootstrap
    replicates of each interval. `adaptive`: judge windows in rounds until the interval is narrow.
    `windows_per_call`: windows an LLM scorer shows in one call (intruder: questions of k+1 windows).
    `windows`: held-out windows an LLM simulation, detection or fuzzing grade judges at most, drawn
    stratified and seeded from the sample's held-out set (None: all of them); offline scorers, which cost
    nothing a window, and intruder questions always use every window. 40 by default, chosen by
    eval/quality.py's sweep: on SAE latents detection's own-vs-swapped separation at 40 windows was
    equal to all 100 (0.712), at half the cost (docs/benchmarks.md, "Cheaper by design").
    """

    min_evidence: int = 10
    simulator: str = "simulate_json"
    intruder_k: int = 4
    n_boot: int = ci.N_BOOT
    adaptive: AdaptiveBudget | None = None
    windows_per_call: int = 20
    windows: int | None = 40

    def __post_init__(self) -> None:
        if self.min_evidence < 1:
            raise UsageError(f"min_evidence must be at least 1, got {self.min_evidence}")
        if self.min_evidence > MAX_SET_WINDOWS:  # never met: every grade would be undefined
            raise UsageError(f"min_evidence must be at most {MAX_SET_WINDOWS} (the held-out windows a sample holds), "
                             f"got {self.min_evidence}")
        if not 2 <= self.intruder_k <= 9:
            raise UsageError(f"intruder_k must be from 2 to 9, got {self.intruder_k}")
        if self.n_boot < 100:
            raise UsageError(f"n_boot must be at least 100, got {self.n_boot}")
        if self.n_boot > MAX_BOOT:
            raise UsageError(f"n_boot must be at most {MAX_BOOT} (each interval holds n_boot x windows draw counts), "
                             f"got {self.n_boot}")
        if not 1 <= self.windows_per_call <= MAX_SET_WINDOWS:
            raise UsageError(f"windows_per_call must be from 1 to {MAX_SET_WINDOWS}, got {self.windows_per_call}")
        if self.windows is not None and self.windows < 2:
            raise UsageError(f"windows must be at least 2 (one of each class), got {self.windows}")
        if self.windows is not None and self.windows > MAX_SET_WINDOWS:
            raise UsageError(f"windows must be at most {MAX_SET_WINDOWS} (the held-out windows a sample holds; 0: "
                             f"all of them), got {self.windows}")

    def suffix(self, budgeted: bool = False) -> str:
        """What the options add to a scorer's version (a grade made otherwise is another version);
        `budgeted`: the scorer takes the `windows` budget."""
        return (f"ci{self.n_boot}" + (f"/w{self.windows}" if budgeted and self.windows else "")
                + (f"/{self.adaptive.key}" if self.adaptive else ""))


def evidence(labels: np.ndarray, minimum: int) -> tuple[dict, str | None]:
    """The counts a classification grade rests on, and why it is undefined (None: enough evidence):
    at least `minimum` windows of each class."""
    n_pos = int(np.sum(labels == 1))
    n_neg = int(len(labels) - n_pos)
    counts = {"n_activating": n_pos, "n_nonfiring": n_neg, "min_evidence": minimum}
    if n_pos < minimum or n_neg < minimum:
        return counts, (f"too little evidence: {n_pos} activating and {n_neg} non-firing windows "
                        f"(at least {minimum} of each needed)")
    return counts, None


def n_tokens(windows) -> int:
    return int(sum(len(w.tokens) for w in windows))


def windows_of(units) -> list[Window]:
    """The windows behind judged units: windows themselves, shown windows (`.window`), questions (`.windows`)."""
    out: list[Window] = []
    for u in units:
        out += u.windows if hasattr(u, "windows") else [u.window] if hasattr(u, "window") else [u]
    return out


class ScoringLoop(ScorerBase):
    """The shared loop (see the module's doc). Subclasses set `name`, `version` and `options` and give
    `units` and `grade`, and `judge` through `Scorer` (plain) or `AsyncScorer` (awaited); `too_little` may
    refuse a grade before anything is judged."""

    name = ""
    version = ""
    budgeted = False  # judges at most `options.windows` units (the paid scorers)
    options = ScoringOptions()

    def units(self, sample: FeatureSample):
        return sample.score  # the sample's own tuple: scorers of one feature share the encoder's gather of it

    def strata(self, units: list) -> np.ndarray:
        """The class of each unit the bootstrap and the adaptive order keep apart."""
        return activating(units)

    def too_little(self, sample: FeatureSample, units: list) -> Score | None:
        return None

    def grade(self, sample: FeatureSample, units: list, observations: list) -> Score:
        raise NotImplementedError

    # -- helpers for subclasses ---------------------------------------------------------------------

    def rng(self, sample: FeatureSample) -> np.random.Generator:
        return ci.rng_for(sample.seed, sample.feature, self.name)

    def made(self, value_fn, interval_fn, details: dict, n_windows: int, tokens: int) -> Score:
        """An "ok" Score of `value_fn()` with the interval `interval_fn()`, or "undefined" where the metric
        has no value (metrics.Undefined)."""
        try:
            value = value_fn()
        except metrics.Undefined as e:
            return Score(self.name, self.version, "undefined", None, str(e), details, _now(), None, n_windows, tokens)
        iv = interval_fn()
        if iv is None:
            details = {**details, "interval": "undefined: too many bootstrap resamples have no value"}
        return Score(self.name, self.version, "ok", round(float(value), 6), "", details, _now(),
                     None if iv is None else (iv.low, iv.high), n_windows, tokens)

    def undefined(self, reason: str, details: dict | None = None, units: list | None = None) -> Score:
        """An "undefined" Score; `units`: what was judged before it could say so (counted as its evidence)."""
        wins = windows_of(units or ())
        return Score(self.name, self.version, "undefined", None, reason, details or {}, _now(), None,
                     len(wins), n_tokens(wins))

    def failed(self, err: Exception) -> Score:
        kind = "provider" if isinstance(err, ProviderError) else "reply"
        return Score(self.name, self.version, "failed", None, details={}, created_at=_now(),
                     failure=Failure(kind, str(err)))

    # -- the loop -----------------------------------------------------------------------------------

    def _plan(self, sample: FeatureSample) -> tuple[list, list[int], Score | None]:
        """The units to judge, in order; how many are judged after each round; a grade given before any
        (too little evidence in what would be judged: nothing is asked)."""
        units = self.units(sample)
        budget, cap = self.options.adaptive, self.options.windows if self.budgeted else None
        if cap is not None and cap < len(units):
            units = budget_cut(units, self.strata(units), self.rng(sample), cap)
        if budget is not None:
            units = adaptive_order(units, self.strata(units), self.rng(sample))
        return units, budget.ends(len(units)) if budget else [len(units)], self.too_little(sample, units)

    def _settled(self, score: Score, used: int, n_units: int, ends: list[int], rounds: int) -> tuple[bool, Score]:
        """Whether the adaptive loop stops after this round, and the grade with how it stopped."""
        budget = self.options.adaptive
        if budget is None:
            return True, score
        narrow = score.interval is not None and (score.interval[1] - score.interval[0]) / 2 <= budget.target
        last = used >= ends[-1]
        if not (narrow or last):
            return False, score
        how = {"rounds": rounds, "units_used": used, "units_available": n_units,
               "stopped": "interval" if narrow else "all units" if ends[-1] == n_units else "cap"}
        return True, Score(score.scorer, score.scorer_version, score.status, score.value, score.reason,
                           {**score.details, "adaptive": how}, score.created_at, score.interval, score.n_windows,
                           score.n_tokens)

    def _rounds(self, sample: FeatureSample) -> Generator[list, list, Score]:
        """The loop, once for the plain and the awaited `judge`: yields the units of each round, is sent
        their observations, and returns the grade (StopIteration's value)."""
        units, ends, early = self._plan(sample)
        if early is not None:
            return early
        obs: list = []
        for r, end in enumerate(ends, 1):
            # every unit at once: the units themselves (the encoder keeps its last gather by identity)
            obs += yield units if (not obs and end == len(units)) else units[len(obs):end]
            stop, out = self._settled(self.grade(sample, units if end == len(units) else units[:end], obs),
                                      end, len(units), ends, r)
            if stop:
                return out
        raise AssertionError("unreachable: the last round always settles")


class Scorer(ScoringLoop):
    """A scorer whose `judge` is a plain function (the offline scorers)."""

    def judge(self, sample: FeatureSample, explanation: Explanation, units: list) -> list:
        raise NotImplementedError

    def score(self, sample: FeatureSample, explanation: Explanation) -> Score:
        rounds = self._rounds(sample)
        try:
            todo = next(rounds)
            while True:
                try:
                    got = self.judge(sample, explanation, todo)
                except (ProviderError, ReplyFailure) as err:
                    return self.failed(err)
                todo = rounds.send(got)
        except StopIteration as done:
            return done.value


class AsyncScorer(ScoringLoop):
    """A scorer whose `judge` is a coroutine (the LLM scorers): the same loop, awaited."""

    async def judge(self, sample: FeatureSample, explanation: Explanation, units: list) -> list:
        raise NotImplementedError

    async def score(self, sample: FeatureSample, explanation: Explanation) -> Score:
        rounds = self._rounds(sample)
        try:
            todo = next(rounds)
            while True:
                try:
                    got = await self.judge(sample, explanation, todo)
                except (ProviderError, ReplyFailure) as err:
                    return self.failed(err)
                todo = rounds.send(got)
        except StopIteration as done:
            return done.value


def budget_cut(units, strata: np.ndarray, rng: np.random.Generator, cap: int) -> list:
    """`cap` of the units, seeded: half from each of two strata (activating, non-firing), the rest from
    the other where one has too few; in a stratified order (`adaptive_order`)."""
    classes = [np.flatnonzero(strata == k) for k in np.unique(strata)]
    take, left = [0] * len(classes), cap
    for j, i in enumerate(sorted(range(len(classes)), key=lambda i: len(classes[i]))):  # the smallest first
        take[i] = min(len(classes[i]), left // (len(classes) - j))  # an equal share of what is left
        left -= take[i]
    chosen = np.sort(np.concatenate([c[rng.permutation(len(c))[:t]] for c, t in zip(classes, take)]))
    picked = [units[i] for i in chosen]
    return adaptive_order(picked, strata[chosen], rng)


def adaptive_order(units: list, strata: np.ndarray, rng: np.random.Generator) -> list:
    """`units` shuffled within each stratum and interleaved in proportion, so every prefix holds the
    strata in about their overall shares (a round of 20 out of 50 activating and 50 non-firing: 10 and 10)."""
    keys = np.zeros(len(units))
    for k in np.unique(strata):
        idx = np.flatnonzero(strata == k)
        keys[idx[rng.permutation(len(idx))]] = (np.arange(len(idx)) + 0.5) / len(idx)
    return [units[i] for i in np.argsort(keys, kind="stable")]
