"""Calibrate scorers and explainers on planted gold features, whose true descriptions are known.

For every planted rule (plant.py) and every seed, the gold feature is sampled as any feature is (held-out
windows apart from the explain set; the seed draws other windows), and every scorer grades its candidate
labels on the same held-out windows: the true description, its near misses (narrower, broader, sibling)
and `unrelated` other rules' true descriptions. This is done again with the held-out windows cut to each
window budget (seeded and stratified, as an LLM scorer's `--llm-windows` cuts them). From those grades,
per scorer and rule category (metrics.py): how often the truth is graded first, above its near misses,
above unrelated labels; the AUROC of truth vs near-miss grades; how often the truth's 95% interval of one
seed covers the mean grade of the other seeds.

Every explainer then labels the gold features (through `label`, best-of-k as it is run), and its labels
are graded beside the truth: the gap between their grades, and for word-class rules whether the label
names any of the rule's words.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..clock import utcnow
from ..errors import UsageError
from ..llm import LLMOptions
from ..pipeline import LabelRun, label
from ..pipeline.run import run_sync
from ..pipeline.work import clients_of, grade_one
from ..progress import Progress
from ..records import Dictionary, Explanation, FeatureSample, SamplerConfig
from ..sample import Sampler
from ..score import FEATURE_LEVEL, ScoringOptions, make_scorers, parse_scorers
from ..score.base import activating, budget_cut
from ..store import Store
from .metrics import explainer_summary, scorer_summary
from .plant import GOLD, Planted, plant
from .rules import NEAR_MISSES, Rule, load_rules

CANDIDATES = ("truth", *NEAR_MISSES, "unrelated")


@dataclass(frozen=True)
class CalibrateConfig:
    """What a calibration runs: rules (the built-in library, and a TOML file's), scorers (and the model of
    their LLM forms), explainers, seeds, window budgets (None: every held-out window), unrelated labels
    per rule, best-of-k candidates for LLM explainers, and the options every scorer and sampler use."""

    rules: Path | None = None
    builtin: bool = True
    scorers: tuple[str, ...] = ("simulation", "embedding")
    scorer_model: str | None = None
    explainers: tuple[str, ...] = ("offline",)
    seeds: int = 3
    budgets: tuple[int | None, ...] = (10, 20, 40, None)
    unrelated: int = 2
    candidates: int = 1
    llm: LLMOptions = field(default_factory=LLMOptions)
    scoring: ScoringOptions = field(default_factory=lambda: ScoringOptions(windows=None))
    sampler: SamplerConfig = field(default_factory=SamplerConfig)

    def __post_init__(self) -> None:
        object.__setattr__(self, "scorers", parse_scorers(self.scorers))
        level = [s for s in self.scorers if s in FEATURE_LEVEL]
        if level:
            raise UsageError(f"{level[0]} grades the feature, not its label: calibration has no label of it to "
                             "compare (choose from simulation, embedding, detection, fuzzing)")
        if not 1 <= self.seeds <= 20:
            raise UsageError(f"seeds must be from 1 to 20, got {self.seeds}")
        if not 0 <= self.unrelated <= 10:
            raise UsageError(f"unrelated must be from 0 to 10, got {self.unrelated}")
        if not 1 <= self.candidates <= 32:
            raise UsageError(f"candidates must be from 1 to 32, got {self.candidates}")
        if not self.budgets:
            raise UsageError("give at least one window budget")
        for b in self.budgets:
            if b is not None and b < 4:
                raise UsageError(f"a window budget must be at least 4 held-out windows (or 'all'), got {b}")


@dataclass
class Grade:
    """One candidate label's grade of one gold feature, seed, window budget and scorer."""

    rule: str
    category: str
    seed: int
    budget: int | None  # held-out windows judged (None: all)
    scorer: str
    candidate: str  # truth | narrower | broader | sibling | unrelated | an explainer's name
    text: str
    status: str
    value: float | None
    low: float | None
    high: float | None
    n_windows: int
    reason: str = ""  # why undefined or failed ("reply: ...", typed as the grade's Failure)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Calibration:
    """A calibration's outcome: the gold dictionary, what was left out, every grade, and the summaries."""

    dictionary: str
    gold: Planted
    config: CalibrateConfig
    grades: list[Grade]
    skipped: dict[str, str]  # rule -> the sampler's reason (no usable sample)
    scorers: list[dict]
    explainers: list[dict]
    seconds: float = 0.0
    run_id: str | None = None

    def failures(self) -> dict[str, int]:
        """Grades that failed, by their reason's kind ("reply", "provider", ...)."""
        out: dict[str, int] = {}
        for g in self.grades:
            if g.status == "failed":
                kind = g.reason.partition(":")[0] or "unknown"
                out[kind] = out.get(kind, 0) + 1
        return out

    def to_dict(self) -> dict:
        c = self.config
        return {"run_id": self.run_id, "dictionary": self.dictionary, "gold": self.gold.dictionary.name,
                "rules": len(self.gold.rules), "calibrated": len(self.gold.usable) - len(self.skipped),
                "left_out": {**self.gold.left_out, **self.skipped},
                "config": {"scorers": list(c.scorers), "scorer_model": c.scorer_model,
                           "explainers": list(c.explainers), "seeds": c.seeds,
                           "budgets": [b or "all" for b in c.budgets], "unrelated": c.unrelated,
                           "candidates": c.candidates, "rules_file": str(c.rules) if c.rules else None,
                           "builtin": c.builtin},
                "grades": len(self.grades), "failed_grades": self.failures(),
                "scorers": self.scorers, "explainers": self.explainers, "seconds": round(self.seconds, 1)}


