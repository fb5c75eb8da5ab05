"""LLM classification scorers: detection and fuzzing (delphi; Neuronpedia's eleuther_recall and
eleuther_fuzz). The LLM simulation scorer is in score/simulation.py (its simulators in
autointerp/simulate), the intruder scorer in score/intruder.py.

Windows go in groups of `windows_per_call`, each group one call through the provider layer (cached,
priced, rate-limited). A reply is checked before it is used (JSON of the right shape, every window
once); anything else is a typed failure of the grade ("failed: reply: <why>").
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass

import numpy as np

from ..explain.prompts import Template, render_scoring
from ..llm import ChatRequest, LLMClient
from ..llm.replies import ReplyFailure, is_int, json_list, reply_text
from ..records import Explanation, FeatureSample, Score, Window
from . import interval as ci
from . import metrics
from .base import NEGATIVE_KINDS, AsyncScorer, ScoringOptions, activating, n_tokens


def settings_version(client: LLMClient, template: Template, settings: str, options: ScoringOptions) -> str:
    """An LLM scorer's version: the model, a hash of the template and settings, the options' suffix."""
    h = hashlib.sha256(f"{template.hash}|{settings}".encode()).hexdigest()[:16]
    return f"{client.model_id}/{h}/min{options.min_evidence}/{options.suffix(budgeted=True)}"


def parse_detection(reply: str, n: int, field: str = "fires") -> list[int]:
    """One 0/1 answer per window from a reply listing (under `field`) the ids of the windows that are 1,
    checked: ids of windows that were shown, none twice."""
    ids = json_list(reply, field)
    if not all(is_int(i) for i in ids):
        raise ReplyFailure(f"'{field}' must list window ids (integers), got {str(ids)[:60]}")
    if len(set(ids)) != len(ids):
        raise ReplyFailure(f"'{field}' lists window {next(i for i in ids if ids.count(i) > 1)} twice")
    bad = [i for i in ids if not 1 <= i <= n]
    if bad:
        raise ReplyFailure(f"'{field}' lists window {bad[0]}, but windows are 1..{n}")
    listed = set(ids)
    return [int(i in listed) for i in range(1, n + 1)]


@dataclass(frozen=True)
class Shown:
    """A window as a classification scorer shows it: the class it truly is, and the tokens marked in it."""

    window: Window
    truth: int  # detection: 1 activating, 0 non-firing; fuzzing: 1 correctly marked, 0 fuzzed
    marks: tuple[bool, ...] | None = None


class LLMDetectionScorer(AsyncScorer):
    """Detection: the held-out windows, unmarked and shuffled, in groups of `windows_per_call`; the LLM
    says which ones the feature fires in. Value: balanced accuracy over activating vs non-firing windows
    (its interval: the two classes resampled apart); precision, recall and F1 in the details (no AUROC:
    the replies are yes/no, not probabilities). The shuffle is seeded by the sample, so reruns hit the cache."""

    name = "detection"
    field = "fires"
    classes = ("activating", "non-firing")  # the two classes the grade separates, as counted in details
    count_keys = ("n_activating", "n_nonfiring")
    max_tokens = 400  # the reply lists window ids: a few tokens
    budgeted = True
    client: LLMClient

    def __init__(self, client: LLMClient, template: Template, options: ScoringOptions = ScoringOptions()) -> None:
        self.client, self.template, self.options = client, template, options
        self.version = settings_version(client, template, f"per_call={options.windows_per_call}|"
                                        f"max_tokens={self.max_tokens}", options)

    def units(self, sample: FeatureSample) -> list:
        rng = np.random.default_rng([sample.seed, sample.feature, 0xDE7EC7])
        return [Shown(sample.score[i], 0 if sample.score[i].kind in NEGATIVE_KINDS else 1)
                for i in rng.permutation(len(sample.score)).tolist()]

    def strata(self, units: list) -> np.ndarray:
        return np.array([u.truth for u in units], dtype=np.int64)

    def _counts(self, units: list) -> tuple[dict, str | None]:
        truth = self.strata(units)
        n1, n0 = int(truth.sum()), int(len(truth) - truth.sum())
        counts = {self.count_keys[0]: n1, self.count_keys[1]: n0, "min_evidence": self.options.min_evidence}
        if min(n1, n0) < self.options.min_evidence:
            return counts, (f"too little evidence: {n1} {self.classes[0]} and {n0} {self.classes[1]} windows "
                            f"(at least {self.options.min_evidence} of each needed)")
        return counts, None

    def too_little(self, sample: FeatureSample, units: list) -> Score | None:
        counts, short = self._counts(units)  # never ask the model for a grade that cannot be given
        return self.undefined(short, counts) if short else None

    async def judge(self, sample: FeatureSample, explanation: Explanation, units: list) -> list:
        if self.options.adaptive or self.options.windows:  # stratified order interleaves the classes: shuffled
            rng = np.random.default_rng([sample.seed, sample.feature, 0xAD, units[0].window.context_id,
                                         units[0].window.start] if units else 0)
            order = rng.permutation(len(units))
        else:
            order = np.arange(len(units))
        shown = [units[i] for i in order]
        per = self.options.windows_per_call
        groups = [shown[i:i + per] for i in range(0, len(shown), per)]
        reqs = [ChatRequest(model=self.client.provider.model, system=self.template.system,
                            messages=(("user", render_scoring(
                                self.template, explanation.text, [u.window for u in g],
                                None if g[0].marks is None else [list(u.marks) for u in g])),),
                            max_tokens=self.max_tokens) for g in groups]
        replies = await asyncio.gather(*(self.client.complete(r, purpose=self.name) for r in reqs))
        said = [x for g, r in zip(groups, replies) for x in parse_detection(reply_text(r), len(g), self.field)]
        out = [0] * len(units)
        for j, i in enumerate(order):
            out[i] = said[j]
        return out

    def grade(self, sample: FeatureSample, units: list, observations: list) -> Score:
        counts, short = self._counts(units)
        if short:  # an early adaptive round
            return self.undefined(short, counts, units)
        truth, said = self.strata(units), np.asarray(observations, dtype=np.int64)
        details: dict = {**counts, "n_positive": int(truth.sum()), "n_negative": int(len(truth) - truth.sum())}
        for k, fn in (("precision", metrics.precision), ("recall", metrics.recall), ("f1", metrics.f1)):
            try:
                details[k] = round(fn(truth, said), 4)
            except metrics.Undefined:
                details[k] = None
        wins = [u.window for u in units]
        return self.made(lambda: metrics.balanced_accuracy(truth, said),
                         lambda: ci.balanced_accuracy((said == truth), truth, self.rng(sample), self.options.n_boot),
                         details, len(units), n_tokens(wins))


class LLMFuzzingScorer(LLMDetectionScorer):
    """Fuzzing: the held-out activating windows, half with their firing tokens marked (activation >=
    `threshold` x the window's peak), half with as many other tokens marked instead; the LLM says which
    windows are marked correctly. Value: balanced accuracy. Which windows are fuzzed, and where, is
    seeded by the sample: reruns hit the cache."""

    name = "fuzzing"
    field = "correct"
    classes = ("correctly marked", "fuzzed")
    count_keys = ("n_correct", "n_fuzzed")
    threshold = 0.3

    def units(self, sample: FeatureSample) -> list:
        return fuzzed(sample, self.threshold)


def fuzzed(sample: FeatureSample, threshold: float = LLMFuzzingScorer.threshold) -> list[Shown]:
    """The held-out activating windows as fuzzing shows them, in a seeded order: every other one with its
    firing tokens (activation >= threshold x the window's peak) marked, the rest with as many other
    tokens marked instead (a window with too few other tokens is marked correctly)."""
    rng = np.random.default_rng([sample.seed, sample.feature, 0xF022])
    wins = [w for w in sample.score if w.kind not in NEGATIVE_KINDS and w.peak > 0]
    out = []
    for i, w in enumerate([wins[i] for i in rng.permutation(len(wins))]):
        a = w.activations
        on = a >= threshold * a.max()
        off = np.flatnonzero(~on)
        if i % 2 == 0 or len(off) < on.sum():
            out.append(Shown(w, 1, tuple(on.tolist())))
        else:
            fake = np.zeros(len(a), dtype=bool)
            fake[rng.choice(off, size=int(on.sum()), replace=False)] = True
            out.append(Shown(w, 0, tuple(fake.tolist())))
    return out


__all__ = ["LLMDetectionScorer", "LLMFuzzingScorer", "ReplyFailure", "Shown", "activating", "fuzzed",
           "parse_detection"]
