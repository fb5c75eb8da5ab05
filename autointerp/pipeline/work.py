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
from ..records import Explanation, FeatureLabel, FeatureSample, Grades, Score
from ..contracts import Explainer, Scorer
from .config import CarryOptions


async def call(fn, *args):
    out = fn(*args)
    return await out if inspect.isawaitable(out) else out


async def grade_one(scorer, sample: FeatureSample, explanation) -> Score:
    try:
        return await call(scorer.score, sample, explanation)
    except Exception as err:  # a scorer bug or a provider failure grades this label "failed", not the run
        return Score(scorer.name, scorer.version, "failed", None, f"{type(err).__name__}: {err}", {}, _now())


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


async def do_item(item: Item, parts: Parts, planning: list | None = None):
    """A feature's label (FeatureLabel), or, for a label that only lacks grades, its new Grades."""
    return (await do_batch([item], parts, planning))[0]


async def do_batch(items: list[Item], parts: Parts, planning: list | None = None) -> list:
    """`do_item` for several features: every explanation first, then each scorer's `prepare` with all
    their texts (the offline scorers embed a batch of labels in one model pass), then the grades.
    `planning` (a batch plan, see batch.py): the list the deferred requests go to; a stage that
    deferred any ends the feature there."""
    carried = await _grade_carried(items, parts, planning)
    made = [await _explain(it.sample, parts.explainer) if it.explanation is None and id(it) not in carried else None
            for it in items]
    texts = [e.text for m in made if isinstance(m, list) for e in m] + \
        [it.explanation.text for it in items if it.explanation is not None and it.sample.status == "ok"]
    for s in parts.scorers:
        if texts:
            s.prepare(texts)
    out = []
    for it, m in zip(items, made):
        kept = carried.get(id(it))
        if it.explanation is not None:
            out.append(await _regrade(it))
        elif kept is not None:
            out.append(kept)
        elif isinstance(m, FeatureLabel):  # skipped or failed
            out.append(m)
        else:
            lab = await _grade_label(it.sample, m, parts, planning)
            if it.carried is not None and it.sample.status == "ok" and lab.status == "ok":
                # carried, graded too low: the new label is chosen, the carried one kept as a candidate
                lab = replace(lab, explanations=lab.explanations + ((it.carried, it.carried_scores),),
                              reason=it.carry_reason, carry="rejected")
            out.append(lab)
    return out


async def _grade_carried(items: list[Item], parts: Parts, planning: list | None) -> dict[int, FeatureLabel]:
    """Grade each item's carried label on the feature's own held-out windows, by every scorer of the run.
    Returns, by id(item), the labels kept; an item whose carried label graded too low gets its scores and
    the reason on the item, and is explained."""
    todo = [it for it in items if it.carried is not None and it.explanation is None and it.sample.status == "ok"]
    if not todo:
        return {}
    for s in parts.scorers:
        s.prepare([it.carried.text for it in todo])
    kept = {}
    decider = parts.decider
    for it in todo:
        scores = tuple(await asyncio.gather(*(grade_one(s, it.sample, it.carried) for s in parts.scorers)))
        it.carried_scores = scores
        if planning:  # a batch plan: the grades are deferred, so the verdict waits for the next run
            kept[id(it)] = FeatureLabel(**_base(it.sample, parts.explainer), status="failed", reason="planning")
            continue
        verdict = next((x for x in scores if decider is not None and x.scorer == decider.name), None)
        why = _carry_rejected(verdict, it.partner_value, parts.carry)
        origin = f"carried from {it.carried.carried}"
        if why is None:
            kept[id(it)] = FeatureLabel(**_base(it.sample, parts.explainer), status="ok", reason=origin,
                                        explanations=((it.carried, scores),), carry="kept")
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
    if carry.min_score is not None and grade.value < carry.min_score:
        return f"{grade.scorer} {grade.value:.3f} < {carry.min_score:g}"
    upper = grade.interval[1] if grade.interval else grade.value  # below beyond its own noise
    if partner is not None and upper < partner - carry.margin:
        shown = f"{grade.value:.3f} (95% up to {upper:.3f})" if grade.interval else f"{grade.value:.3f}"
        return f"{grade.scorer} {shown} < the partner's {partner:.3f} - {carry.margin:g}"
    return None


async def _regrade(item: Item) -> Grades:
    s = item.sample
    if s.status != "ok":  # cannot happen for current activations and the same config; typed all the same
        scores = tuple(Score(g.name, g.version, "undefined", None, f"sample: {s.reason}", {}, _now())
                       for g in item.scorers)
    else:
        scores = tuple(await asyncio.gather(*(grade_one(g, s, item.explanation) for g in item.scorers)))
    return Grades(s.dictionary, s.feature, item.explanation.explanation_id, scores)


def _base(sample: FeatureSample, expl) -> dict:
    return dict(dictionary=sample.dictionary, feature=sample.feature, explainer=expl.name,
                prompt_hash=expl.prompt_hash, sampler=sample.config, seed=sample.seed)


async def _explain(sample: FeatureSample, expl) -> list[Explanation] | FeatureLabel:
    """A feature's candidate explanations, or its outcome when it has none (skipped, failed)."""
    if sample.status != "ok":
        return FeatureLabel(**_base(sample, expl), status="skipped", reason=sample.reason)
    try:
        out = await call(expl.explain, sample)
    except ExplainFailure as err:
        return FeatureLabel(**_base(sample, expl), status="failed", reason=f"explainer: {err}")
    except Exception as err:  # an explainer bug fails this feature, visibly, not the run
        return FeatureLabel(**_base(sample, expl), status="failed",
                            reason=f"explainer error: {type(err).__name__}: {err}")
    return list(out) if isinstance(out, (list, tuple)) else [out]  # an explainer may give n candidates


async def _grade_label(sample: FeatureSample, candidates: list[Explanation], parts: Parts,
                       planning: list | None = None) -> FeatureLabel:
    """Grade a feature's explanations; with several, best-of-k: every candidate graded by the selector,
    the best one alone by the other scorers; all are kept with their grades."""
    grade, select, base = parts.grade, parts.select, _base(sample, parts.explainer)
    if len(candidates) == 1 or select is None:
        graded = [(e, tuple(await asyncio.gather(*(grade_one(s, sample, e) for s in grade)))) for e in candidates]
        return FeatureLabel(**base, status="ok", explanations=tuple(graded))
    first = await asyncio.gather(*(grade_one(select, sample, e) for e in candidates))
    if planning:  # the selector's replies are not all in yet: which candidate wins is not known
        return FeatureLabel(**base, status="failed", reason="planning")
    chosen = _best(first)
    rest = await asyncio.gather(*(grade_one(s, sample, candidates[chosen]) for s in grade if s is not select))
    graded = [(e, (first[i], *(rest if i == chosen else ()))) for i, e in enumerate(candidates)]
    return FeatureLabel(**base, status="ok", explanations=tuple(graded), chosen=chosen)


def _best(scores: list[Score]) -> int:
    """The candidate with the highest defined score (the first of equals); the first when none is defined."""
    ok = [(s.value, -i) for i, s in enumerate(scores) if s.status == "ok" and s.value is not None]
    return -max(ok)[1] if ok else 0
