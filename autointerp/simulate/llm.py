"""LLM simulators: the model predicts activations from the explanation alone, on held-out windows.

Windows go in groups of `windows_per_call`, each group one call through the provider layer (cached,
priced, rate-limited). Every reply is checked before it is used; anything else is a `ReplyFailure` with
the reason (the grade is "failed: reply: ..."), never silently zeros (delphi's simulator turns length
mismatches into all-zero predictions).

- JSON (dense, prompts/simulate_json.toml): `{"windows": [{"id": 1, "activations": [0, 0, 7, 0]}, ...]}`,
  every window once, exactly one number 0-10 per token. Where the provider returns `top_logprobs`
  (OpenAI chat, vLLM), each number the model wrote is replaced by the expected value over the tokens
  "0".."10" at its position, as OpenAI's simulator does: a model unsure between 0 and 6 predicts 2.4.
- Sparse (prompts/simulate_sparse.toml): `{"nonzero": [[window, index, token, value], ...]}`, only the
  tokens predicted to fire, value an integer 1-10, the token copied as shown; every other token is 0.
  Checked strictly: window and index in range, the token matches, no token twice.
- All at once (prompts/simulate_prompt.toml, OpenAI's original method): nothing is written. Every token
  of the windows stands on a line of its own followed by "unknown"; a completions server with echo +
  logprobs (llama-cpp-python's, vLLM) returns the most likely tokens at every position of the prompt,
  and the prediction at a token is the expected value over "0".."9" where its "unknown" stands (levels 0..9:
  one token each on every tokenizer). One forward pass, one generated token. Positions that cannot be
  read (see `read_slots`) are counted by reason.
"""

from __future__ import annotations

import asyncio
import bisect
import hashlib
import math
import re
from dataclasses import dataclass, field

import numpy as np

from ..contracts import SimulatorBase
from ..errors import LabelError
from ..explain.prompts import PROMPT_TOP, Template, load_template, render_prompt, render_scoring, show_token
from ..llm import ChatRequest, ChatResponse, LLMClient, PromptRequest
from ..llm.replies import ReplyFailure, is_int, json_list, reply_text
from ..records import Window


@dataclass
class Predictions:
    """One array of predicted activations per window, and what the simulator says about how it made them."""

    values: list[np.ndarray]
    info: dict = field(default_factory=dict)


def parse_simulation(reply: str, lengths: list[int]) -> list[list[float]]:
    """Predicted activations per window from a dense JSON reply, checked against the windows' lengths."""
    wins = json_list(reply, "windows")
    by_id: dict[int, list] = {}
    for w in wins:
        if not isinstance(w, dict) or not is_int(w.get("id")) or not isinstance(w.get("activations"), list):
            raise ReplyFailure("each window needs an integer 'id' and an 'activations' list")
        if w["id"] in by_id:
            raise ReplyFailure(f"window {w['id']} given twice")
        by_id[w["id"]] = w["activations"]
    out = []
    for i, n in enumerate(lengths, 1):
        acts = by_id.get(i)
        if acts is None:
            raise ReplyFailure(f"window {i} missing from reply")
        if len(acts) != n:
            raise ReplyFailure(f"window {i}: {len(acts)} values for {n} tokens")
        if not all(isinstance(a, (int, float)) and not isinstance(a, bool) and 0 <= a <= 10 for a in acts):
            raise ReplyFailure(f"window {i}: values must be numbers from 0 to 10")
        out.append([float(a) for a in acts])
    if set(by_id) - set(range(1, len(lengths) + 1)):
        raise ReplyFailure(f"reply has windows {sorted(set(by_id) - set(range(1, len(lengths) + 1)))} "
                           "that were not asked for")
    return out


