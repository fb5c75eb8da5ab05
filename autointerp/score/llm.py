"""LLM scorers. The simulator: from the explanation alone, predict every token's activation (0-10) on the
feature's held-out windows, then grade the prediction like the offline simulator (pooled Pearson
correlation, OpenAI's ev_correlation_score, with per-window correlations and r² in the details).

Works on any chat model through structured JSON replies (Claude has no logprobs). Where the provider
returns `top_logprobs` (OpenAI chat, vLLM), each number the model wrote is replaced by the expected
value over the tokens "0".."10" at its position, as OpenAI's simulator does with prompt logprobs: a
model unsure between 0 and 6 predicts 2.4, not 0. Windows go in groups of `windows_per_call`, each
group one call through the provider layer (cached, priced, rate-limited). A reply is checked before it
is used: JSON of the right shape, every window once, exactly one number per token, each within 0-10.
Anything else is a typed failure of the score ("failed: <why>"), never silently zeros (delphi's
simulator turns length mismatches into all-zero predictions).
"""

from __future__ import annotations

import asyncio
import bisect
import hashlib
import json
import math
import re

import numpy as np

from ..explain.prompts import Template, render_scoring
from ..llm import ChatRequest, LLMClient, ProviderError
from ..records import Explanation, FeatureSample, Score, Simulation
from . import metrics
from .offline import NEGATIVE_KINDS, _now, _score, grade_simulation


class SimulationFailure(Exception):
    """A scorer's reply that cannot be used (prose, wrong shape, wrong length, out of range)."""


def _text(reply) -> str:
    return reply.texts[0] if reply.texts else ""  # an empty reply is an unusable one, not an IndexError


def _json_object(reply: str, field: str) -> list:
    """The list under `field` of the JSON object in a reply (models sometimes wrap it in prose or fences)."""
    m = re.search(r"\{.*\}", reply or "", re.DOTALL)
    if not m:
        raise SimulationFailure(f"no JSON in reply: {' '.join((reply or '').split())[:60]!r}")
    try:
        doc = json.loads(m.group(0))
    except ValueError as e:
        raise SimulationFailure(f"reply is not valid JSON: {e}") from None
    out = doc.get(field) if isinstance(doc, dict) else None
    if not isinstance(out, list):
        raise SimulationFailure(f"reply has no '{field}' list")
    return out


def parse_simulation(reply: str, lengths: list[int]) -> list[list[float]]:
    """Predicted activations per window from a JSON reply, checked against the windows' lengths."""
    wins = _json_object(reply, "windows")
    by_id: dict[int, list] = {}
    for w in wins:
        if not isinstance(w, dict) or not isinstance(w.get("id"), int) or not isinstance(w.get("activations"), list):
            raise SimulationFailure("each window needs an integer 'id' and an 'activations' list")
        if w["id"] in by_id:
            raise SimulationFailure(f"window {w['id']} given twice")
        by_id[w["id"]] = w["activations"]
    out = []
    for i, n in enumerate(lengths, 1):
        acts = by_id.get(i)
        if acts is None:
            raise SimulationFailure(f"window {i} missing from reply")
        if len(acts) != n:
            raise SimulationFailure(f"window {i}: {len(acts)} values for {n} tokens")
        if not all(isinstance(a, (int, float)) and not isinstance(a, bool) and 0 <= a <= 10 for a in acts):
            raise SimulationFailure(f"window {i}: values must be numbers from 0 to 10")
        out.append([float(a) for a in acts])
    if set(by_id) - set(range(1, len(lengths) + 1)):
        raise SimulationFailure(f"reply has windows {sorted(set(by_id) - set(range(1, len(lengths) + 1)))} "
                                "that were not asked for")
    return out


DIGITS = {str(v): v for v in range(11)}  # the tokens an activation is written with
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


def _number_spans(reply: str) -> dict[int, list[tuple[int, int]]]:
    """Where, in the reply, each window's activation numbers are: window id -> [(start, end), ...]."""
    out: dict[int, list[tuple[int, int]]] = {}
    for obj in re.finditer(r"\{[^{}]*\}", reply):  # the window objects (the outer one nests them)
        wid = re.search(r'"id"\s*:\s*(\d+)', obj.group(0))
        arr = re.search(r'"activations"\s*:\s*\[([^\]]*)\]', obj.group(0))
        if wid and arr:
            base = obj.start() + arr.start(1)
            out[int(wid.group(1))] = [(base + m.start(), base + m.end()) for m in _NUMBER.finditer(arr.group(1))]
    return out


