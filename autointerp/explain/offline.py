"""The offline explainer: a label built from the tokens most enriched where the feature fires.

Over the explain set, the firing positions are the tokens at or above `threshold` x the highest
activation (delphi highlights the same way). Three kinds of evidence are counted there and compared
with the corpus by log-odds with an informative Dirichlet prior (Monroe, Colaresi & Quinn 2008):
the firing token itself, the token just before it, and the (previous, firing) bigram. The z-scores
rank the evidence; the label names what is both enriched and frequent among the firing positions,
and says so plainly when nothing is. Every number behind the text is kept in `evidence`.

Where the dictionary has output tokens (the logit lens of each feature's output direction, capture/lens.py),
the label also names the promoted tokens that the text bears out: those that are the next token after
at least `min_next` of the firing positions (and twice at least), as in "...; promotes " (" next". A
promoted token the corpus never puts after the feature is not evidence of anything, so it is left out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from ..contracts import ExplainerBase
from ..clock import utcnow
from ..errors import ExplainFailure
from ..records import Explanation, FeatureSample
from ..store import ActivationRepo

METHOD = "offline"
VERSION = "logodds-v1"  # recorded as the explanation's prompt_hash: change it when the method changes
WITH_OUTPUTS = "+outputs-v1"  # appended to it when the label may name output tokens
_U64 = np.uint64


@dataclass
class Background:
    """Token and bigram counts of (a deterministic sample of) a corpus, and each token id's string."""

    ids: np.ndarray  # sorted unique token ids
    counts: np.ndarray
    pairs: np.ndarray  # sorted unique (prev << 32 | token)
    pair_counts: np.ndarray
    strings: dict[int, str]

    @classmethod
    def from_store(cls, activations: ActivationRepo, corpus_id: int, max_tokens: int = 4_000_000) -> Background:
        """Counted over `max_tokens` of the corpus's contexts (evenly spaced), read from the store's
        activations repository."""
        corpus = activations.corpus(corpus_id)
        n = corpus.n_contexts
        take = max(1, min(n, max_tokens // max(corpus.ctx_len, 1)))
        ids = np.unique(np.linspace(0, n - 1, take).astype(np.int64))
        ctx = activations.read_contexts(corpus_id, ids, with_strings=True)
        tok, off = ctx["token_ids"].astype(np.int64), ctx["offsets"]
        first = np.zeros(len(tok), dtype=bool)
        first[off[:-1][off[:-1] < len(tok)]] = True
        u, c = np.unique(tok, return_counts=True)
        pk = (tok[:-1].astype(_U64) << _U64(32)) | tok[1:].astype(_U64)
        pk = pk[~first[1:]]  # no bigram across a context boundary
        pu, pc = np.unique(pk, return_counts=True)
        strings: dict[int, str] = {}
        for t, s in zip(tok.tolist(), ctx["tokens"]):
            strings.setdefault(t, s)
        return cls(u, c, pu, pc, strings)

    def count(self, keys: np.ndarray, pairs: bool = False) -> np.ndarray:
        table, counts = (self.pairs, self.pair_counts) if pairs else (self.ids, self.counts)
        i = np.searchsorted(table, keys)
        i = np.minimum(i, len(table) - 1)
        return np.where(table[i] == keys, counts[i], 0) if len(table) else np.zeros(len(keys), np.int64)


def _log_odds(fg: np.ndarray, n_fg: int, bg: np.ndarray, n_bg: int, prior: float = 100.0) -> np.ndarray:
    """z-scores of log-odds ratios, foreground vs background, with a Dirichlet prior shaped like the background."""
    alpha = prior * (bg + 0.5) / (n_bg + 0.5 * len(bg))
    a0 = prior
    d = (np.log((fg + alpha) / (n_fg + a0 - fg - alpha)) - np.log((bg + alpha) / (n_bg + a0 - bg - alpha)))
    return d / np.sqrt(1.0 / (fg + alpha) + 1.0 / (bg + alpha))


def _show(s: str) -> str:
    t = s.strip()
    return json.dumps(t if t else s, ensure_ascii=False)


class OfflineExplainer(ExplainerBase):
    """Explains a feature from its explain set and corpus statistics; no model, no network."""

    name = METHOD

    def __init__(self, background, threshold: float = 0.3, min_z: float = 3.0, max_terms: int = 3,
                 outputs: bool = False, min_next: float = 0.05):
        """`background`: a Background, or a function making one on first use (a run that is only planned,
        or only grades, never reads the corpus statistics). `outputs`: name promoted tokens borne out as
        next tokens (the samples carry `outputs`)."""
        self._bg = background
        self.threshold = threshold
        self.min_z = min_z
        self.max_terms = max_terms
        self.uses_outputs = outputs
        self.min_next = min_next
        self.prompt_hash = VERSION + (WITH_OUTPUTS if outputs else "")

    @property
    def bg(self) -> Background:
        if not isinstance(self._bg, Background):
            self._bg = self._bg()
        return self._bg

    def explain(self, sample: FeatureSample) -> Explanation:
        wins = list(sample.explain)
        peak = max((w.peak for w in wins), default=0.0)
        if peak <= 0:
            raise ExplainFailure(f"feature {sample.feature}: the explain set has no firing token")
        curs, prevs, nxts = [], [], []
        for w in wins:
            ids, acts = w.token_ids, w.activations  # int64 and float64 arrays (records.Window)
            at = np.flatnonzero(acts >= self.threshold * peak)
            curs.append(ids[at])
            prevs.append(np.where(at > 0, ids[np.maximum(at - 1, 0)], -1))
            nxts.append(np.where(at + 1 < len(ids), ids[np.minimum(at + 1, len(ids) - 1)], -1))
        cur, prev, nxt = np.concatenate(curs), np.concatenate(prevs), np.concatenate(nxts)
        n_fire = len(cur)
        n_bg, n_pairs = int(self.bg.counts.sum()), int(self.bg.pair_counts.sum())
        items = []
        for kind, keys in (("token", cur), ("previous", prev[prev >= 0])):
            u, c = np.unique(keys, return_counts=True)
            z = _log_odds(c, len(keys), self.bg.count(u), n_bg)
            items += [{"kind": kind, "ids": [int(t)], "count": int(k), "coverage": round(k / n_fire, 3),
                       "z": round(float(s), 2)} for t, k, s in zip(u, c, z)]
        has = prev >= 0
        pk = (prev[has].astype(_U64) << _U64(32)) | cur[has].astype(_U64)
        u, c = np.unique(pk, return_counts=True)
        z = _log_odds(c, len(pk), self.bg.count(u, pairs=True), n_pairs)
        items += [{"kind": "bigram", "ids": [int(k >> _U64(32)), int(k & _U64(0xFFFFFFFF))], "count": int(n),
                   "coverage": round(n / n_fire, 3), "z": round(float(s), 2)} for k, n, s in zip(u, c, z)]
        for it in items:
            it["text"] = "".join(self.bg.strings.get(i, f"<{i}>") for i in it["ids"])
        items.sort(key=lambda it: (-it["z"], -it["count"]))
        text = self._render(items, n_fire)
        evidence = {"firing_positions": n_fire, "threshold": self.threshold, "windows": len(wins),
                    "top": [it for it in items[:12]]}
        if self.uses_outputs and sample.outputs is not None:
            borne = self._borne_out(sample.outputs, nxt, n_fire)
            evidence["outputs_borne_out"] = borne
            if borne:
                text += "; promotes " + ", ".join(_show(it["text"]) for it in borne) + " next"
        return Explanation(dictionary=sample.dictionary, feature=sample.feature, text=text, explainer=METHOD,
                           prompt_hash=self.prompt_hash, sampler=sample.config, seed=sample.seed, evidence=evidence,
                           created_at=utcnow())

    def _borne_out(self, outputs, nxt: np.ndarray, n_fire: int) -> list[dict]:
        """The promoted tokens that follow the firing positions often enough (at most `max_terms`)."""
        out = []
        for tid, (tok, logit) in zip(outputs.promoted_ids, outputs.promoted):
            count = int((nxt == tid).sum())
            if count >= 2 and count >= self.min_next * n_fire:
                out.append({"ids": [int(tid)], "text": tok, "count": count, "coverage": round(count / n_fire, 3),
                            "logit": round(logit, 3)})
        return out[: self.max_terms]

    def _render(self, items: list[dict], n_fire: int) -> str:
        strong = [it for it in items if it["z"] >= self.min_z and it["count"] >= 2]
        tokens = [it for it in strong if it["kind"] == "token"][: self.max_terms]
        prevs = [it for it in strong if it["kind"] == "previous" and it["coverage"] >= 0.25][:2]
        grams = [it for it in strong if it["kind"] == "bigram" and it["coverage"] >= 0.1][:2]
        if not tokens and not prevs and not grams:
            common = sorted((it for it in items if it["kind"] == "token"), key=lambda it: -it["count"])[:3]
            return "no clear pattern; fires on varied tokens such as " + ", ".join(_show(it["text"]) for it in common)
        parts = []
        if tokens:
            cover = sum(it["coverage"] for it in tokens)
            names = ", ".join(_show(it["text"]) for it in tokens)
            parts.append(f"the token{'s' if len(tokens) > 1 else ''} {names}" if cover >= 0.5
                         else f"tokens such as {names}")
        else:
            parts.append("tokens")
        if prevs:
            parts.append("after " + " or ".join(_show(it["text"]) for it in prevs))
        if grams:
            parts.append("as in " + ", ".join(_show(it["text"]) for it in grams))
        return " ".join(parts[:1]) + ("" if len(parts) == 1 else ", " + "; ".join(parts[1:]))
