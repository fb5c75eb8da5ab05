"""What a labelling run will do, decided before it starts: the explainer and scorers it names (`build`), and
the selected features split into those to explain and those to grade (`plan`: the rest are already done;
see run.py for what counts as done), with the partners of a carry and the match it needs (`ensure_match`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..contracts import adopt
from ..errors import LabelError
from ..explain import IMPORTED, make_explainer
from ..records import Dictionary
from ..score import make_scorers
from ..store import Store
from .config import LabelRun
from .work import Parts


def build(store: Store, dictionary: Dictionary, run: LabelRun) -> Parts:
    """The explainer and scorers a run names (objects given in `run` are used as they are)."""
    llm = run.llm
    expl = make_explainer(run.explainer, store, dictionary, llm) if isinstance(run.explainer, str) else run.explainer
    names = [s for s in run.scorers if isinstance(s, str)]
    given = {id(s): adopt(s, "scorer") for s in (*run.scorers, run.select_by) if not isinstance(s, (str, type(None)))}
    grade = make_scorers(names, store, dictionary, run.scorer_model, llm, options=run.scoring) + \
        [given[id(s)] for s in run.scorers if not isinstance(s, str)]
    select = run.select_by if run.select_by is None or isinstance(run.select_by, str) else given[id(run.select_by)]
    if isinstance(select, str):  # one of the scorers, or a scorer of its own
        select = next((s for s in grade if s.name == select), None) or \
            make_scorers([select], store, dictionary, run.scorer_model, llm, options=run.scoring)[0]
    return Parts(adopt(expl, "explainer"), grade, select or (grade[0] if grade else None), run.carry)


@dataclass
class WorkPlan:
    """The selected features split by what they need: `explain` (no current label), `grade` (a label
    lacking some of the run's grades: its explanation id and a bit mask over `Parts.grade`). `carry`:
    of the features to explain, those with a partner label to try first (MatchReads.carry_partners),
    and `carry_from` the dictionary it comes from."""

    explain: np.ndarray
    grade_features: np.ndarray
    grade_explanations: np.ndarray
    grade_masks: np.ndarray
    selected: int
    carry: dict | None = None
    carry_from: str | None = None
    without_import: int = 0  # grading imported labels: selected features that have none

    @property
    def features(self) -> np.ndarray:
        return np.union1d(self.explain, self.grade_features)

    @property
    def already_done(self) -> int:
        return self.selected - len(self.explain) - len(self.grade_features) - self.without_import


def plan(store: Store, dictionary: Dictionary, run: LabelRun, parts: Parts) -> WorkPlan:
    work = _plan(store, dictionary, run, parts)
    if run.carry.source is not None and len(work.explain):
        c = run.carry
        source = store.dictionary(c.source)
        decide = parts.decider
        work.carry = store.matches.carry_partners(source.dictionary_id, dictionary.dictionary_id, c.method, c.min_similarity,
                                          work.explain, *parts.key,
                                          None if decide is None else (decide.name, decide.version))
        work.carry_from = source.name
    return work


def ensure_match(store: Store, dictionary: Dictionary, run: LabelRun, progress: bool = False) -> None:
    """Before a run that carries labels: the match from `run.carry.source` to this dictionary, computed now
    (and stored) when it is not stored yet."""
    from ..match import MatchConfig, match_dictionaries

    c = run.carry
    if c.source is None:
        return
    source = store.dictionary(c.source)
    if source.dictionary_id == dictionary.dictionary_id:
        raise LabelError(f"--carry-from {c.source!r} is the dictionary being labelled: carry from another one")
    if c.method in store.matches.match_methods(source.dictionary_id, dictionary.dictionary_id):
        return
    if store.read_only:
        raise LabelError(f"no {c.method} match from {source.name!r} to {dictionary.name!r} in the store: run "
                         f"`autointerp match --from {source.name} --to {dictionary.name}` first")
    match_dictionaries(store, source, dictionary, MatchConfig(method=c.method), progress=progress)


def _plan(store: Store, dictionary: Dictionary, run: LabelRun, parts: Parts) -> WorkPlan:
    feats = run.selected(dictionary.width)
    empty = np.zeros(0, np.int64)
    key = None if parts.explainer.name == IMPORTED else (*parts.key, run.sampler.hash, run.seed)
    if run.force and key is not None:
        return WorkPlan(feats, empty, empty, empty, len(feats))
    without = 0
    if key is None:  # grade labels made elsewhere (`force`: with every scorer again); explain nothing
        have = store.labels.imported_features(dictionary.dictionary_id)
        if not len(have):
            raise LabelError(f"dictionary {dictionary.name!r} has no imported label to grade (`autointerp ingest "
                             "labels` brings them in; --explainer offline or PROVIDER:MODEL explains its features)")
        without = int(len(feats) - np.isin(feats, have, assume_unique=True).sum())
        explain = empty
    else:
        explain = np.setdiff1d(feats, store.labels.done_features(dictionary.dictionary_id, key), assume_unique=True)
    gf, ge, gm = store.labels.grading_todo(dictionary.dictionary_id, key, [(s.name, s.version) for s in parts.grade],
                                    None if run.features is None else feats, force=run.force)
    return WorkPlan(explain, gf, ge, gm, len(feats), without_import=without)