def expected_values(reply: str, tokens, predicted: list[list[float]]) -> list[tuple[list[float], int]]:
    """`predicted` (parsed from `reply`, checked) with each number replaced by the expected value over
    "0".."10" of the alternatives at its token, where the number is one token of its own and some of
    its alternatives are digits; other numbers (e.g. "2.5", or "10" written as two tokens) keep their
    written value. Per window: (values, how many came from logprobs). Tokens that do not spell the
    reply (byte-level tokens of a non-ASCII character, say) give the written values throughout, which
    the count shows; a number that cannot be found is a typed failure."""
    if "".join(t for t, _ in tokens) != reply:
        return [(list(p), 0) for p in predicted]
    starts = [0]
    for t, _ in tokens:
        starts.append(starts[-1] + len(t))
    spans = _number_spans(reply)
    out = []
    for i, pred in enumerate(predicted, 1):
        sp = spans.get(i, [])
        if len(sp) != len(pred):
            raise SimulationFailure(f"window {i}: {len(sp)} numbers found in the reply for {len(pred)} values")
        row, n_expected = [], 0
        for (a, b), written in zip(sp, pred):
            j = bisect.bisect_right(starts, a) - 1
            tok, alts = tokens[j]
            mass: dict[int, float] = {}
            if starts[j + 1] >= b and tok.strip() == reply[a:b]:
                for alt, lp in alts:
                    if alt.strip() in DIGITS:
                        mass[DIGITS[alt.strip()]] = mass.get(DIGITS[alt.strip()], 0.0) + math.exp(lp)
            total = sum(mass.values())
            if total > 0:
                row.append(sum(v * p for v, p in mass.items()) / total)
                n_expected += 1
            else:
                row.append(written)
        out.append((row, n_expected))
    return out


class _LLMScorer:
    """What LLM scorers share: a client, a template, windows per call; the version names the model
    and hashes the template with the settings."""

    name = ""
    purpose = ""  # the ledger's name for the calls (default: the scorer's name)
    max_tokens = 1000

    def __init__(self, client: LLMClient, template: Template, windows_per_call: int = 10,
                 max_tokens: int | None = None, top_logprobs: int = 0) -> None:
        self.client, self.template = client, template
        self.windows_per_call, self.max_tokens = windows_per_call, max_tokens or self.max_tokens
        self.top_logprobs = top_logprobs
        settings = f"{template.hash}|per_call={windows_per_call}|max_tokens={self.max_tokens}"
        if top_logprobs:
            settings += f"|top_logprobs={top_logprobs}"
        self.version = f"{client.model_id}/{hashlib.sha256(settings.encode()).hexdigest()[:16]}"

    async def _ask(self, explanation: Explanation, wins: list, parse, marks: list | None = None) -> list:
        """The windows in groups of `windows_per_call`, one call per group (all at once); each reply
        (a ChatResponse) is parsed by `parse(reply, group)` and the results concatenated in window order."""
        starts = range(0, len(wins), self.windows_per_call)
        reqs = [ChatRequest(model=self.client.provider.model, system=self.template.system,
                            messages=(("user", render_scoring(
                                self.template, explanation.text, wins[i:i + self.windows_per_call],
                                None if marks is None else marks[i:i + self.windows_per_call])),),
                            max_tokens=self.max_tokens, top_logprobs=self.top_logprobs) for i in starts]
        replies = await asyncio.gather(*(self.client.complete(r, purpose=self.purpose or self.name) for r in reqs))
        return [x for i, r in zip(starts, replies) for x in parse(r, wins[i:i + self.windows_per_call])]

    def _failed(self, err: Exception) -> Score:
        kind = "provider" if isinstance(err, ProviderError) else "reply"
        return Score(self.name, self.version, "failed", None, f"{kind}: {err}", {}, _now())


class LLMSimulationScorer(_LLMScorer):
    name = "simulation"
    purpose = "simulate"
    max_tokens = 4000

    async def score(self, sample: FeatureSample, explanation: Explanation) -> Score:
        wins = list(sample.score)
        if not wins:
            return Score(self.name, self.version, "undefined", None, "no held-out windows", {}, _now())
        try:
            got = await self._ask(explanation, wins, self._parse)
        except (ProviderError, SimulationFailure) as err:
            return self._failed(err)
        sim = Simulation(kinds=tuple(w.kind for w in wins), true=tuple(w.activations for w in wins),
                         predicted=tuple(tuple(p) for p, _ in got))
        extra = {}
        if self.top_logprobs:  # how many values are expected values (the rest: as written, see expected_values)
            extra["from_logprobs"] = round(sum(n for _, n in got) / max(1, sum(len(p) for p, _ in got)), 4)
        return grade_simulation(self.name, self.version, sim, extra=extra)

    def _parse(self, reply, group) -> list[tuple[list[float], int]]:
        """(values, how many of them are expected values) per window of one reply."""
        text = _text(reply)
        predicted = parse_simulation(text, [len(w.tokens) for w in group])
        tokens = reply.logprobs[0] if self.top_logprobs and reply.logprobs else None
        if not tokens:  # no logprobs asked for, or the server gave none: the written values
            return [(p, 0) for p in predicted]
        return expected_values(text, tokens, predicted)


