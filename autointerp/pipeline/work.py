"""One feature's work, shared by a labelling run (run.py) and the batch planner (batch.py): the parts a run
is made of (explainer, scorers, selector, carry), a unit of work (`Item`), and what is done to it:
explain, grade (best-of-k: the selector first), regrade a label that lacks grades, try a carried label.
Nothing here touches the store."""

from __future__ import annotations

import asyncio
import inspect
from dataclasses import dataclass, field, replace

from ..clock import utcnow as _now
from ..errors import ExplainFailure
from ..llm import Deferred
from ..records import Explanation, Failure, FeatureLabel, FeatureSample, Grades, Score
from ..contracts import Explainer, Scorer
from .config import CarryOptions


async def call(fn, *args):
    out = fn(*args)
    return await out if inspect.isawaitable(out) else out


async def grade_one(scorer, sample: FeatureSample, explanation) -> Score:
    try:
        return await call(scorer.score, sample, explanation)
    except Deferred:
        raise  # a batch plan holds the request: not a grade at all
    except Exception as err:  # a scorer bug or a provider failure grades this label "failed", not the run
        return Score(scorer.name, scorer.version, "failed", None, details={}, created_at=_now(),
                     failure=Failure(type(err).__name__, str(err)))


async def grades(*calls) -> tuple[Score, ...]:
    """Several grades at once. Every call runs to its end before a deferral (a batch plan holding a
    request, llm.Deferred) stops the work: each call's request is in the plan, none is sent after it."""
    got = await asyncio.gather(*calls, return_exceptions=True)
    out: list[Score] = []
    for g in got:
        if isinstance(g, BaseException):
            raise g
        out.append(g)
    return tuple(out)


@dataclass(frozen=True)
class Postponed:
    """A feature's outcome while a batch is planned: its work stopped at a stage whose replies the plan
    deferred (llm.Deferred); the requests are in the plan, and a later pass goes on from the cache."""

    feature: int


def clients_of(*components) -> list:
    """The distinct LLM clients of an explainer and scorers (offline ones have none)."""
    return list({id(c.client): c.client for c in components if c.client is not None}.values())


@dataclass
class Parts:
    """A run's explainer, scorers and selector, made once."""

    explainer: Explainer
    grade: list[Scorer]
    select: Scorer | None
    carry: CarryOptions = field(default_factory=CarryOptions)

    @property
    def clients(self) -> list:
        return clients_of(self.explainer, *self.grade, *([self.select] if self.select else []))

    @property
    def offline(self) -> bool:
        """Every component is a plain function (no LLM, nothing to await): features go through a batch
        at a time, in one worker."""
        return not self.clients and not any(inspect.iscoroutinefunction(f) for f in (
            self.explainer.explain, *(s.score for s in self.scorers)))

    @property
    def scorers(self) -> list:
        return self.grade + ([self.select] if self.select is not None and self.select not in self.grade else [])

    @property
    def encoders(self) -> list:
        """The distinct context encoders of the offline scorers (what they encoded is written at commits)."""
        return list({id(s.encoder): s.encoder for s in self.scorers if s.encoder is not None}.values())

    @property
    def decider(self):
        """The scorer whose grade decides whether a carried label is kept: the selector, or the first scorer."""
        return self.select or (self.grade[0] if self.grade else None)

    @property
    def key(self) -> tuple[str, str]:
        return self.explainer.name, self.explainer.prompt_hash

    async def aclose(self) -> None:
        for c in self.clients:
            await c.aclose()


@dataclass
class Item:
    """One unit of work: a feature's sample, and for a label that only needs grading, its explanation
    and the scorers it lacks."""

    sample: FeatureSample
    explanation: Explanation | None = None
    scorers: list = field(default_factory=list)
    carried: Explanation | None = None  # a partner's label to grade first (carry)
    partner_value: float | None = None  # the partner's own grade by the deciding scorer
    carried_scores: tuple = ()  # the carried label's grades, once graded
    carry_reason: str = ""  # why the carried label was not kept


