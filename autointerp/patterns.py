"""Where a feature fires, said precisely: patterns over the words of a run of tokens.

A `Pattern` is one thing a label can say about where a feature fires: these words; the word after (or
before) these words; words inside quotation marks or parentheses; the last or first word of a sentence;
items of a comma-separated list; every token of a document about a topic; a word repeated from earlier in
the text. `Pattern.evaluate(Words)` gives its activation on every token. Three places read patterns the
same way: calibration plants gold features with them (calibrate/), the offline simulator predicts
activations from the patterns a label names (simulate/offline.py), and the offline explainer names the
pattern that best predicts a feature's explain set (explain/offline.py).

`Words.of(tokens)` reads token strings (as stored: joined, they give the text) as words: a word is a run
of letters, digits or underscores, matched on the joined text, so it spans subword tokens ("tu" + "ple"
is the word "tuple"), and every token holding part of it fires with it. Special tokens ([CLS], [SEP],
<bos>, ...) are document boundaries and never fire. A sentence ends at ".", "!" or "?"; quotation marks
are straight or curly double quotes, paired within a document.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

SPECIAL = re.compile(r"^(\[[A-Z]+\]|<[^<>\s]+>)$")  # [CLS] [SEP] [PAD] <bos> <eos> <pad> ...
_ITEM = re.compile(r"(\w+)|([^\w\s])")  # a word (group 1), or one punctuation mark (group 2)
_ENDS = frozenset(".!?")  # marks that end a sentence
_STARTS = _ENDS | {""}
NUMBER = "<number>"  # stands for any word of digits, in a pattern's word sets
SPANS = {"quotes": ('"“”', '"“”'), "parentheses": ("(", ")")}
KINDS = ("words", "tokens", "regex", "after", "before", "inside", "sentence_end", "sentence_start", "list_item", "document",
         "repeat")
STRENGTHS = ("flat", "rising", "length")
CAP_RISING, CAP_REPEAT, CAP_LENGTH = 8, 4, 8  # graded strengths stop rising here (a word's place, count, length)
STOP = frozenset(["a", "an", "the", "of", "in", "on", "at", "to", "for", "and", "or", "but", "is", "are", "was", "were", "be", "been", "being", "as", "by", "with", "from", "that", "this", "these", "those", "it", "its", "into", "than", "then", "there", "their", "they", "them", "he", "she", "we", "you", "i", "his", "her", "our", "your", "not", "no", "can", "may", "will", "would", "should", "could", "must", "which", "what", "when", "where", "who", "how", "also", "if", "so", "such", "all", "any", "each", "some", "more", "most", "other", "only", "one", "two"])


@dataclass
class Words:
    """The words of one run of tokens, and what each word's neighbourhood is (arrays over words)."""

    n_tokens: int
    words: list[str]  # lower-cased
    token_lo: np.ndarray  # first token of each word
    token_hi: np.ndarray  # one past its last token
    special: np.ndarray  # bool per token
    doc: np.ndarray  # document index of each word (special tokens split documents)
    token_doc: np.ndarray  # document index of each token (-1: a special token)
    prev_item: list[str]  # the word or punctuation mark just before each word, in its document ("" at the start)
    next_item: list[str]  # the word or mark just after it ("" at the end)
    sentence_start: np.ndarray
    sentence_end: np.ndarray
    tokens: Sequence[str] = field(repr=False, default=())
    text: str = field(repr=False, default="")
    token_start: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(1, np.int64))  # char offsets, + the end
    # what the spans are read from, when first asked for: (text, start, end, is_word) of every word and mark,
    # the token and document of each, and which of them are words
    items: list[tuple[str, int, int, bool]] = field(repr=False, default_factory=list)
    item_tok: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0, np.int64))
    item_doc: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0, np.int64))
    word_items: list[int] = field(repr=False, default_factory=list)
    word_array: np.ndarray = field(init=False, repr=False)  # `words` as an array (for np.isin)
    token_text: np.ndarray = field(init=False, repr=False)  # each token's text, stripped and lower-cased
    _word_of: np.ndarray = field(init=False, repr=False)  # (word, token) pairs: which word ...
    _token_of: np.ndarray = field(init=False, repr=False)  # ... holds which token

    @classmethod
    def of(cls, tokens: Sequence[str]) -> Words:
        n = len(tokens)
        special = np.fromiter((bool(SPECIAL.match(t)) for t in tokens), bool, n)
        pieces = ["\n" if s else t for t, s in zip(tokens, special)]
        starts = np.zeros(n + 1, np.int64)
        np.cumsum([len(p) for p in pieces], out=starts[1:])
        text = "".join(pieces)
        token_doc = np.cumsum(special) - special  # specials start a new document after them
        token_doc = np.where(special, -1, token_doc)
        low = text.lower()
        if len(low) != len(text):  # a character whose lower case is longer: offsets from the text itself
            low = text
        # words and punctuation marks in order: (lower-cased text, char start, char end, is_word)
        items = [(m.group().lower(), m.start(), m.end(), m.lastindex == 1) for m in _ITEM.finditer(low)]
        starts_of = np.fromiter((it[1] for it in items), np.int64, len(items))
        item_tok = np.searchsorted(starts, starts_of, side="right") - 1
        item_end = np.searchsorted(starts, np.fromiter((it[2] for it in items), np.int64, len(items)), side="left")
        item_doc = token_doc[np.clip(item_tok, 0, max(n - 1, 0))] if n else np.zeros(0, np.int64)
        idx = [j for j, it in enumerate(items) if it[3]]
        words = [items[j][0] for j in idx]
        lo = item_tok[idx].astype(np.int64)
        hi = np.maximum(item_end[idx], lo + 1).astype(np.int64)
        doc = item_doc[idx].astype(np.int64).tolist()
        prev = [items[j - 1][0] if j > 0 and item_doc[j - 1] == item_doc[j] else "" for j in idx]
        nxt = [items[j + 1][0] if j + 1 < len(items) and item_doc[j + 1] == item_doc[j] else "" for j in idx]
        n_words = len(words)
        doc_a = np.asarray(doc, np.int64)
        start = np.fromiter((p in _STARTS for p in prev), bool, n_words)  # "": the first word of its document
        end = np.fromiter((x in _ENDS for x in nxt), bool, n_words)
        return cls(n, words, lo, hi, special, doc_a, token_doc, prev, nxt, start, end, tokens, text, starts,
                   items, item_tok, item_doc, idx)

    # -- read when first asked for (a label of words needs none of them) ----------------------------------

    @cached_property
    def inside(self) -> dict[str, np.ndarray]:
        """Span kind -> per word: 0 outside, else 1, 2, ... its place inside the span. A mark inside a token
        ('onerror="x"' as one token) delimits no span: only one at a token's edge does."""
        st, text = self.token_start, self.text
        edge = [not it[3] and (not text[st[t]:it[1]].strip() or not text[it[2]:st[t + 1]].strip())
                for it, t in zip(self.items, self.item_tok)]
        return {kind: _inside(self.items, self.word_items, self.item_doc, edge, opens, closes)
                for kind, (opens, closes) in SPANS.items()}

    @cached_property
    def list_item(self) -> np.ndarray:
        """Per word: 0 for a word that is no list item, else its 1-based place in the list."""
        return _list_items(self.words, self.prev_item, self.next_item, self.doc, self.sentence_end)

    @cached_property
    def seen_before(self) -> np.ndarray:
        """Per word: how many times it occurred earlier in its document."""
        seen: dict[tuple[int, str], int] = {}
        out = np.zeros(len(self.words), np.int64)
        for k, (d, w) in enumerate(zip(self.doc.tolist(), self.words)):
            out[k] = seen.get((d, w), 0)
            seen[(d, w)] = out[k] + 1
        return out

    def __post_init__(self) -> None:
        spans = self.token_hi - self.token_lo
        self._word_of = np.repeat(np.arange(len(self.words)), spans)  # (word, token) pairs, word by word
        self._token_of = (np.arange(int(spans.sum())) - np.repeat(np.cumsum(spans) - spans, spans)
                          + np.repeat(self.token_lo, spans)).astype(np.int64)
        self.word_array = np.asarray(self.words, dtype=object)
        self.token_text = np.asarray([t.strip().lower() for t in self.tokens], dtype=object)

    def word_max(self, per_token: np.ndarray) -> np.ndarray:
        """Per-word values from per-token ones: the largest over the word's tokens."""
        out = np.full(len(self.words), -np.inf)
        if len(self._word_of):
            np.maximum.at(out, self._word_of, np.asarray(per_token, np.float64)[self._token_of])
        return out

    def spread(self, per_word: np.ndarray) -> np.ndarray:
        """Per-token values from per-word values: every token of a word gets the word's value (the largest,
        where two words share a token)."""
        out = np.zeros(self.n_tokens)
        if len(self._word_of):
            np.maximum.at(out, self._token_of, np.asarray(per_word, np.float64)[self._word_of])
        out[self.special] = 0
        return out


