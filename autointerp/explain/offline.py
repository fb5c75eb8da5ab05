"""The offline explainer: the label, among many it could write, that best predicts the feature's explain set.

Over the explain set, the firing positions are the tokens at or above `threshold` x the highest
activation (delphi highlights the same way). From them the explainer writes candidate labels of every
shape the label reader understands (reading.py): the words that fire ('the words "not", "no"'), the
tokens that fire (subwords, ranked by log-odds against the corpus with an informative Dirichlet prior,
Monroe, Colaresi & Quinn 2008), the word after or before a neighbour ('the word right after "to"'),
words inside quotation marks or parentheses, the last or first word of a sentence, items of a list, a
word repeated from earlier in the text, words ending in a suffix, numbers in digits, every token of a
passage about a topic (its words ranked against the corpus), and pairs of these. Each candidate is read
back as the offline simulator reads it and graded by the correlation of that reading with the explain
set's activations (never the held-out windows, which grade the label); the best, less a small charge for
every clause and quoted term, is the label. Every candidate's correlation is kept in `evidence`.

Where the dictionary has output tokens (the logit lens of each feature's output direction, capture/lens.py),
the label also names the promoted tokens that the text bears out: those that are the next token after
at least `min_next` of the firing positions (and twice at least), as in "...; promotes " (" next". A
promoted token the corpus never puts after the feature is not evidence of anything, so it is left out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from ..clock import utcnow
from ..contracts import ExplainerBase
from ..errors import ExplainFailure
from ..patterns import NUMBER, STOP, Words
from ..reading import join, predict_words, read_label
from ..records import Explanation, FeatureSample
from ..store import ActivationRepo

METHOD = "offline"
VERSION = "hypotheses-v2"  # recorded as the explanation's prompt_hash: change it when the method changes
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
    _words: dict[str, int] | None = None

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

    def word_counts(self) -> dict[str, int]:
        """Occurrences of each token's text (stripped, lower-cased) in the counted sample."""
        if self._words is None:
            out: dict[str, int] = {}
            for i, c in zip(self.ids.tolist(), self.counts.tolist()):
                key = self.strings.get(i, "").strip().lower()
                out[key] = out.get(key, 0) + c
            self._words = out
        return self._words

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


FLOOR = 0.1  # a candidate fitting the explain set worse than this is no better than the token list
CHARGE_CLAUSE, CHARGE_TERM = 0.02, 0.003  # what each further clause and each quoted term costs a candidate


@dataclass
class _Read:
    """The explain windows read as one run of words (reading.join), and their activations on it."""

    words: Words
    keep: np.ndarray  # where each window token is among `words`' tokens
    acts: np.ndarray  # the activation of every token of `words` (0 on the separators)

    @classmethod
    def of(cls, wins: list) -> _Read:
        words, keep = join(wins)
        acts = np.zeros(words.n_tokens)
        acts[keep] = np.concatenate([w.activations for w in wins]) if wins else []
        return cls(words, keep, acts)

    def fit(self, text: str) -> float:
        """How well the label, read as the offline simulator reads it, predicts the windows' activations: the
        Pearson correlation over every window token (0 where the reading predicts nothing, or is constant)."""
        patterns = read_label(text)
        if not patterns:
            return 0.0
        pred, true = predict_words(patterns, self.words)[self.keep], self.acts[self.keep]
        if pred.std() == 0 or true.std() == 0:
            return 0.0
        return float(np.corrcoef(pred, true)[0, 1])


def _charge(text: str) -> float:
    return CHARGE_CLAUSE * text.count(";") + CHARGE_TERM * text.count('"') / 2


def _show_mark(s: str) -> str:
    return "a number" if s == NUMBER else _show(s)


def _quote_list(noun: str, words: list[str]) -> str:
    return f"the {noun}{'s' if len(words) > 1 else ''} " + ", ".join(_show(w) for w in words)


