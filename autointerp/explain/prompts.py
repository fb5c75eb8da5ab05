"""Prompt templates (prompts/*.toml): load, validate, hash, and render a feature's examples into messages.

Rendering treats contexts as data. Every token is escaped (`show_token`): backslash and control
characters become visible escapes (\\n, \\t, \\xNN), and <, > and & become &lt; &gt; &amp;. So no text
inside a context can close the <examples> block, forge a <<highlight>> or start a new line of the
`token<TAB>activation` format. Spaces stay as they are: a token's leading space is part of it.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path

import numpy as np

from ..errors import LabelError, UsageError
from ..records import Window

FORMATS = ("highlight", "activations", "simulate", "simulate_sparse", "simulate_prompt", "detect", "fuzz", "intruder")
PLACEHOLDERS = {"highlight": {"examples"}, "activations": {"examples"}, "simulate": {"explanation", "windows"},
                "simulate_sparse": {"explanation", "windows"}, "simulate_prompt": {"explanation", "windows"},
                "detect": {"explanation", "windows"},
                "fuzz": {"explanation", "windows"}, "intruder": {"questions"}}
_KEYS = {"name", "format", "system", "user", "fewshot", "highlight_threshold", "outputs"}
# What an explain template appends to the feature's turn when a run shows output tokens (`label --output-tokens`);
# a template may give its own `outputs` text with the same two placeholders.
OUTPUTS = """When this feature fires, it pushes the model's next-token prediction towards these tokens
(the logit lens of its output direction, strongest first): {promoted}
and away from these: {suppressed}
They hint at what the feature is for; the excerpts show where it fires."""
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SPECIAL = re.compile(r"[\x00-\x1f\x7f<>&\\]")
_NAMED = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


@lru_cache(maxsize=1 << 16)
def show_token(tok: str) -> str:
    if not _SPECIAL.search(tok):  # most tokens: nothing to escape
        return tok
    t = tok.replace("\\", "\\\\")
    t = _CONTROL.sub(lambda m: _NAMED.get(m.group(), f"\\x{ord(m.group()):02x}"), t)
    return t.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


@dataclass(frozen=True)
class FewShot:
    windows: tuple[tuple[tuple[str, ...], tuple[float, ...]], ...]
    answer: str


@dataclass(frozen=True)
class Template:
    name: str
    format: str
    system: str
    user: str
    fewshot: tuple[FewShot, ...]
    highlight_threshold: float = 0.3
    source: str = ""
    outputs: str = OUTPUTS

    @property
    def hash(self) -> str:
        """Of the parsed content: comments and whitespace around the file do not change it."""
        doc = {"name": self.name, "format": self.format, "system": self.system, "user": self.user,
               "threshold": self.highlight_threshold, **({"outputs": self.outputs} if self.outputs != OUTPUTS else {}),
               "fewshot": [[[list(t), list(a)] for t, a in f.windows] + [f.answer] for f in self.fewshot]}
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]

    # -- rendering -----------------------------------------------------------------------------------

    def render_examples(self, windows: Sequence[tuple[Sequence[str], Sequence[float] | np.ndarray]]) -> str:
        peak = max((max(a, default=0.0) for _, a in windows), default=0.0)
        blocks = []
        for i, (tokens, acts) in enumerate(windows, 1):
            if self.format == "highlight":
                body = _highlight(tokens, acts, self.highlight_threshold * peak if peak > 0 else math.inf)
            else:
                body = "\n".join(f"{show_token(t)}\t{_level(a, peak)}" for t, a in zip(tokens, acts))
            blocks.append(f"Example {i}:\n{body}")
        return "\n\n".join(blocks)

    @cached_property
    def fewshot_turns(self) -> tuple[tuple[str, str], ...]:
        out: list[tuple[str, str]] = []
        for f in self.fewshot:
            out.append(("user", self.user.replace("{examples}", self.render_examples(list(f.windows)))))
            out.append(("assistant", f.answer))
        return tuple(out)

    def messages(self, windows: list[Window], outputs=None) -> tuple[tuple[str, str], ...]:
        """Few-shot turns, then the feature's examples (and, given `outputs`, its logit-lens tokens), as
        (role, text) pairs."""
        ex = [(w.tokens, w.activations) for w in windows]
        turn = self.user.replace("{examples}", self.render_examples(ex))
        if outputs is not None:
            def listed(pairs) -> str:
                return ", ".join(json.dumps(show_token(t), ensure_ascii=False) for t, _ in pairs)

            turn += "\n\n" + self.outputs.replace("{promoted}", listed(outputs.promoted)).replace(
                "{suppressed}", listed(outputs.suppressed))
        return self.fewshot_turns + (("user", turn),)


def render_scoring(template: Template, explanation: str, windows: list[Window],
                   marks: list[list[bool]] | None = None) -> str:
    """A scorer's user turn: the explanation, then each window, numbered from 1. For a `simulate` or
    `simulate_sparse` template a window is index<TAB>token lines (token indices from 0); for `detect`,
    its text; for `fuzz`, its text with the tokens in `marks` wrapped in << >>."""
    blocks = []
    for i, w in enumerate(windows, 1):
        if template.format in ("simulate", "simulate_sparse"):
            body = "\n".join(f"{j}\t{show_token(t)}" for j, t in enumerate(w.tokens))
        elif template.format == "fuzz":
            if marks is None:
                raise ValueError(f"a {template.format} template shows marked windows: marks are needed")
            body = _highlight(w.tokens, [float(m) for m in marks[i - 1]], 0.5)
        else:
            body = "".join(show_token(t) for t in w.tokens)
        blocks.append(f'<window id="{i}">\n{body}\n</window>')
    # the explanation is data too: escaped, and on one line
    text = show_token(" ".join(explanation.split()))
    return template.user.replace("{explanation}", text).replace("{windows}", "\n".join(blocks))


SLOT = "unknown"  # what stands where a simulate_prompt prompt asks for an activation
PROMPT_TOP = 9  # simulate_prompt levels are 0..9: one token each on every tokenizer (Gemma's writes 10 as "1", "0")


def render_prompt(template: Template, explanation: str, windows: list[Window]) -> tuple[str, list[list[int]]]:
    """A simulate_prompt template's whole prompt, and per window the character offset of each token's slot.

    The system text, each few-shot feature (its description, its windows at their true levels 0..9),
    then this feature: each window between <start> and <end>, one `token<TAB>unknown` line per token
    (tokens escaped, so a line is always one token). The explanation is escaped and on one line."""

    def block(wins, values) -> tuple[str, list[list[int]]]:
        parts, slots, at = [], [], 0
        for toks, vals in zip(wins, values):
            mine = []
            parts.append("<start>\n")
            at += len(parts[-1])
            for t, v in zip(toks, vals):
                head = f"{show_token(t)}\t"
                mine.append(at + len(head))
                parts.append(f"{head}{v}\n")
                at += len(parts[-1])
            parts.append("<end>\n")
            at += len(parts[-1])
            slots.append(mine)
        return "".join(parts).rstrip("\n"), slots

    def feature(desc: str, wins, values) -> tuple[str, list[list[int]]]:
        said = show_token(" ".join(desc.split()))
        head, _, tail = template.user.partition("{windows}")
        head = head.replace("{explanation}", said)
        body, slots = block(wins, values)
        return head + body + tail.replace("{explanation}", said), [[len(head) + o for o in s] for s in slots]

    out = template.system + "\n\n"
    for f in template.fewshot:
        peak = max(max(a, default=0.0) for _, a in f.windows)
        text, _ = feature(f.answer, [t for t, _ in f.windows], [[_level(a, peak, PROMPT_TOP) for a in acts]
                                                                     for _, acts in f.windows])
        out += text + "\n\n"
    text, slots = feature(explanation, [w.tokens for w in windows], [[SLOT] * len(w.tokens) for w in windows])
    return out + text, [[len(out) + o for o in s] for s in slots]


def render_questions(template: Template, questions: list[list[Window]]) -> str:
    """An intruder scorer's user turn: each question, numbered from 1, its windows (as text) numbered
    from 1 within it. No explanation: the model is to find the window that does not belong."""
    blocks = []
    for q, wins in enumerate(questions, 1):
        body = "\n".join(f'<window id="{i}">{"".join(show_token(t) for t in w.tokens)}</window>'
                         for i, w in enumerate(wins, 1))
        blocks.append(f'<question id="{q}">\n{body}\n</question>')
    return template.user.replace("{questions}", "\n".join(blocks))


def _level(a: float, peak: float, top: int = 10) -> int:
    """OpenAI's normalisation: floor(top * relu(a) / max), an integer 0..top (top 10, or 9 for prompts
    whose levels must each be one token on every tokenizer)."""
    return 0 if peak <= 0 else min(top, int(math.floor(top * max(a, 0.0) / peak)))


def _highlight(tokens, acts, cut: float) -> str:
    """Tokens as text, each run of tokens at or above `cut` wrapped in << >>."""
    out, inside = [], False
    for t, a in zip(tokens, acts):
        on = a >= cut
        if on != inside:
            out.append("<<" if on else ">>")
            inside = on
        out.append(show_token(t))
    if inside:
        out.append(">>")
    return "".join(out)


# -- loading -----------------------------------------------------------------------------------------

def _find(name_or_path: str) -> tuple[str, str]:
    p = Path(name_or_path)
    if p.suffix == ".toml" or p.exists():
        if not p.is_file():
            raise LabelError(f"prompt file {p} does not exist")
        return p.read_text(encoding="utf-8"), str(p)
    folder = prompts_dir()
    res = folder / f"{name_or_path}.toml"
    if not res.is_file():
        have = sorted(x.stem for x in folder.glob("*.toml"))
        raise UsageError(f"no prompt template {name_or_path!r}; available: {', '.join(have)}")
    return res.read_text(encoding="utf-8"), f"prompts/{name_or_path}.toml"


def prompts_dir() -> Path:
    """The repository's prompts/ in a source checkout; autointerp/prompts/ where a wheel installed it."""
    pkg = Path(__file__).resolve().parent.parent
    for d in (pkg.parent / "prompts", pkg / "prompts"):
        if d.is_dir() and any(d.glob("*.toml")):
            return d
    raise LabelError("no prompts folder found (expected prompts/ beside the autointerp package)")


