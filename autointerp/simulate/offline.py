"""The offline simulator: predicts each token's activation from an explanation, with no model calls.

The label is read for what it says precisely (`read_label`: patterns.py's patterns): the words it quotes;
the word after or before something ('the word after "not"', "the word right before a comma"); words
inside quotation marks or parentheses (the first one, stronger further in); the last or first word of a
sentence; items of a comma-separated list; every token of a passage about a topic; a word repeated from
earlier in the text; numbers written in digits (stronger the more digits). A label can say several
things, one per clause (split at ";"). Each token's prediction is the strongest of the patterns the label
names, plus a small share (SIMILARITY) of the cosine similarity of the token's in-context MiniLM vector
to the label's embedding, which orders what the patterns leave tied. A label in which nothing precise is
found is predicted from that similarity alone, plus 1 on the tokens its content words name.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from ..contracts import SimulatorBase
from ..embed import ENCODING, ContextEncoder, embed_many, embed_text
from ..patterns import NUMBER, Pattern, Words
from ..records import Window
from .llm import Predictions

SIMILARITY = 0.1  # the similarity's share where the label names a pattern
_STOP = {"a", "an", "the", "of", "in", "on", "at", "to", "for", "and", "or", "is", "are", "be", "as", "by", "with",
         "from", "that", "this", "it", "its", "token", "tokens", "such", "fires", "fire", "firing", "after", "before",
         "often", "like", "text", "words", "word"}
_QUOTED = re.compile(r'"([^"]*)"|“([^”]*)”')
_NEAR = r"(?:right |immediately |directly |just )?"
_AFTER = re.compile(rf"\b{_NEAR}(?:after|following|preceded by|that follows?)\b")
_BEFORE = re.compile(rf"\b{_NEAR}(?:before|preceding|followed by|that precedes?)\b")
_MARKS = {"comma": ",", "full stop": ".", "period": ".", "colon": ":", "semicolon": ";",
          "opening parenthesis": "(", "open parenthesis": "(", "parenthesis": "(", "closing parenthesis": ")",
          "question mark": "?", "hyphen": "-", "number": NUMBER, "digit": NUMBER, "numeral": NUMBER}
_PLACES = {"first": 1, "second": 2, "third": 3}
_SENTENCE_END = re.compile(r"\b(?:last|final) word of (?:a|the|each) sentence|\bend of (?:a|the) sentence|"
                           r"\bends? (?:a|the) sentence|\bsentence[- ]final")
_SENTENCE_START = re.compile(r"\bfirst word of (?:a|the|each) sentence|\b(?:start|beginning) of (?:a|the) sentence|"
                             r"\bbegins? (?:a|the) sentence|\bsentence[- ]initial")
_INSIDE = re.compile(r"\b(?:inside|within|between|in|enclosed in)\b[^;]*?\b(quotation marks|quotes|double quotes|"
                     r"parenthes[ie]s|brackets)")
_LIST = re.compile(r"\b(?:items?|elements?|entries) (?:of|in) (?:a|the) (?:comma[- ]separated )?list|"
                   r"\bcomma[- ]separated list|\benumerat")
_REPEAT = re.compile(r"\brepeat|\brecur|\b(?:occurred|appeared|seen|used) (?:earlier|before)|\boccurrence")
_DOCUMENT = re.compile(r"\b(?:passages?|documents?|paragraphs?|texts?) (?:about|on the topic of|on)\b")
_DIGITS = re.compile(r"\b(?:numbers?|numerals?|integers?)(?: written)? in digits\b|\bdigits\b")
_SUFFIX = re.compile(r"\bending in -?([a-z]{1,6})\b")
_UNDERSCORE = re.compile(r"\bwith underscores\b|\bsnake[_ ]case\b")
_RISING = re.compile(r"\bfurther|\bdeeper|\brising|\bincreas|\bgrows?\b|\bmore (?:digits|often)|\beach time")


def terms(explanation: str) -> set[str]:
    """The words an explanation names: its quoted strings if it has any, else its content words."""
    quoted = [a or b for a, b in _QUOTED.findall(explanation)]
    words = quoted or [w for w in re.findall(r"\w+", explanation) if w.lower() not in _STOP]
    return {w.strip().lower() for w in words if w.strip()}


def _quoted(clause: str) -> list[tuple[int, str]]:
    """(position, lower-cased text) of each quoted string of a clause."""
    return [(m.start(), (m.group(1) if m.group(1) is not None else m.group(2)).strip().lower())
            for m in _QUOTED.finditer(clause) if (m.group(1) or m.group(2) or "").strip()]


def _named(quoted: list[tuple[int, str]], lo: int = 0, hi: int | None = None, marks: bool = False) -> frozenset[str]:
    """The words of the quoted strings between two positions (a quoted phrase gives each of its words), and
    with `marks` the punctuation marks quoted alone ("(", ",")."""
    out: set[str] = set()
    for at, q in quoted:
        if lo <= at and (hi is None or at < hi):
            out.update(re.findall(r"\w+", q))
            if marks and len(q) == 1 and not q.isalnum():
                out.add(q)
    return frozenset(out)


def _marks(text: str) -> frozenset[str]:
    return frozenset(m for name, m in _MARKS.items() if re.search(rf"\b{name}s?\b", text))


def _place(text: str) -> int:
    m = re.search(r"\b(first|second|third) (?:word|item|occurrence)", text)
    return _PLACES[m.group(1)] if m else 0


def read_clause(clause: str) -> list[Pattern]:
    """The patterns one clause of a label states (empty when it states none precisely)."""
    low = clause.lower()
    quoted = _quoted(clause)
    unquoted = _QUOTED.sub(" ", low)
    strength = "rising" if _RISING.search(unquoted) else "flat"
    if _SENTENCE_END.search(unquoted):
        return [Pattern("sentence_end", fires=_named(quoted))]
    if _SENTENCE_START.search(unquoted):
        return [Pattern("sentence_start", fires=_named(quoted))]
    m = _INSIDE.search(unquoted)
    if m:
        span = "quotes" if "quot" in m.group(1) else "parentheses"
        return [Pattern("inside", fires=_named(quoted), span=span, strength=strength, place=_place(unquoted))]
    if _LIST.search(unquoted):
        return [Pattern("list_item", place=min(_place(unquoted), 1))]
    if _REPEAT.search(unquoted):
        return [Pattern("repeat", strength=strength, place=_place(unquoted))]
    for kind, rx in (("after", _AFTER), ("before", _BEFORE)):
        m = rx.search(unquoted)
        if m:
            near = _named(quoted, m.end(), marks=True) or _marks(unquoted[m.end():])
            if near:
                return [Pattern(kind, near, fires=_named(quoted, 0, m.start()))]
    m = _DOCUMENT.search(unquoted)
    if m and not re.match(r"\s*the (?:words?|tokens?|names?) ", unquoted):
        topic = _named(quoted) or frozenset(w for w in re.findall(r"\w+", unquoted[m.end():]) if w not in _STOP)
        return [Pattern("document", topic)] if topic else []
    m = _SUFFIX.search(unquoted)
    if m:
        return [Pattern("regex", regex=rf"\b(\w{{2,}}{re.escape(m.group(1))})\b")]
    if _UNDERSCORE.search(unquoted):
        return [Pattern("regex", regex=r"\b([a-z0-9]*_\w*)\b")]
    if _DIGITS.search(unquoted):
        return [Pattern("words", frozenset({NUMBER}), strength="length" if strength == "rising" else "flat")]
    words = _named(quoted)
    if words:
        return [Pattern("words", words), Pattern("tokens", words)]
    return []


def read_label(text: str) -> list[Pattern]:
    """Every pattern a label states, clause by clause (clauses split at ";")."""
    return [p for clause in text.split(";") for p in read_clause(clause)]


def predict_patterns(patterns: Sequence[Pattern], tokens: Sequence[str]) -> np.ndarray:
    """The strongest of `patterns` on every token of one window (0 where none fires)."""
    words = Words.of(tokens)
    out = np.zeros(len(tokens))
    for p in patterns:
        np.maximum(out, p.evaluate(words) / p.top, out=out)  # every pattern on one scale: 1 at its strongest
    return out


class OfflineSimulator(SimulatorBase):
    name = "offline"
    version = f"{ENCODING}/patterns+similarity-v3"

    def __init__(self, encoder: ContextEncoder) -> None:
        self.encoder = encoder

    def prepare(self, texts: Sequence[str]) -> None:
        """Embed the labels of a batch of features at once (before their predictions are asked for)."""
        embed_many(list(texts))

    def predict(self, explanation: str, windows: list[Window]) -> Predictions:
        if not windows:
            return Predictions([], {"simulator": "offline"})
        vecs, norms, _ = self.encoder.gather(windows)
        e = vecs.new_tensor(embed_text(explanation))
        sim = ((vecs @ e) / norms.clamp(min=1e-12)).clamp(min=0.0).numpy().astype(np.float64)
        patterns = read_label(explanation)
        if patterns:
            pred = SIMILARITY * sim + np.concatenate([predict_patterns(patterns, w.tokens) for w in windows])
        else:
            pred = sim + self.encoder.matches(windows, terms(explanation))
        info = {"simulator": "offline", "patterns": len(patterns)}
        return Predictions(np.split(pred, np.cumsum([len(w.tokens) for w in windows])[:-1]), info)