async def do_item(item: Item, parts: Parts):
    """A feature's label (FeatureLabel), or, for a label that only lacks grades, its new Grades; Postponed
    while a batch is planned and a reply it needs is deferred."""
    return (await do_batch([item], parts))[0]


async def do_batch(items: list[Item], parts: Parts) -> list:
    """`do_item` for several features: every explanation first, then each scorer's `prepare` with all
    their texts (the offline scorers embed a batch of labels in one model pass), then the grades. While a
    batch is planned (llm.BatchPlan), a feature whose stage needs a deferred reply ends there: Postponed."""
    carried = await _grade_carried(items, parts)
    made = [await _explain_or_postpone(it, parts) if it.explanation is None and id(it) not in carried else None
            for it in items]
    texts = [e.text for m in made if isinstance(m, list) for e in m] + \
        [it.explanation.text for it in items if it.explanation is not None and it.sample.status == "ok"]
    for s in parts.scorers:
        if texts:
            s.prepare(texts)
    out = []
    for it, m in zip(items, made):
        kept = carried.get(id(it))
        try:
            out.append(await _outcome(it, m, kept, parts))
        except Deferred:
            out.append(Postponed(it.sample.feature))
    return out


async def _explain_or_postpone(it: Item, parts: Parts):
    try:
        return await _explain(it.sample, parts.explainer)
    except Deferred:
        return Postponed(it.sample.feature)


async def _outcome(it: Item, made, kept, parts: Parts):
    """One item's outcome, once its explanations (`made`) are in: its new grades, the carried label kept, the
    explainer's skip or failure, or its explanations graded."""
    if it.explanation is not None:
        return await _regrade(it, it.explanation)
    if kept is not None:
        return kept
    if isinstance(made, (FeatureLabel, Postponed)):  # skipped or failed; or a stage deferred
        return made
    lab = await _grade_label(it.sample, made, parts)
    if it.carried is not None and it.sample.status == "ok" and lab.status == "ok":
        # carried, graded too low: the new label is chosen, the carried one kept as a candidate
        lab = replace(lab, explanations=lab.explanations + ((it.carried, it.carried_scores),),
                      reason=it.carry_reason, carry="rejected")
    return lab


async def _grade_carried(items: list[Item], parts: Parts) -> dict[int, FeatureLabel | Postponed]:
    """Grade each item's carried label on the feature's own held-out windows, by every scorer of the run.
    Returns, by id(item), the labels kept; an item whose carried label graded too low gets its scores and
    the reason on the item, and is explained."""
    todo = [(it, it.carried) for it in items
            if it.carried is not None and it.explanation is None and it.sample.status == "ok"]
    if not todo:
        return {}
    for s in parts.scorers:
        s.prepare([carried.text for _, carried in todo])
    kept: dict[int, FeatureLabel | Postponed] = {}
    decider = parts.decider
    for it, carried in todo:
        try:
            scores = await grades(*(grade_one(s, it.sample, carried) for s in parts.scorers))
        except Deferred:  # a batch plan: the grades are deferred, so the verdict waits for the next pass
            kept[id(it)] = Postponed(it.sample.feature)
            continue
        it.carried_scores = scores
        verdict = next((x for x in scores if decider is not None and x.scorer == decider.name), None)
        why = _carry_rejected(verdict, it.partner_value, parts.carry)
        origin = f"carried from {carried.carried}"
        if why is None:
            kept[id(it)] = FeatureLabel(**_base(it.sample, parts.explainer), status="ok", reason=origin,
                                        explanations=((carried, scores),), carry="kept")
        else:
            it.carry_reason = f"{origin}: {why}; explained anew"
    return kept