def parse_sparse(reply: str, windows: list[Window]) -> list[list[float]]:
    """Predicted activations per window from a sparse reply: the listed tokens at their value, 0 elsewhere."""
    entries = json_list(reply, "nonzero")
    out = [[0.0] * len(w.tokens) for w in windows]
    seen: set[tuple[int, int]] = set()
    for e in entries:
        if not (isinstance(e, list) and len(e) == 4 and is_int(e[0]) and is_int(e[1]) and isinstance(e[2], str)
                and is_int(e[3])):
            raise ReplyFailure(f"each entry must be [window id, token index, token, value], got {str(e)[:60]}")
        wid, idx, tok, value = e
        if not 1 <= wid <= len(windows):
            raise ReplyFailure(f"entry {e!r}: no window {wid} (windows 1..{len(windows)})")
        toks = windows[wid - 1].tokens
        if not 0 <= idx < len(toks):
            raise ReplyFailure(f"entry {e!r}: window {wid} has tokens 0..{len(toks) - 1}")
        if tok.strip() != show_token(toks[idx]).strip():
            raise ReplyFailure(f"entry {e!r}: token {idx} of window {wid} is {show_token(toks[idx])!r}")
        if not 1 <= value <= 10:
            raise ReplyFailure(f"entry {e!r}: value must be an integer from 1 to 10")
        if (wid, idx) in seen:
            raise ReplyFailure(f"token {idx} of window {wid} listed twice")
        seen.add((wid, idx))
        out[wid - 1][idx] = float(value)
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


# raw token pieces read as text: SentencePiece's "▁" for a space, and byte-level BPE's stand-ins for the
# ASCII bytes it remaps (0-32 -> U+0100..U+0120: "Ġ" a space, "Ċ" a newline, "ĉ" a TAB; 127 -> U+0121)
_MARKS = str.maketrans({"\u2581": " ", **{chr(256 + b): chr(b) for b in range(33)}, "\u0121": "\x7f"})


def _expected(alts, top: int = 10) -> float | None:
    """The expected level 0..top over a token's alternatives that are levels; None when none is."""
    mass: dict[int, float] = {}
    for alt, lp in alts:
        a = alt.translate(_MARKS).strip()
        if a in DIGITS and DIGITS[a] <= top:
            mass[DIGITS[a]] = mass.get(DIGITS[a], 0.0) + math.exp(lp)
    total = sum(mass.values())
    return sum(v * p for v, p in mass.items()) / total if total > 0 else None


FALLBACKS = ("unspelled", "split", "no_digit")  # why a number kept its written value (see expected_values)


def expected_values(reply: str, tokens, predicted: list[list[float]],
                    why: dict[str, int] | None = None) -> list[tuple[list[float], int]]:
    """`predicted` (parsed from `reply`, checked) with each number replaced by the expected value over
    "0".."10" of the alternatives at its token, where the number is one token of its own and some of
    its alternatives are digits; other numbers keep their written value. Per window: (values, how
    many came from logprobs); `why` counts, by FALLBACKS key, why each other number kept its written
    value: "unspelled" (tokens that do not spell the reply, such as byte-level pieces of a non-ASCII
    character: every number), "split" ("2.5", or "10" written "1", "0" as Gemma's tokenizer does),
    "no_digit". Raw "▁"/"Ġ" pieces count as spaces. A number that cannot be found is a typed failure."""
    why = {} if why is None else why
    if "".join(t for t, _ in tokens) != reply:
        tokens = [(t.translate(_MARKS), alts) for t, alts in tokens]
    if "".join(t for t, _ in tokens) != reply:
        why["unspelled"] = why.get("unspelled", 0) + sum(len(p) for p in predicted)
        return [(list(p), 0) for p in predicted]
    starts = [0]
    for t, _ in tokens:
        starts.append(starts[-1] + len(t))
    spans = _number_spans(reply)
    out = []
    for i, pred in enumerate(predicted, 1):
        sp = spans.get(i, [])
        if len(sp) != len(pred):
            raise ReplyFailure(f"window {i}: {len(sp)} numbers found in the reply for {len(pred)} values")
        row, n_expected = [], 0
        for (a, b), written in zip(sp, pred):
            j = bisect.bisect_right(starts, a) - 1
            tok, alts = tokens[j]
            if starts[j + 1] < b or tok.strip() != reply[a:b]:
                reason = "split"
            elif (value := _expected(alts)) is not None:
                row.append(value)
                n_expected += 1
                continue
            else:
                reason = "no_digit"
            why[reason] = why.get(reason, 0) + 1
            row.append(written)
        out.append((row, n_expected))
    return out


