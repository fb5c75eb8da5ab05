"""Rules of planted features: what fires, its true description, and its near misses; read from TOML.

The built-in library is `rules.toml` beside this file; a user's file has the same format (a list of
`[[rule]]` tables; docs/how-to/calibrate.md). Every key is checked on load, and a bad rule is one line
naming it (CalibrationError, exit 11): an unknown kind or key, an empty word list, a regular expression
that does not compile or has no capture group, a strength its kind cannot have.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import CalibrationError
from ..patterns import KINDS, SPANS, STRENGTHS, Pattern

BUILTIN = Path(__file__).with_name("rules.toml")
NEAR_MISSES = ("narrower", "broader", "sibling")
CATEGORY = {"words": "word class", "tokens": "word class", "regex": "word class", "after": "context", "before": "context",
            "inside": "context", "sentence_end": "context", "sentence_start": "context", "list_item": "context",
            "document": "span", "repeat": "graded"}
CATEGORIES = ("word class", "context", "span", "graded")
_KEYS = {"name", "kind", "description", *NEAR_MISSES, "words", "fires", "regex", "span", "strength", "min_count"}
_NEEDS_WORDS = ("words", "tokens", "after", "before", "document")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


@dataclass(frozen=True)
class Rule:
    """One planted feature: its pattern (patterns.Pattern), its true description, and labels that are
    almost right (`near_misses`: kind -> text, among narrower, broader, sibling)."""

    name: str
    pattern: Pattern
    description: str
    near_misses: dict[str, str] = field(default_factory=dict, compare=False)
    source: str = "built-in"

    @property
    def kind(self) -> str:
        return self.pattern.kind

    @property
    def category(self) -> str:
        """word class, context, span or graded (a rule of any kind with a graded strength is graded)."""
        return "graded" if self.pattern.strength != "flat" else CATEGORY[self.pattern.kind]

    def to_dict(self) -> dict:
        p = self.pattern
        d: dict = {"name": self.name, "kind": p.kind, "category": self.category, "description": self.description,
                   **self.near_misses, "source": self.source}
        if p.words:
            d["words"] = sorted(p.words)
        if p.fires:
            d["fires"] = sorted(p.fires)
        for k, v, default in (("regex", p.regex, ""), ("span", p.span, ""), ("strength", p.strength, "flat"),
                              ("min_count", p.min_count, 1)):
            if v != default:
                d[k] = v
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Rule:
        """A rule as `to_dict` wrote it (a gold dictionary's config); checked as a rule file's is."""
        raw = {k: v for k, v in d.items() if k in _KEYS}
        return parse_rule(raw, d.get("source", "built-in"), d.get("source", "built-in"))


def parse_rule(raw: dict, where: str, source: str) -> Rule:
    """One `[[rule]]` table, checked (CalibrationError naming the rule and what is wrong)."""
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise CalibrationError(f"{where}: every rule needs a name of lower-case letters, digits, '-' or '_' "
                               f"(got {name!r})")

    def bad(msg: str) -> CalibrationError:
        return CalibrationError(f"{where}: rule {name!r}: {msg}")

    unknown = sorted(set(raw) - _KEYS)
    if unknown:
        raise bad(f"unknown key {unknown[0]!r} (known: {', '.join(sorted(_KEYS))})")
    kind = raw.get("kind")
    if kind not in KINDS:
        raise bad(f"unknown kind {kind!r} (choose from {', '.join(KINDS)})")
    texts = {}
    for key in ("description", *NEAR_MISSES):
        v = raw.get(key)
        if v is not None and (not isinstance(v, str) or not v.strip()):
            raise bad(f"{key} must be a non-empty string")
        if v is not None:
            texts[key] = " ".join(v.split())
    if "description" not in texts:
        raise bad("it has no description (the true label)")
    if not any(k in texts for k in NEAR_MISSES):
        raise bad("give at least one near miss (narrower, broader or sibling)")
    words, fires = _word_list(raw, "words", bad), _word_list(raw, "fires", bad)
    if kind in _NEEDS_WORDS and not words:
        raise bad(f"a {kind} rule needs a non-empty word list (words = [...])")
    if kind not in _NEEDS_WORDS and words:
        raise bad(f"a {kind} rule takes no word list")
    if fires and kind not in ("after", "before", "inside"):
        raise bad("fires = [...] is for after, before and inside rules")
    regex = raw.get("regex", "")
    if kind == "regex":
        if not isinstance(regex, str) or not regex:
            raise bad("a regex rule needs regex = '...' with a capture group")
        try:
            compiled = re.compile(regex)
        except re.error as e:
            raise bad(f"regex does not compile: {e}") from None
        if compiled.groups < 1:
            raise bad("regex has no capture group: put the part that fires in ( )")
    elif regex:
        raise bad("regex = '...' is for regex rules")
    span = raw.get("span", "")
    if kind == "inside" and span not in SPANS:
        raise bad(f"an inside rule needs span = one of {', '.join(SPANS)}")
    if kind != "inside" and span:
        raise bad("span = '...' is for inside rules")
    strength = raw.get("strength", "flat")
    allowed = {"inside": ("flat", "rising"), "repeat": ("flat", "rising"), "words": ("flat", "length"),
               "regex": ("flat", "length")}.get(kind, ("flat",))
    if strength not in STRENGTHS or strength not in allowed:
        raise bad(f"strength {strength!r} is not one a {kind} rule can have ({', '.join(allowed)})")
    min_count = raw.get("min_count", 1)
    if not isinstance(min_count, int) or isinstance(min_count, bool) or not 1 <= min_count <= 100:
        raise bad(f"min_count must be a whole number from 1 to 100, got {min_count!r}")
    if min_count != 1 and kind != "document":
        raise bad("min_count is for document rules")
    pattern = Pattern(kind, frozenset(words), frozenset(fires), regex, span, strength, min_count)
    return Rule(name, pattern, texts["description"], {k: texts[k] for k in NEAR_MISSES if k in texts}, source)


def _word_list(raw: dict, key: str, bad) -> list[str]:
    v = raw.get(key, [])
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise bad(f"{key} must be a list of strings")
    out = [x.strip().lower() for x in v]
    if key in raw and not out:
        raise bad(f"empty word list ({key} = [])")
    if any(not x for x in out):
        raise bad(f"{key} holds an empty string")
    return out


def load_rules(path: str | Path | None = None, builtin: bool = True) -> list[Rule]:
    """The built-in library (unless `builtin` is False) followed by the rules of the TOML file at `path`;
    names must be unique across both."""
    rules = _read(BUILTIN, "built-in") if builtin else []
    if path is not None:
        rules += _read(Path(path), str(path))
    if not rules:
        raise CalibrationError("no rules: give --rules FILE.toml, or leave the built-in library on")
    seen: set[str] = set()
    for r in rules:
        if r.name in seen:
            raise CalibrationError(f"rule {r.name!r} is defined twice ({r.source})")
        seen.add(r.name)
    return rules


def _read(path: Path, source: str) -> list[Rule]:
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CalibrationError(f"rule file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise CalibrationError(f"cannot read rule file {path}: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise CalibrationError(f"rule file {path} is not valid TOML: {e}") from None
    extra = sorted(set(doc) - {"rule"})
    if extra:
        raise CalibrationError(f"rule file {path}: unknown table {extra[0]!r} (rules are [[rule]] tables)")
    raw = doc.get("rule", [])
    if not isinstance(raw, list) or not raw:
        raise CalibrationError(f"rule file {path} holds no [[rule]] table")
    return [parse_rule(r, f"rule file {path}" if source != "built-in" else "built-in library", source) for r in raw]


def rules_hash(rules: list[Rule]) -> str:
    """What a set of rules is: a gold dictionary planted from other rules is planted again."""
    return hashlib.sha256(json.dumps([r.to_dict() for r in rules], sort_keys=True).encode()).hexdigest()[:16]