class _Firing:
    """Which words of the explain windows fire (any of their tokens at or above the threshold), and what is
    around them."""

    def __init__(self, read: _Read, threshold: float) -> None:
        ww = read.words
        fires = ww.word_max(read.acts) >= threshold
        self.all_words: list[str] = ww.words
        self.fired_words = [x for x, f in zip(ww.words, fires) if f]
        self.prev_items = [x for x, f in zip(ww.prev_item, fires) if f]
        self.next_items = [x for x, f in zip(ww.next_item, fires) if f]
        self.prev_all: dict[str, int] = {}  # occurrences of each neighbour
        self.next_all: dict[str, int] = {}
        for p, n in zip(ww.prev_item, ww.next_item):
            self.prev_all[p] = self.prev_all.get(p, 0) + 1
            self.next_all[n] = self.next_all.get(n, 0) + 1
        self.flags: dict[str, np.ndarray] = {
            "quotes": ww.inside["quotes"][fires] > 0, "parentheses": ww.inside["parentheses"][fires] > 0,
            "sentence_end": ww.sentence_end[fires], "sentence_start": ww.sentence_start[fires],
            "list_item": ww.list_item[fires] > 0, "repeat": ww.seen_before[fires] > 0,
            "digits": np.array([x.isdigit() for x in self.fired_words], bool)}
        self.token_share = int((read.acts >= threshold).sum()) / max(int((~ww.special).sum()), 1)

    def share(self, key: str) -> float:
        got = self.flags[key]
        return float(got.mean()) if len(got) else 0.0

    def precise(self, items: list[str], among: str = "", min_count: int = 2, min_precision: float = 0.5) -> list[str]:
        """Items seen at least `min_count` times among firing words, most often first, that fire (or, for
        neighbours, whose neighbour fires) in at least `min_precision` of their occurrences."""
        counts: dict[str, int] = {}
        for x in items:
            if x:
                counts[x] = counts.get(x, 0) + 1
        if among == "after":
            occ = dict(self.prev_all)
        elif among == "before":
            occ = dict(self.next_all)
        else:
            occ = {}
            for x in self.all_words:
                occ[x] = occ.get(x, 0) + 1
        if among:  # a neighbour that is a number stands for every number
            nums = sum(c for x, c in counts.items() if x.isdigit())
            if nums >= min_count:
                counts[NUMBER] = nums
                occ[NUMBER] = sum(c for x, c in occ.items() if x.isdigit())
        good = [x for x, c in counts.items() if c >= min_count and c / max(occ.get(x, c), 1) >= min_precision]
        return sorted(good, key=lambda x: (-counts[x], x))

    def suffix(self) -> str:
        """A suffix (2-4 letters) that most firing words share, if any."""
        words = [w for w in self.fired_words if len(w) >= 5]
        if len(words) < 4:
            return ""
        for n in (4, 3, 2):
            ends: dict[str, int] = {}
            for w in words:
                ends[w[-n:]] = ends.get(w[-n:], 0) + 1
            best = max(ends, key=lambda e: ends[e])
            if ends[best] >= 0.6 * len(words) and len(set(w for w in words if w.endswith(best))) >= 3:
                return best
        return ""


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
        tokens = self._render(items, n_fire)  # the label of tokens and their neighbours alone
        read = _Read.of(wins)
        fits = sorted(((read.fit(t) - _charge(t), t) for t in dict.fromkeys([tokens, *self._hypotheses(read, peak)])),
                      key=lambda x: -x[0])
        text = fits[0][1] if fits[0][0] > FLOOR else tokens
        evidence = {"firing_positions": n_fire, "threshold": self.threshold, "windows": len(wins),
                    "top": [it for it in items[:12]],
                    "candidates": [{"label": t, "fit": round(f, 3)} for f, t in fits[:8]]}
        if self.uses_outputs and sample.outputs is not None:
            borne = self._borne_out(sample.outputs, nxt, n_fire)
            evidence["outputs_borne_out"] = borne
            if borne:
                text += "; promotes " + ", ".join(_show(it["text"]) for it in borne) + " next"
        return Explanation(dictionary=sample.dictionary, feature=sample.feature, text=text, explainer=METHOD,
                           prompt_hash=self.prompt_hash, sampler=sample.config, seed=sample.seed, evidence=evidence,
                           created_at=utcnow())

    def _hypotheses(self, read: _Read, peak: float) -> list[str]:
        """Candidate labels of every shape the label reader understands, from the words that fire."""
        seen = _Firing(read, self.threshold * peak)
        out = []
        words = seen.precise(seen.fired_words)
        for k in range(1, min(len(words), self.max_terms + 2) + 1):
            out.append(_quote_list("word", words[:k]))
        for kind, items in (("after", seen.prev_items), ("before", seen.next_items)):
            near = seen.precise(items, among=kind)
            for k in (1, 2):
                if len(near) >= k:
                    out.append(f"the word right {kind} " + " or ".join(_show_mark(x) for x in near[:k]))
            if near and words:
                out.append(f"{_quote_list('word', words[:3])} right {kind} {_show_mark(near[0])}")
        share = seen.share
        if share("quotes") >= 0.3:
            out += ["words inside quotation marks", "words inside quotation marks, stronger further in"]
        if share("parentheses") >= 0.3:
            out += ["words inside parentheses", "words inside parentheses, stronger the further into the parenthesis"]
        if share("sentence_end") >= 0.3:
            out.append("the last word of a sentence")
        if share("sentence_start") >= 0.3:
            out.append("the first word of a sentence")
        if share("list_item") >= 0.3:
            out.append("items of a comma-separated list")
        if share("repeat") >= 0.5:
            out += ["a word repeated from earlier in the text", "a word repeated from earlier in the text, stronger "
                    "each time it recurs"]
        if share("digits") >= 0.5:
            out += ["numbers written in digits", "numbers written in digits, stronger the more digits they have"]
        suffix = seen.suffix()
        if suffix:
            out.append(f'words ending in -{suffix} ({", ".join(_show(w) for w in words[:3])})')
        if seen.token_share >= 0.5:
            topic = self._topic(read.words)
            if topic:
                out.append(f"every token of a passage about {', '.join(_show(w) for w in topic)}")
        singles = [t for t in out if ";" not in t]
        out += [f"{a}; {b}" for i, a in enumerate(singles[:6]) for b in singles[i + 1:6]
                if not (a.startswith("the word") and b.startswith("the word"))]
        return out

    def _topic(self, words: Words, k: int = 3) -> list[str]:
        """The content words of the windows most frequent against the corpus (a passage's topic)."""
        counts: dict[str, int] = {}
        for x in words.words:
            if len(x) >= 4 and x not in STOP and not x.isdigit():
                counts[x] = counts.get(x, 0) + 1
        bg = self.bg.word_counts()
        total = max(sum(bg.values()), 1)
        score = {x: c * np.log(total / (1 + bg.get(x, 0))) for x, c in counts.items() if c >= 2}
        return sorted(score, key=lambda x: -score[x])[:k]

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