def _carry_rejected(grade: Score | None, partner: float | None, carry: CarryOptions) -> str | None:
    """Why a carried label is not kept (None: it is): below `min_score`, or below the partner's grade by
    more than the margin even at the top of its 95% interval (grades on two sets of windows differ by
    their noise alone). An undefined grade keeps it: the feature's windows are too few to grade any
    label, a new one included."""
    if grade is None or grade.status == "undefined":
        return None
    if grade.status != "ok":
        return f"its {grade.scorer} grade failed ({grade.reason})"
    if grade.value is None:  # "ok" without a value (a plugin's scorer may give one): nothing to compare, as undefined
        return None
    if carry.min_score is not None and grade.value < carry.min_score:
        return f"{grade.scorer} {grade.value:.3f} < {carry.min_score:g}"
    upper = grade.interval[1] if grade.interval else grade.value  # below beyond its own noise
    if partner is not None and upper < partner - carry.margin:
        shown = f"{grade.value:.3f} (95% up to {upper:.3f})" if grade.interval else f"{grade.value:.3f}"
        return f"{grade.scorer} {shown} < the partner's {partner:.3f} - {carry.margin:g}"
    return None


async def _regrade(item: Item, explanation: Explanation) -> Grades:
    """New grades of `explanation`, the item's stored label."""
    assert explanation.explanation_id is not None  # a label that lacks grades is one the store holds
    s = item.sample
    if s.status != "ok":  # cannot happen for current activations and the same config; typed all the same
        scores = tuple(Score(g.name, g.version, "undefined", None, f"sample: {s.reason}", {}, _now())
                       for g in item.scorers)
    else:
        scores = await grades(*(grade_one(g, s, explanation) for g in item.scorers))
    return Grades(s.dictionary, s.feature, explanation.explanation_id, scores)


def _base(sample: FeatureSample, expl) -> dict:
    return dict(dictionary=sample.dictionary, feature=sample.feature, explainer=expl.name,
                prompt_hash=expl.prompt_hash, sampler=sample.config, seed=sample.seed)


async def _explain(sample: FeatureSample, expl) -> list[Explanation] | FeatureLabel:
    """A feature's candidate explanations, or its outcome when it has none (skipped, failed)."""
    if sample.status != "ok":
        return FeatureLabel(**_base(sample, expl), status="skipped", reason=sample.reason,
                            failure=Failure.of_reason(sample.reason))  # the sampler's own text, kept as it is
    try:
        out = await call(expl.explain, sample)
    except ExplainFailure as err:
        return FeatureLabel(**_base(sample, expl), status="failed", failure=Failure("explainer", str(err)))
    except Deferred:
        raise  # a batch plan holds the request
    except Exception as err:  # an explainer bug fails this feature, visibly, not the run
        return FeatureLabel(**_base(sample, expl), status="failed",
                            failure=Failure("explainer error", f"{type(err).__name__}: {err}"))
    return list(out) if isinstance(out, (list, tuple)) else [out]  # an explainer may give n candidates


async def _grade_label(sample: FeatureSample, candidates: list[Explanation], parts: Parts) -> FeatureLabel:
    """Grade a feature's explanations; with several, best-of-k: every candidate graded by the selector,
    the best one alone by the other scorers; all are kept with their grades."""
    grade, select, base = parts.grade, parts.select, _base(sample, parts.explainer)
    if len(candidates) == 1 or select is None:
        graded = [(e, await grades(*(grade_one(s, sample, e) for s in grade))) for e in candidates]
        return FeatureLabel(**base, status="ok", explanations=tuple(graded))
    first = await grades(*(grade_one(select, sample, e) for e in candidates))  # every candidate, then the best
    chosen = _best(list(first))
    rest = await grades(*(grade_one(s, sample, candidates[chosen]) for s in grade if s is not select))
    graded = [(e, (first[i], *(rest if i == chosen else ()))) for i, e in enumerate(candidates)]
    return FeatureLabel(**base, status="ok", explanations=tuple(graded), chosen=chosen)


def _best(scores: list[Score]) -> int:
    """The candidate with the highest defined score (the first of equals); the first when none is defined."""
    ok = [(s.value, -i) for i, s in enumerate(scores) if s.status == "ok" and s.value is not None]
    return -max(ok)[1] if ok else 0