def calibrate(store: Store, dictionary: Dictionary, config: CalibrateConfig = CalibrateConfig(), *,
              progress: bool = False) -> Calibration:
    """Plant the rules on `dictionary`'s corpus (or reuse them), grade every scorer and explainer on them,
    and store the run (the grades and summaries)."""
    t0 = time.perf_counter()
    if dictionary.kind == GOLD:
        raise UsageError(f"{dictionary.name} is a gold dictionary: calibrate a real one (its corpus is planted on)")
    rules = load_rules(config.rules, config.builtin)
    planted = plant(store, dictionary, rules, progress=progress)
    gold = planted.dictionary
    samples, skipped = _samples(store, gold, planted, config)
    explainers = [(e, k) for e in config.explainers for k in dict.fromkeys((1, config.candidates))
                  if k == 1 or e != "offline"]  # best-of-k: LLM explainers only
    rounds = [(seed, budget, [(planted.rules[f], _cut(s, budget, seed), t) for f, s in by_rule.items()
                              for t in _candidates(planted, f, seed, config.unrelated)])
              for seed, by_rule in samples.items() for budget in config.budgets]
    widest = None if None in config.budgets else max(b for b in config.budgets if b is not None)
    for e, k in explainers:  # their labels, graded beside the truth on seed 0's windows, the widest budget
        texts = _explain(store, gold, sorted(samples[0]), e, k, config)
        rounds.append((0, widest, [(planted.rules[f], _cut(samples[0][f], widest, 0), (f"{e}@{k}", t))
                                   for f, t in texts.items()]))
    scorers = make_scorers(config.scorers, store, gold, config.scorer_model, config.llm, config.scoring)
    graded = run_sync(_grade_rounds(scorers, rounds, Progress(len(rounds), "grading gold features", "rounds",
                                                              enabled=progress)))
    grades = [g for g in graded if g.candidate in CANDIDATES]
    out = Calibration(dictionary.name, planted, config, graded, skipped,
                      scorer_summary(grades, planted.rules, config.budgets),
                      [explainer_summary([g for g in graded if g.candidate == f"{e}@{k}"], grades, planted.rules, e, k,
                                         widest) for e, k in explainers], time.perf_counter() - t0)
    out.run_id = store_run(store, dictionary, out)
    return out


def _samples(store: Store, gold: Dictionary, planted: Planted, config: CalibrateConfig
             ) -> tuple[dict[int, dict[int, FeatureSample]], dict[str, str]]:
    """seed -> feature -> its sample; rules whose feature has no usable sample (seed 0's reason)."""
    out: dict[int, dict[int, FeatureSample]] = {}
    skipped: dict[str, str] = {}
    for seed in range(config.seeds):
        got = Sampler(store, gold, config.sampler, seed).sample_many(np.asarray(planted.usable, np.int64))
        out[seed] = {s.feature: s for s in got if s.status == "ok"}
        for s in got:
            if s.status != "ok":
                skipped.setdefault(planted.rules[s.feature].name, s.reason)
    kept = {seed: {f: s for f, s in by.items() if planted.rules[f].name not in skipped}  # every seed or none
            for seed, by in out.items()}
    return kept, skipped