def parse_detection(reply: str, n: int, field: str = "fires") -> list[int]:
    """One 0/1 answer (under `field`) per window from a JSON reply, checked: every window once, nothing else."""
    answers = _json_object(reply, "answers")
    got: dict[int, int] = {}
    for a in answers:
        if not isinstance(a, dict) or not isinstance(a.get("id"), int) or a.get(field) not in (0, 1, True, False):
            raise SimulationFailure(f"each answer needs an integer 'id' and '{field}' of 0 or 1")
        if a["id"] in got:
            raise SimulationFailure(f"window {a['id']} answered twice")
        got[a["id"]] = int(a[field])
    if set(got) != set(range(1, n + 1)):
        raise SimulationFailure(f"answers for windows {sorted(got)}, expected 1..{n}")
    return [got[i] for i in range(1, n + 1)]


class LLMDetectionScorer(_LLMScorer):
    """Detection (delphi; Neuronpedia's eleuther_recall): the held-out windows, unmarked and shuffled, in
    groups of `windows_per_call`; the LLM says which ones the feature fires in. Value: balanced accuracy
    over activating vs non-firing windows; precision, recall and F1 in the details (no AUROC: the
    replies are yes/no, not probabilities). The shuffle is seeded by the sample, so reruns hit the cache."""

    name = "detection"
    field = "fires"
    classes = ("activating", "non-firing")  # the two classes the grade separates, as counted in details
    count_keys = ("n_activating", "n_nonfiring")

    def __init__(self, client: LLMClient, template: Template, windows_per_call: int = 10,
                 max_tokens: int | None = None, min_evidence: int = 10) -> None:
        super().__init__(client, template, windows_per_call, max_tokens)
        self.min_evidence = min_evidence
        self.version += f"/min{min_evidence}"

    def _order(self, sample: FeatureSample) -> list[int]:
        rng = np.random.default_rng([sample.seed, sample.feature, 0xDE7EC7])
        return rng.permutation(len(sample.score)).tolist()

    def _windows(self, sample: FeatureSample):
        """(windows, truth, marks) in the order shown: every held-out window, unmarked."""
        wins = [sample.score[i] for i in self._order(sample)]
        return wins, np.array([0 if w.kind in NEGATIVE_KINDS else 1 for w in wins]), None

    async def score(self, sample: FeatureSample, explanation: Explanation) -> Score:
        wins, truth, marks = self._windows(sample)
        n1, n0 = int(truth.sum()), int(len(truth) - truth.sum())
        counts = {self.count_keys[0]: n1, self.count_keys[1]: n0, "min_evidence": self.min_evidence}
        if min(n1, n0) < self.min_evidence:  # never ask the model for a grade that cannot be given
            return Score(self.name, self.version, "undefined", None,
                         f"too little evidence: {n1} {self.classes[0]} and {n0} {self.classes[1]} windows "
                         f"(at least {self.min_evidence} of each needed)", counts, _now())
        try:
            said = np.array(await self._ask(explanation, wins,
                                            lambda reply, group: parse_detection(_text(reply), len(group), self.field),
                                            marks))
        except (ProviderError, SimulationFailure) as err:
            return self._failed(err)
        details: dict = {**counts, "n_positive": int(truth.sum()), "n_negative": int(len(truth) - truth.sum())}
        for k, fn in (("precision", metrics.precision), ("recall", metrics.recall), ("f1", metrics.f1)):
            try:
                details[k] = round(fn(truth, said), 4)
            except metrics.Undefined:
                details[k] = None
        return _score(self.name, self.version, lambda: metrics.balanced_accuracy(truth, said), details)


class LLMFuzzingScorer(LLMDetectionScorer):
    """Fuzzing (delphi; Neuronpedia's eleuther_fuzz): the held-out activating windows, half with their
    firing tokens marked (activation >= `threshold` x the window's peak), half with as many other
    tokens marked instead; the LLM says which windows are marked correctly. Value: balanced accuracy.
    Which windows are fuzzed, and where, is seeded by the sample: reruns hit the cache."""

    name = "fuzzing"
    field = "correct"
    classes = ("correctly marked", "fuzzed")
    count_keys = ("n_correct", "n_fuzzed")
    threshold = 0.3

    def _windows(self, sample: FeatureSample):
        rng = np.random.default_rng([sample.seed, sample.feature, 0xF022])
        wins = [w for w in sample.score if w.kind not in NEGATIVE_KINDS and max(w.activations) > 0]
        wins = [wins[i] for i in rng.permutation(len(wins))]
        truth, marks = np.zeros(len(wins), dtype=int), []
        for i, w in enumerate(wins):
            a = np.asarray(w.activations)
            on = a >= self.threshold * a.max()
            off = np.flatnonzero(~on)
            if i % 2 == 0 or len(off) < on.sum():  # correctly marked (also when too few tokens to fuzz)
                truth[i] = 1
                marks.append(on.tolist())
            else:
                fake = np.zeros(len(a), dtype=bool)
                fake[rng.choice(off, size=int(on.sum()), replace=False)] = True
                marks.append(fake.tolist())
        return wins, truth, marks
