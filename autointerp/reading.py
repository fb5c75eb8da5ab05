"""How a label is read for what it states precisely: the patterns (patterns.py) a careful reader finds in it.

`read_label` splits a label into clauses (at ";") and reads each: the words it quotes; the word after or
before something ('the word after "not"', "the word right before a comma"); words inside quotation marks
or parentheses (the first one, stronger further in); the last or first word of a sentence; items of a
comma-separated list; every token of a passage about a topic; a word repeated from earlier in the text;
words ending in a suffix; names with underscores; numbers written in digits (stronger the more digits).
A clause about what a feature writes ("promotes ...") states nothing about where it fires. The offline
simulator predicts from what is read here; the offline explainer writes labels this reads back.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from .patterns import NUMBER, Pattern, Words

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
_OUTPUT = re.compile(r"\s*(?:promotes|suppresses|predicts|boosts)\b")
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
    """The patterns one clause of a label states (empty when it states none precisely, or when it speaks of
    what the feature writes, not where it fires: "promotes ...", "suppresses ...")."""
    low = clause.lower()
    quoted = _quoted(clause)
    unquoted = _QUOTED.sub(" ", low)
    if _OUTPUT.match(unquoted):
        return []
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


SEPARATOR = "[SEP]"  # between windows read as one run of tokens: each window is a document of its own


@lru_cache(maxsize=16_384)
def words_of(tokens: tuple[str, ...]) -> Words:
    """Words.of, kept for the windows read last."""
    return Words.of(tokens)


def join(windows: Sequence) -> tuple[Words, np.ndarray]:
    """The windows read as one run of tokens, a separator before each (so each is a document of its own: no
    quotation, sentence or repetition runs from one into the next), and where each window token is in it."""
    tokens: list[str] = []
    keep: list[np.ndarray] = []
    for w in windows:
        tokens.append(SEPARATOR)
        keep.append(np.arange(len(tokens), len(tokens) + len(w.tokens)))
        tokens.extend(w.tokens)
    return Words.of(tokens), (np.concatenate(keep) if keep else np.zeros(0, np.int64))


def predict_words(patterns: Sequence[Pattern], words: Words) -> np.ndarray:
    """The strongest of `patterns` on every token of `words` (0 where none fires), each on one scale (1 at
    its strongest)."""
    out = np.zeros(words.n_tokens)
    for p in patterns:
        np.maximum(out, p.evaluate(words) / p.top, out=out)
    return out


def predict_patterns(patterns: Sequence[Pattern], tokens: tuple[str, ...]) -> np.ndarray:
    """The strongest of `patterns` on every token of one window."""
    return predict_words(patterns, words_of(tuple(tokens)))