def _inside(items, idx: list[int], item_doc, edge: list[bool], opens: str, closes: str) -> np.ndarray:
    """Per word: 0 outside the span kind, else the word's 1-based place inside it (within one document)."""
    out = np.zeros(len(idx), np.int64)
    same = opens == closes
    depth, place, doc = 0, 0, None
    where = {j: w for w, j in enumerate(idx)}
    for j, (s, _, _, is_word) in enumerate(items):
        if item_doc[j] != doc:
            depth, place, doc = 0, 0, item_doc[j]
        if not is_word and edge[j] and s in opens and (not same or depth == 0):
            depth, place = depth + 1, 0
        elif not is_word and edge[j] and s in closes and depth > 0:
            depth -= 1
        elif is_word and depth > 0:
            place += 1
            out[where[j]] = place
    return out


def _list_items(words: list[str], prev: list[str], nxt: list[str], doc: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Per word: 0, or its place (1, 2, ...) as an item of a comma-separated list of three or more (the word
    before a comma, or after ", and" / ", or"), in a sentence that holds at least two commas."""
    out = np.zeros(len(words), np.int64)
    k = 0
    while k < len(words):  # one sentence at a time
        j = k
        while j < len(words) - 1 and not end[j] and doc[j + 1] == doc[j]:
            j += 1
        commas = sum(nxt[i] == "," for i in range(k, j + 1))
        if commas >= 2:
            place = 0
            for i in range(k, j + 1):
                if nxt[i] == "," or (words[i - 1] in ("and", "or") and prev[i - 1] == "," if i > k else False):
                    place += 1
                    out[i] = place
        k = j + 1
    return out


def _matches(words: Sequence[str] | np.ndarray, wanted: frozenset[str]) -> np.ndarray:
    arr = words if isinstance(words, np.ndarray) else np.asarray(words, dtype=object)
    out = np.isin(arr, list(wanted)) if len(arr) else np.zeros(0, bool)
    if NUMBER in wanted:
        out |= np.fromiter((w.isdigit() for w in arr), bool, len(arr))
    return out


@dataclass(frozen=True)
class Pattern:
    """One statement of where a feature fires (see the module's notes).

    `words`: the words that fire (kind "words"), the neighbours that make the next or previous word fire
    ("after", "before": a word, a punctuation mark, or NUMBER), or a topic's words ("document": a document
    holding at least `min_count` of them fires on every token). `fires`: for "after", "before", "inside",
    the firing words themselves (empty: any word). `regex`: kind "regex", the tokens under its first capture
    group fire. `span`: kind "inside", "quotes" or "parentheses". `strength`: flat (every firing word alike),
    rising (stronger further into the span, or each time a word recurs), length (with the word's length).
    Kind "tokens" fires on the tokens whose text (stripped, lower-cased) is one of `words`, whether or not
    they are whole words (a subword a label names)."""

    kind: str
    words: frozenset[str] = frozenset()
    fires: frozenset[str] = frozenset()
    regex: str = ""
    span: str = ""
    strength: str = "flat"
    min_count: int = 1
    place: int = 0  # inside, list_item, repeat: only the place-th word of the span, item of the list, occurrence

    @property
    def top(self) -> float:
        """The largest activation the pattern gives (what puts patterns of other strengths on one scale)."""
        if self.strength == "rising":
            return float(CAP_RISING if self.kind == "inside" else CAP_REPEAT)
        return float(CAP_LENGTH) if self.strength == "length" else 1.0

    def evaluate(self, w: Words) -> np.ndarray:
        """The pattern's activation on every token of `w` (0 where it does not fire)."""
        if self.kind == "regex":
            return self._regex(w)
        if self.kind == "document":
            return self._document(w)
        if self.kind == "tokens":
            return np.isin(w.token_text, list(self.words)).astype(np.float64) * (~w.special)
        m = len(w.words)
        words = w.words
        if self.kind == "words":
            hit = _matches(w.word_array, self.words)
        elif self.kind in ("after", "before"):
            near = w.prev_item if self.kind == "after" else w.next_item
            hit = _matches(near, self.words) if self.words else np.ones(m, bool)
        elif self.kind == "inside":
            hit = w.inside[self.span] == self.place if self.place else w.inside[self.span] > 0
        elif self.kind == "sentence_end":
            hit = w.sentence_end.copy()
        elif self.kind == "sentence_start":
            hit = w.sentence_start.copy()
        elif self.kind == "list_item":
            hit = w.list_item == self.place if self.place else w.list_item > 0
        elif self.kind == "repeat":
            hit = (w.seen_before == self.place - 1) if self.place else (w.seen_before > 0)
            hit &= np.fromiter((len(x) >= 4 and x not in STOP for x in words), bool, m)
        else:
            raise ValueError(f"unknown pattern kind {self.kind!r}")
        if self.fires and self.kind != "words":
            hit &= _matches(w.word_array, self.fires)
        val = hit.astype(np.float64)
        if self.strength == "rising":
            val *= np.minimum(w.inside[self.span], CAP_RISING) if self.kind == "inside" else \
                np.minimum(w.seen_before, CAP_REPEAT)
        elif self.strength == "length":
            val *= np.minimum(np.fromiter((len(x) for x in words), np.float64, m), CAP_LENGTH)
        return w.spread(val)

    def _regex(self, w: Words) -> np.ndarray:
        out = np.zeros(w.n_tokens)
        for m in re.finditer(self.regex, w.text, flags=re.IGNORECASE):
            a, b = m.span(1)
            if b <= a:
                continue
            t0 = int(np.searchsorted(w.token_start, a, side="right") - 1)
            t1 = int(np.searchsorted(w.token_start, b, side="left"))
            out[t0:max(t1, t0 + 1)] = min(b - a, CAP_LENGTH) if self.strength == "length" else 1.0
        out[w.special] = 0
        return out

    def _document(self, w: Words) -> np.ndarray:
        hit = _matches(w.word_array, self.words)
        found = np.unique(w.doc[hit]) if hit.any() else np.zeros(0, np.int64)
        docs = [d for d in found if int(hit[w.doc == d].sum()) >= self.min_count]
        return np.isin(w.token_doc, docs).astype(np.float64) * (~w.special)