def _groups(windows: list[Window], per_call: int, budget: int | None = None, cost=None) -> list[list[Window]]:
    """The windows in calls of `per_call`, and with a `budget`, of at most `budget` tokens by `cost(group)` too
    (a window alone is a call whatever it costs)."""
    if budget is None or cost is None:
        return [windows[i:i + per_call] for i in range(0, len(windows), per_call)]
    out: list[list[Window]] = []
    for w in windows:
        if out and len(out[-1]) < per_call and cost([*out[-1], w]) <= budget:
            out[-1].append(w)
        else:
            out.append([w])
    return out


def estimate_tokens(text: str) -> int:
    """Tokens of a prompt, over-estimated (3 characters a token; most tokenizers give ~4 on English)."""
    return len(text) // 3 + 1


class _LLMSimulator(SimulatorBase):
    """A client, a template, windows per call; the version names the model and hashes the template with
    the settings."""

    name = ""
    max_tokens = 4000
    fit_rule = ""  # how `fit` sizes a call's max_tokens, when it does (part of the version)
    client: LLMClient

    def __init__(self, client: LLMClient, template: Template, windows_per_call: int = 10,
                 max_tokens: int | None = None, top_logprobs: int = 0, call_tokens: int | None = None) -> None:
        """`call_tokens`: with top_logprobs, a call's prompt + reply tokens at most (fewer windows a call)."""
        self.client, self.template = client, template
        self.windows_per_call, self.max_tokens = windows_per_call, max_tokens or self.max_tokens
        self.top_logprobs = top_logprobs
        self.call_tokens = call_tokens if top_logprobs else None
        settings = f"{template.hash}|per_call={windows_per_call}|max_tokens={self.max_tokens}"
        if top_logprobs:
            settings += f"|top_logprobs={top_logprobs}"
        if self.call_tokens:
            settings += f"|call_tokens={self.call_tokens}"
        if self.fit_rule:
            settings += f"|fit={self.fit_rule}"
        self.version = f"{client.model_id}/{hashlib.sha256(settings.encode()).hexdigest()[:16]}"

    def fit(self, group: list[Window]) -> int:
        """The output tokens a call on `group` may use."""
        return self.max_tokens

    async def _replies(self, explanation: str, windows: list[Window]) -> list[tuple[list[Window], ChatResponse]]:
        def cost(g: list[Window]) -> int:
            return estimate_tokens(self.template.system + render_scoring(self.template, explanation, g)) + self.fit(g)

        groups = _groups(windows, self.windows_per_call, self.call_tokens, cost)
        reqs = [ChatRequest(model=self.client.provider.model, system=self.template.system,
                            messages=(("user", render_scoring(self.template, explanation, g)),),
                            max_tokens=self.fit(g), top_logprobs=self.top_logprobs) for g in groups]
        replies = await asyncio.gather(*(self.client.complete(r, purpose="simulate") for r in reqs))
        return list(zip(groups, replies))


class JSONSimulator(_LLMSimulator):
    name = "json"
    fit_rule = "100+20/window+5/token"

    def fit(self, group: list[Window]) -> int:
        """100 + 20 a window + 5 a token, at most max_tokens."""
        # a compact reply takes 2-3 tokens a number ("0", ",", " "; Gemma writes 10 in 4) and a few a
        # window; the headroom allows a fence, a line of preamble or one number per line. A model that
        # rambles (a small local one) stops there instead of at max_tokens or its context limit.
        return min(self.max_tokens, 100 + sum(20 + 5 * len(w.tokens) for w in group))

    async def predict(self, explanation: str, windows: list[Window]) -> Predictions:
        values, n_expected = [], 0
        why: dict[str, int] = {}
        for group, reply in await self._replies(explanation, windows):
            text = reply_text(reply)
            written = parse_simulation(text, [len(w.tokens) for w in group])
            tokens = reply.logprobs[0] if self.top_logprobs and reply.logprobs else None
            if self.top_logprobs and not tokens:
                why["not_returned"] = why.get("not_returned", 0) + sum(len(p) for p in written)
            got = expected_values(text, tokens, written, why) if tokens else [(p, 0) for p in written]
            values += [np.asarray(p, np.float64) for p, _ in got]
            n_expected += sum(n for _, n in got)
        info: dict[str, object] = {"simulator": "json"}
        if self.top_logprobs:  # how many values are expected values; the others, as written, and why
            info["from_logprobs"] = round(n_expected / max(1, sum(len(v) for v in values)), 4)
            info.update({f"written_{k}": why.get(k, 0) for k in (*FALLBACKS, "not_returned")})
        return Predictions(values, info)


