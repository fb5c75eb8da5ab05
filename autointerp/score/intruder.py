"""Intruder scoring (delphi's intruder scorer; Paulo & Belrose 2025): a grade of the feature, not of a label.

Each question shows k of the feature's held-out activating windows and one of its non-firing (random
or neighbour) windows, unmarked and shuffled (seeded by the sample); the judge names the window that
does not belong. The value is the accuracy over questions (chance: 1/(k+1)), with a bootstrap interval
over questions. No explanation is used: a coherent feature scores high whatever its label says, so
exports keep this grade apart from the label's (`feature_scores`).

- `IntruderScorer` (LLM, prompts/intruder_json.toml): `{"answers": [{"id": 1, "intruder": 3}, ...]}`,
  every question once, each answer a window id of its question; anything else is a typed failure.
- `OfflineIntruderScorer` (MiniLM): the cheap baseline. A window's mean vector barely moves with the one
  token a feature fires on, so the offline judge works on tokens: the token of the question whose best
  matches in the other windows (cosine of in-context MiniLM vectors, 1 for the same token) add up
  highest is what they share, and the intruder is the window whose best match to it is lowest.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass

import numpy as np

from ..explain.prompts import Template, render_questions
from ..llm import ChatRequest, LLMClient
from ..llm.replies import ReplyFailure, is_int, json_list, reply_text
from ..records import Explanation, FeatureSample, Score, Window
from . import interval as ci
from .base import NEGATIVE_KINDS, AsyncScorer, Scorer, ScoringLoop, ScoringOptions
from ..embed import ENCODING, ContextEncoder


@dataclass(frozen=True)
class Question:
    windows: tuple[Window, ...]  # k activating windows and one intruder, in the order shown
    intruder: int  # its index in `windows`


def questions(sample: FeatureSample, k: int) -> list[Question]:
    """As many questions as the held-out windows allow: k activating windows (each used once) and one
    non-firing window each, the intruder's place drawn at random; seeded by the sample."""
    rng = np.random.default_rng([sample.seed, sample.feature, 0x1A7])
    act = [w for w in sample.score if w.kind not in NEGATIVE_KINDS]
    neg = [w for w in sample.score if w.kind in NEGATIVE_KINDS]
    act = [act[i] for i in rng.permutation(len(act))]
    neg = [neg[i] for i in rng.permutation(len(neg))]
    out = []
    for q in range(min(len(act) // k, len(neg))):
        wins = act[q * k:(q + 1) * k]
        at = int(rng.integers(k + 1))
        out.append(Question(tuple(wins[:at] + [neg[q]] + wins[at:]), at))
    return out


class _Intruder(ScoringLoop):
    name = "intruder"  # in FEATURE_LEVEL: the grade does not depend on the explanation

    def units(self, sample: FeatureSample) -> list:
        return questions(sample, self.options.intruder_k)

    def strata(self, units: list) -> np.ndarray:
        return np.zeros(len(units), dtype=np.int64)

    def too_little(self, sample: FeatureSample, units: list) -> Score | None:
        if len(units) >= self.options.min_evidence:
            return None
        n_act = sum(w.kind not in NEGATIVE_KINDS for w in sample.score)
        return self.undefined(f"too little evidence: {len(units)} intruder questions from {n_act} activating and "
                              f"{len(sample.score) - n_act} non-firing windows (at least "
                              f"{self.options.min_evidence} questions needed)",
                              {"n_questions": len(units), "min_evidence": self.options.min_evidence})

    def grade(self, sample: FeatureSample, units: list, observations: list) -> Score:
        k = self.options.intruder_k
        correct = np.array([int(g == q.intruder) for q, g in zip(units, observations)])
        details = {"n_questions": len(units), "k": k, "chance": round(1 / (k + 1), 4),
                   "correct": correct.tolist(), "answers": [int(g) for g in observations],
                   "min_evidence": self.options.min_evidence}
        if len(units) < self.options.min_evidence:  # an early adaptive round
            return self.undefined(f"too little evidence: {len(units)} intruder questions", details, units)
        wins = [w for q in units for w in q.windows]
        return self.made(lambda: float(correct.mean()),
                         lambda: ci.accuracy(correct, self.rng(sample), self.options.n_boot),
                         details, len(wins), sum(len(w.tokens) for w in wins))


class OfflineIntruderScorer(_Intruder, Scorer):
    """The intruder on MiniLM's in-context token vectors: a token's match in a window is its best cosine
    to that window's tokens (1 for the same token); what the question's windows share is the token whose
    matches in the other windows add up highest, and the intruder is the window matching it worst (the
    window that lacks what the others share). On the demo's neurons it names the intruder in ~40% of
    questions (chance 20%); on synthetic token detectors ~90%."""

    encoder: ContextEncoder

    def __init__(self, encoder: ContextEncoder, options: ScoringOptions = ScoringOptions()) -> None:
        self.encoder, self.options = encoder, options
        self.version = f"{ENCODING}/shared-token-v1/k{options.intruder_k}/min{options.min_evidence}/" \
                       f"{options.suffix()}"

    def judge(self, sample: FeatureSample, explanation: Explanation, units: list) -> list:
        if not units:
            return []
        import torch

        wins = tuple(w for q in units for w in q.windows)
        vecs, norms, owner = self.encoder.gather(wins)
        unit = vecs / norms.clamp(min=1e-12)[:, None]
        ids = torch.from_numpy(np.concatenate([w.token_ids for w in wins]))
        n = len(units[0].windows)
        bounds = np.cumsum([0] + [len(w.tokens) for w in wins])
        out = []
        for q in range(len(units)):
            a, b = int(bounds[q * n]), int(bounds[(q + 1) * n])
            v, w, tid = unit[a:b], owner[a:b] - q * n, ids[a:b]
            sims = torch.maximum(v @ v.T, (tid[:, None] == tid[None, :]).float())  # the same token: a full match
            best = torch.full((len(v), n), -2.0).scatter_reduce_(1, w.expand(len(v), -1), sims, "amax")
            support = best.sum(1) - best.gather(1, w[:, None])[:, 0]  # matches in the other windows
            t = int(torch.argmax(support))
            match = best[t].clone()
            match[w[t]] = 2.0  # the shared token's own window is not the intruder
            out.append(int(torch.argmin(match)))
        return out


def parse_intruder(reply: str, sizes: list[int]) -> list[int]:
    """The 0-based intruder of each question from a reply, checked: every question once, ids in range."""
    got: dict[int, int] = {}
    for a in json_list(reply, "answers"):
        if not isinstance(a, dict) or not is_int(a.get("id")) or not is_int(a.get("intruder")):
            raise ReplyFailure("each answer needs an integer 'id' and an integer 'intruder'")
        if a["id"] in got:
            raise ReplyFailure(f"question {a['id']} answered twice")
        if not 1 <= a["id"] <= len(sizes):
            raise ReplyFailure(f"question {a['id']} was not asked (questions 1..{len(sizes)})")
        if not 1 <= a["intruder"] <= sizes[a["id"] - 1]:
            raise ReplyFailure(f"question {a['id']}: intruder {a['intruder']} is not one of its windows "
                               f"1..{sizes[a['id'] - 1]}")
        got[a["id"]] = a["intruder"] - 1
    if len(got) != len(sizes):
        raise ReplyFailure(f"answers for questions {sorted(got)}, expected 1..{len(sizes)}")
    return [got[i] for i in range(1, len(sizes) + 1)]


class IntruderScorer(_Intruder, AsyncScorer):
    max_tokens = 600
    client: LLMClient

    def __init__(self, client: LLMClient, template: Template, options: ScoringOptions = ScoringOptions()) -> None:
        self.client, self.template, self.options = client, template, options
        # an intruder call shows about twice a scorer call's windows: their text only, no explanation
        self.per_call = max(1, 2 * options.windows_per_call // (options.intruder_k + 1))
        settings = f"{template.hash}|questions_per_call={self.per_call}|max_tokens={self.max_tokens}"
        self.version = (f"{client.model_id}/{hashlib.sha256(settings.encode()).hexdigest()[:16]}/"
                        f"k{options.intruder_k}/min{options.min_evidence}/{options.suffix()}")

    async def judge(self, sample: FeatureSample, explanation: Explanation, units: list) -> list:
        groups = [units[i:i + self.per_call] for i in range(0, len(units), self.per_call)]
        reqs = [ChatRequest(model=self.client.provider.model, system=self.template.system,
                            messages=(("user", render_questions(self.template, [list(q.windows) for q in g])),),
                            max_tokens=self.max_tokens) for g in groups]
        replies = await asyncio.gather(*(self.client.complete(r, purpose="intruder") for r in reqs))
        return [x for g, r in zip(groups, replies) for x in parse_intruder(reply_text(r), [len(q.windows) for q in g])]
