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
"""

from __future__ import annotations

import asyncio
import bisect
import hashlib
import math
import re
from dataclasses import dataclass, field

import numpy as np

from ..explain.prompts import Template, load_template, render_scoring, show_token
from ..llm import ChatRequest, LLMClient
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
            raise ReplyFailure(f"window {i}: {len(sp)} numbers found in the reply for {len(pred)} values")
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


class _LLMSimulator:
    """A client, a template, windows per call; the version names the model and hashes the template with
    the settings."""

    name = ""
    max_tokens = 4000

    def __init__(self, client: LLMClient, template: Template, windows_per_call: int = 10,
                 max_tokens: int | None = None, top_logprobs: int = 0) -> None:
        self.client, self.template = client, template
        self.windows_per_call, self.max_tokens = windows_per_call, max_tokens or self.max_tokens
        self.top_logprobs = top_logprobs
        settings = f"{template.hash}|per_call={windows_per_call}|max_tokens={self.max_tokens}"
        if top_logprobs:
            settings += f"|top_logprobs={top_logprobs}"
        self.version = f"{client.model_id}/{hashlib.sha256(settings.encode()).hexdigest()[:16]}"

    async def _replies(self, explanation: str, windows: list[Window]) -> list[tuple[list[Window], object]]:
        groups = [windows[i:i + self.windows_per_call] for i in range(0, len(windows), self.windows_per_call)]
        reqs = [ChatRequest(model=self.client.provider.model, system=self.template.system,
                            messages=(("user", render_scoring(self.template, explanation, g)),),
                            max_tokens=self.max_tokens, top_logprobs=self.top_logprobs) for g in groups]
        replies = await asyncio.gather(*(self.client.complete(r, purpose="simulate") for r in reqs))
        return list(zip(groups, replies))


class JSONSimulator(_LLMSimulator):
    name = "json"

    async def predict(self, explanation: str, windows: list[Window]) -> Predictions:
        values, n_expected = [], 0
        for group, reply in await self._replies(explanation, windows):
            text = reply_text(reply)
            written = parse_simulation(text, [len(w.tokens) for w in group])
            tokens = reply.logprobs[0] if self.top_logprobs and reply.logprobs else None
            got = expected_values(text, tokens, written) if tokens else [(p, 0) for p in written]
            values += [np.asarray(p, np.float64) for p, _ in got]
            n_expected += sum(n for _, n in got)
        info = {"simulator": "json"}
        if self.top_logprobs:  # how many values are expected values (the rest: as written, see expected_values)
            info["from_logprobs"] = round(n_expected / max(1, sum(len(v) for v in values)), 4)
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


def make_llm_simulator(client: LLMClient, prompt: str, windows_per_call: int, top_logprobs: int):
    """The simulator a prompt template's format calls for: `simulate` (dense JSON) or `simulate_sparse`."""
    from ..score.base import check_simulator

    check_simulator(prompt)
    t = load_template(prompt)
    if t.format == "simulate":
        return JSONSimulator(client, t, windows_per_call, top_logprobs=top_logprobs)
    return SparseSimulator(client, t, windows_per_call)