class SparseSimulator(_LLMSimulator):
    name = "sparse"
    max_tokens = 2000

    async def predict(self, explanation: str, windows: list[Window]) -> Predictions:
        values, listed = [], 0
        for group, reply in await self._replies(explanation, windows):
            got = parse_sparse(reply_text(reply), group)
            values += [np.asarray(p, np.float64) for p in got]
            listed += sum(int(np.count_nonzero(p)) for p in got)
        return Predictions(values, {"simulator": "sparse", "tokens_listed": listed})


UNREAD_LIMIT = 0.1  # more positions than this unreadable in a call: the call is a typed failure


def _spelled(tokens, prompt: str) -> list[int] | None:
    """Each token's start in the prompt, when the tokens spell it: as served, or read as text (raw
    "▁"/"Ġ"/"ĉ" pieces), after a leading BOS token such as "<bos>" a server may echo (its start is
    -1), and with the space a SentencePiece tokenizer may put before the first piece. None when the
    tokens do not spell it."""
    for text in ([t for t, _ in tokens], [t.translate(_MARKS) for t, _ in tokens]):
        for skip in (0, 1):
            rest = text[skip:]
            for lead in (0, 1):  # 1: the first piece's leading space is the tokenizer's, not the prompt's
                if lead and not (rest and rest[0].startswith(" ") and not prompt.startswith(" ")):
                    continue
                joined = "".join(rest)[lead:]
                if joined.startswith(prompt):
                    starts, at = [-1] * skip, -lead
                    for t in rest:
                        starts.append(max(at, 0))
                        at += len(t)
                    return starts
    return None


UNREAD = {"unspelled": "the server's tokens do not spell the prompt",
          "joined": "no token starts at the slot (the tokenizer joins it to the TAB)",
          "no_digit": "no digit among the alternatives returned"}


def read_slots(prompt: str, slots: list[list[int]], tokens, top: int = 9) -> tuple[list[list[float | None]], dict]:
    """The expected value over "0".."top" at each slot (None where it cannot be read), and per UNREAD
    key how many slots could not be read.

    A slot is read from the alternatives of the token that starts where its "unknown" does: the model's
    distribution over what comes after `token<TAB>`. It cannot be read when the tokens do not spell the
    prompt (every slot), when no token starts there (the tokenizer joins it to the TAB), or when no level
    is among the alternatives the server returned."""
    starts = _spelled(tokens, prompt)
    n = sum(len(s) for s in slots)
    if starts is None:
        return [[None] * len(s) for s in slots], {"unspelled": n}
    by_start = {a: j for j, a in enumerate(starts) if a >= 0}
    unread: dict[str, int] = {}
    out = []
    for win in slots:
        row: list[float | None] = []
        for o in win:
            j = by_start.get(o)
            value = _expected(tokens[j][1], top) if j is not None else None
            if value is None:
                why = "joined" if j is None else "no_digit"
                unread[why] = unread.get(why, 0) + 1
            row.append(value)
        out.append(row)
    return out, unread