def load_template(name_or_path: str) -> Template:
    """A template by name (prompts/NAME.toml) or path, validated; a bad template is a LabelError."""
    text, source = _find(name_or_path)
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise LabelError(f"prompt {source}: not valid TOML: {e}") from None

    def bad(msg: str) -> LabelError:
        return LabelError(f"prompt {source}: {msg}")

    unknown = set(doc) - _KEYS
    if unknown:
        raise bad(f"unknown keys {', '.join(sorted(unknown))}")
    for k in ("name", "format", "system", "user"):
        if not isinstance(doc.get(k), str) or not doc[k].strip():
            raise bad(f"{k!r} must be a non-empty string")
    if doc["format"] not in FORMATS:
        raise bad(f"format must be one of {', '.join(FORMATS)}")
    holes = set(re.findall(r"\{(\w*)\}", doc["user"]))
    want = PLACEHOLDERS[doc["format"]]
    if holes != want:
        raise bad(f"user must contain {', '.join('{' + h + '}' for h in sorted(want))} and no other placeholder "
                  f"(found {sorted(holes)})")
    outputs = doc.get("outputs", OUTPUTS)
    if not isinstance(outputs, str) or set(re.findall(r"\{(\w*)\}", outputs)) != {"promoted", "suppressed"}:
        raise bad("outputs must be a string with the placeholders {promoted} and {suppressed} and no other")
    if "outputs" in doc and doc["format"] not in ("highlight", "activations"):
        raise bad("outputs is for explain templates (format highlight or activations)")
    thr = doc.get("highlight_threshold", 0.3)
    if not isinstance(thr, (int, float)) or not 0 < thr <= 1:
        raise bad("highlight_threshold must be in (0, 1]")
    shots = []
    for i, f in enumerate(doc.get("fewshot", [])):
        if not isinstance(f.get("answer"), str) or not f["answer"].strip() or not f.get("windows"):
            raise bad(f"fewshot {i + 1} needs windows and a non-empty answer")
        wins = []
        for w in f["windows"]:
            toks, acts = w.get("tokens"), w.get("activations")
            if (not isinstance(toks, list) or not isinstance(acts, list) or len(toks) != len(acts) or not toks
                    or not all(isinstance(t, str) for t in toks)
                    or not all(isinstance(a, (int, float)) for a in acts)):
                raise bad(f"fewshot {i + 1}: each window needs equal-length lists of string tokens and numbers")
            wins.append((tuple(toks), tuple(float(a) for a in acts)))
        shots.append(FewShot(tuple(wins), f["answer"].strip()))
    return Template(doc["name"], doc["format"], doc["system"].strip(), doc["user"].strip(), tuple(shots),
                    float(thr), source, outputs.strip())