def _candidates(planted: Planted, feature: int, seed: int, n_unrelated: int) -> list[tuple[str, str]]:
    """(candidate kind, text): the truth, the rule's near misses, and `n_unrelated` other rules' truths
    (seeded; rules of another category first)."""
    rule = planted.rules[feature]
    out = [("truth", rule.description)] + list(rule.near_misses.items())
    others = [i for i in planted.usable if i != feature]
    rng = np.random.default_rng([seed, feature])
    order = sorted(others, key=lambda i: (planted.rules[i].category == rule.category, rng.random()))
    out += [("unrelated", planted.rules[i].description) for i in order[:n_unrelated]]
    return out


def _cut(sample: FeatureSample, budget: int | None, seed: int) -> FeatureSample:
    """The sample with its held-out windows cut to `budget` (seeded, half activating, half not)."""
    if budget is None or budget >= len(sample.score):
        return sample
    units = list(sample.score)
    rng = np.random.default_rng([seed, sample.feature, budget])
    return replace(sample, score=tuple(budget_cut(units, activating(units), rng, budget)))


Round = tuple[int, int | None, list[tuple[Rule, FeatureSample, tuple[str, str]]]]


async def _grade_rounds(scorers, rounds: list[Round], bar: Progress) -> list[Grade]:
    """Every scorer's grade of every (rule, sample, candidate) of every round (seed, budget), in one event loop
    (an LLM client lives in one); a round's calls at once, paced by their client."""
    out: list[Grade] = []
    try:
        for seed, budget, todo in rounds:
            texts = list(dict.fromkeys(t for _, _, (_, t) in todo))
            for s in scorers:
                if hasattr(s, "prepare"):
                    s.prepare(texts)
            jobs = [(s, r, smp, kind, text) for s in scorers for r, smp, (kind, text) in todo]
            got = await asyncio.gather(*(grade_one(s, smp, _explanation(smp, text)) for s, _, smp, _, text in jobs))
            out += [Grade(r.name, r.category, seed, budget, s.name, kind, text, g.status, g.value,
                          (g.interval or (None, None))[0], (g.interval or (None, None))[1], g.n_windows or 0,
                          g.reason)
                    for (s, r, smp, kind, text), g in zip(jobs, got)]
            bar.update(1)
    finally:
        bar.close()
        for c in clients_of(*scorers):
            await c.aclose()
    return out


def _explanation(sample: FeatureSample, text: str, author: str = "calibration") -> Explanation:
    return Explanation(dictionary=sample.dictionary, feature=sample.feature, text=text, explainer=author,
                       prompt_hash="", sampler=sample.config, seed=sample.seed, created_at=utcnow())


def _explain(store: Store, gold: Dictionary, feats: list[int], name: str, k: int, config: CalibrateConfig
             ) -> dict[int, str]:
    """The explainer's labels of the gold features (best-of-k with `k` candidates, picked by the offline
    simulation scorer), made by `label` as any labels are (cached, priced, stored with the gold dictionary)."""
    llm = replace(config.llm, candidates=k)
    run = LabelRun(explainer=name, scorers=("simulation",), seed=0, features=feats, llm=llm, sampler=config.sampler,
                   force=k > 1, scoring=config.scoring)
    summary = label(store, gold, run)
    return {r["feature_id"]: r["explanation"] for r in store.labels.find(gold.dictionary_id, feats)
            if r["explainer"] == summary.explainer and r["prompt_hash"] == summary.prompt_hash}


def store_run(store: Store, dictionary: Dictionary, cal: Calibration) -> str:
    """Write the run (its summaries and every grade) to the store; returns its id."""
    run_id = f"cal-{utcnow():%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
    with store.transaction() as w:
        w.calibrations.add_run(run_id, dictionary.dictionary_id, cal.gold.dictionary.dictionary_id, cal.to_dict(),
                               [g.to_dict() for g in cal.grades])
    return run_id


__all__ = ["CANDIDATES", "CalibrateConfig", "Calibration", "Grade", "calibrate", "load_rules"]