class PromptSimulator(SimulatorBase):
    """All at once from the prompt's logprobs (prompts/simulate_prompt.toml): see the module's notes."""

    name = "prompt"
    client: LLMClient

    def __init__(self, client: LLMClient, template: Template, windows_per_call: int = 10,
                 top_logprobs: int = 20, call_tokens: int | None = None) -> None:
        """`call_tokens`: a prompt's tokens at most (fewer windows a call)."""
        self.client, self.template = client, template
        self.windows_per_call, self.top_logprobs, self.call_tokens = windows_per_call, top_logprobs, call_tokens
        settings = f"{template.hash}|per_call={windows_per_call}|prompt_logprobs={top_logprobs}"
        if call_tokens:
            settings += f"|call_tokens={call_tokens}"
        self.version = f"{client.model_id}/{hashlib.sha256(settings.encode()).hexdigest()[:16]}"

    async def predict(self, explanation: str, windows: list[Window]) -> Predictions:
        groups = _groups(windows, self.windows_per_call, self.call_tokens,
                         lambda g: estimate_tokens(render_prompt(self.template, explanation, g)[0]) + 1)
        prompts = [render_prompt(self.template, explanation, g) for g in groups]
        replies = await asyncio.gather(*(self.client.complete(
            PromptRequest(self.client.provider.model, p, self.top_logprobs), purpose="simulate") for p, _ in prompts))
        values, unread = [], dict.fromkeys(UNREAD, 0)
        for (prompt, slots), reply in zip(prompts, replies):
            if not reply.logprobs or not reply.logprobs[0]:
                raise ReplyFailure("the server returned no prompt logprobs")
            read, missed = read_slots(prompt, slots, reply.logprobs[0], PROMPT_TOP)
            n = sum(len(s) for s in slots)
            if sum(missed.values()) > UNREAD_LIMIT * n:
                why = "; ".join(f"{c} {UNREAD[r]}" for r, c in missed.items())
                raise ReplyFailure(f"{sum(missed.values())} of {n} positions could not be read: {why}")
            got = [v for row in read for v in row if v is not None]
            fill = float(np.mean(got)) if got else 0.0  # unread: the call's mean, which adds no signal either way
            values += [np.asarray([fill if v is None else v for v in row], np.float64) for row in read]
            for r, c in missed.items():
                unread[r] += c
        # per UNREAD key, the positions that took the call's mean (numbers: summed over calls and rounds)
        return Predictions(values, {"simulator": "prompt", **{f"unread_{k}": v for k, v in unread.items()}})


def check_simulator(prompt: str) -> None:
    """A LabelError unless `prompt` names a simulator template (simulate, simulate_sparse, simulate_prompt) or a
    simulator plugin."""
    from ..plugins import registered

    if prompt in registered("simulator"):
        return
    t = load_template(prompt)
    if t.format not in ("simulate", "simulate_sparse", "simulate_prompt"):
        raise LabelError(f"simulator prompt {prompt!r} has format {t.format!r}; a simulator needs simulate, "
                         "simulate_sparse or simulate_prompt")


def make_llm_simulator(client: LLMClient, prompt: str, windows_per_call: int, top_logprobs: int, context=None,
                       call_tokens: int | None = None):
    """The simulator a prompt template's format calls for: `simulate` (dense JSON), `simulate_sparse`, or
    `simulate_prompt` (all at once, from the prompt's logprobs: a compat server's completions); or the
    simulator plugin named `prompt`, made with `context` (a PluginContext) and the client. `call_tokens`: a
    call that asks for logprobs holds at most this many prompt + reply tokens (LLMOptions.call_budget)."""
    from .. import plugins

    if prompt in plugins.registered("simulator"):
        return plugins.make("simulator", prompt, context, client)
    check_simulator(prompt)
    t = load_template(prompt)
    if t.format == "simulate":
        return JSONSimulator(client, t, windows_per_call, top_logprobs=top_logprobs, call_tokens=call_tokens)
    if t.format == "simulate_prompt":
        if not client.provider.has_prompt_logprobs:
            raise LabelError(f"simulator {prompt!r} reads the prompt's logprobs, which {client.model_id} does not "
                             "give: use a compat: server with echo + logprobs (llama-cpp-python's, vLLM)")
        return PromptSimulator(client, t, windows_per_call, call_tokens=call_tokens)
    return SparseSimulator(client, t, windows_per_call)
