"""One small protocol over the providers' SDKs: a chat request in, texts and token usage out.

Adapters: Anthropic (`AsyncAnthropic`, Messages), OpenAI (`AsyncOpenAI`, chat completions) and any
OpenAI-compatible server (vLLM, Ollama, llama.cpp server, OpenRouter: a base URL plus the name of the
environment variable holding its key). Every SDK is built with `max_retries=0`: retries belong to
`autointerp.llm.client` alone. SDK errors become one `ProviderError` that says whether a retry can help
and how long the server asked us to wait. Keys are read from the environment and kept only inside the
SDK client: never in a request record, a cache key, the store, a log or an export.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Generic, TypeVar, cast

from ..contracts import ProviderBase
from ..errors import LabelError, UsageError

if TYPE_CHECKING:
    import anthropic
    import openai
    from anthropic.types.message_create_params import MessageCreateParamsNonStreaming
    from anthropic.types.messages.batch_create_params import Request

RETRYABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504, 529})
KEY_VARIABLES = {"anthropic": "ANTHROPIC_API_KEY", "openai": "OPENAI_API_KEY"}


@dataclass(frozen=True)
class ChatRequest:
    """Everything that changes a reply (`shared_prefix` does not, and is left out of the key). `n`
    candidates: one call where the API allows it (OpenAI), else n calls."""

    model: str
    system: str
    messages: tuple[tuple[str, str], ...]  # (role, text), role user | assistant
    max_tokens: int = 400
    temperature: float | None = None  # None: the provider's default (current Claude models take no temperature)
    n: int = 1
    shared_prefix: int = 0  # leading messages shared by many requests (few-shot): cached where the API can
    top_logprobs: int = 0  # > 0: ask for each output token's most likely alternatives (OpenAI chat, vLLM)
    candidate: int = 0  # which of n candidates this one-candidate request is (a provider without native n)

    def key(self, provider: str) -> str:
        doc = [provider, self.model, self.system, self.messages, self.max_tokens, self.temperature, self.n]
        if self.top_logprobs:  # appended only when asked, so the keys of earlier requests stay valid
            doc.append(self.top_logprobs)
        if self.candidate:  # candidate 0 is the request itself; the others are distinct draws
            doc.append({"candidate": self.candidate})
        return hashlib.sha256(json.dumps(doc, ensure_ascii=False).encode()).hexdigest()

    def est_input(self) -> int:
        """Input tokens, roughly (~4 characters a token), for the rate limiter before the call."""
        return (len(self.system) + sum(len(t) for _, t in self.messages)) // 4 + 8


@dataclass(frozen=True)
class PromptRequest:
    """A completion that reads the prompt rather than writing after it: the server echoes the prompt with,
    at every token, the `top_logprobs` most likely tokens there (the legacy completions API's `echo` with
    `logprobs`: llama-cpp-python's server, vLLM). One token is generated (a server reads max_tokens 0 as no
    limit); the reply's text and tokens are the prompt's followed by it."""

    model: str
    prompt: str
    top_logprobs: int = 20
    n: int = 1  # always one: the fields LLMClient reads of any request
    max_tokens: int = 1

    def key(self, provider: str) -> str:
        doc = [provider, self.model, "echo", self.prompt, self.top_logprobs]
        return hashlib.sha256(json.dumps(doc, ensure_ascii=False).encode()).hexdigest()

    def est_input(self) -> int:
        return len(self.prompt) // 4 + 8


@dataclass(frozen=True)
class Usage:
    """Tokens of one call. input_tokens: uncached input only; cache reads and writes are apart."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0

    def __add__(self, o: Usage) -> Usage:
        return Usage(*(a + b for a, b in zip(asdict(self).values(), asdict(o).values())))


# One output token with its log probability's most likely alternatives: (token, ((alternative, logprob), ...)).
TokenLogprobs = tuple[str, tuple[tuple[str, float], ...]]
MIN_LOGPROB = math.log(1e-4)  # alternatives less likely than this are not kept
CERTAIN = math.log(0.9999)  # a token this likely is stored as [token] alone (most of a JSON reply's tokens)


@dataclass(frozen=True)
class ChatResponse:
    texts: tuple[str, ...]
    usage: Usage
    stop_reasons: tuple[str, ...] = ()
    limits: dict = field(default_factory=dict, compare=False)  # rate-limit headers, when the server sends them
    logprobs: tuple[tuple[TokenLogprobs, ...] | None, ...] = ()  # per text, when asked for and given

    def to_json(self) -> dict:
        d: dict[str, object] = {"texts": list(self.texts), "usage": asdict(self.usage),
                                "stop_reasons": list(self.stop_reasons)}
        if any(lp is not None for lp in self.logprobs):  # compact: a certain token is [token]
            d["logprobs"] = [None if lp is None else
                             [[t] if len(alts) == 1 and alts[0][0] == t and alts[0][1] >= CERTAIN
                              else [t, [list(a) for a in alts]] for t, alts in lp] for lp in self.logprobs]
        return d

    @classmethod
    def merge(cls, parts: list[ChatResponse]) -> ChatResponse:
        """n one-candidate replies -> one reply with n texts and the summed usage."""
        return cls(tuple(t for p in parts for t in p.texts), sum((p.usage for p in parts), Usage()),
                   tuple(r for p in parts for r in p.stop_reasons), parts[-1].limits if parts else {},
                   tuple(lp for p in parts for lp in (p.logprobs or (None,) * len(p.texts))))

    @classmethod
    def from_json(cls, d: dict) -> ChatResponse:
        lps = tuple(None if lp is None else
                    tuple((e[0], tuple((a, float(x)) for a, x in e[1]) if len(e) > 1 else ((e[0], 0.0),)) for e in lp)
                    for lp in d.get("logprobs", ()))
        return cls(tuple(d["texts"]), Usage(**d["usage"]), tuple(d.get("stop_reasons", ())), logprobs=lps)


class ProviderError(Exception):
    """A call that did not return a usable reply. `retryable`: a later attempt may succeed.
    `unreachable`: no connection could be made (refused, reset, DNS): the server is likely down."""

    def __init__(self, message: str, *, status: int | None = None, retryable: bool = False,
                 retry_after: float | None = None, unreachable: bool = False) -> None:
        super().__init__(message)
        self.status, self.retryable, self.retry_after = status, retryable, retry_after
        self.unreachable = unreachable


def _retry_after(headers) -> float | None:
    """Seconds from `retry-after-ms` or `retry-after` (seconds; an HTTP date is not worth honouring)."""
    for name, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
        v = headers.get(name) if headers is not None else None
        if v is not None:
            try:
                return max(0.0, float(v) * scale)
            except ValueError:
                continue
    return None


def _limits(headers) -> dict:
    return {k.lower(): v for k, v in headers.items() if "ratelimit" in k.lower()} if headers is not None else {}


def _classify(err: Exception, sdk) -> ProviderError:
    """Any SDK exception -> ProviderError (the message never includes request headers, so no key)."""
    if isinstance(err, sdk.APIStatusError):
        status = err.status_code
        return ProviderError(f"HTTP {status}: {str(err)[:300]}", status=status, retryable=status in RETRYABLE_STATUS,
                             retry_after=_retry_after(err.response.headers))
    if isinstance(err, sdk.APITimeoutError):
        # no answer to connect: a host that is down (httpx's ConnectTimeout; the SDKs bundle httpx or httpx2)
        if type(err.__cause__).__name__ == "ConnectTimeout":
            return ProviderError("connection timed out", retryable=True, unreachable=True)
        return ProviderError("timed out", retryable=True)
    if isinstance(err, sdk.APIConnectionError):
        return ProviderError(f"connection failed: {err}", retryable=True, unreachable=True)
    if isinstance(err, (sdk.APIError, ValueError)):  # ValueError: a body that is not JSON (JSONDecodeError)
        # a 200 whose body is not the API's JSON (truncated, an HTML error page from a proxy): transient
        return ProviderError(f"malformed response: {type(err).__name__}: {str(err)[:200]}", retryable=True)
    raise err  # anything else is a bug here, not the server's fault


_SDK = TypeVar("_SDK", "anthropic.AsyncAnthropic", "openai.AsyncOpenAI")


class _SDKClient(ProviderBase, Generic[_SDK]):
    """The SDK client is made on first use, inside the running event loop (its connection pool belongs
    to that loop), and closed by `aclose()` at the end of a run; a later run makes a new one."""

    _make: Callable[[], _SDK]
    _client: _SDK | None = None

    @property
    def client(self) -> _SDK:
        if self._client is None:
            self._client = self._make()
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None


def _anthropic_params(req: ChatRequest) -> MessageCreateParamsNonStreaming:
    """Messages parameters. With a shared prefix, the system prompt and the prefix's last message carry
    cache_control, so the provider caches them (reads bill at 0.1x; it applies only above the model's
    minimum cacheable length, and is a no-op below it)."""
    msgs: list[dict] = [{"role": r, "content": t} for r, t in req.messages]
    system: str | list = req.system
    if req.shared_prefix:
        system = [{"type": "text", "text": req.system, "cache_control": {"type": "ephemeral"}}]
        last = msgs[req.shared_prefix - 1]
        last["content"] = [{"type": "text", "text": last["content"], "cache_control": {"type": "ephemeral"}}]
    # the SDK's TypedDict: the messages' roles are ChatRequest's (user | assistant), their content text blocks
    return cast("MessageCreateParamsNonStreaming",
                {"model": req.model, "max_tokens": req.max_tokens, "system": system, "messages": msgs})


def _anthropic_reply(msg) -> ChatResponse:
    """One Messages reply (a direct call's or a batch item's) -> ChatResponse."""
    if getattr(msg, "content", None) is None or getattr(msg, "usage", None) is None:
        raise ProviderError("malformed response: not a Messages reply", retryable=True)
    u = msg.usage
    return ChatResponse(("".join(getattr(b, "text", "") for b in msg.content if b.type == "text"),),
                        Usage(u.input_tokens or 0, u.output_tokens or 0, getattr(u, "cache_read_input_tokens", 0) or 0,
                              getattr(u, "cache_creation_input_tokens", 0) or 0),
                        (str(msg.stop_reason),))


class AnthropicProvider(_SDKClient["anthropic.AsyncAnthropic"]):
    """Claude through the Messages API. No temperature is sent (current models reject it); Messages
    gives no logprobs and has no `n`: the client sends one request per candidate."""

    has_logprobs = False
    has_prompt_logprobs = False
    native_n = False
    supports_batch = True  # the Message Batches API

    def __init__(self, model: str, *, api_key: str | None, base_url: str | None = None, timeout: float = 60.0):
        import anthropic

        self.sdk, self.name, self.model = anthropic, "anthropic", model
        self._make = lambda: anthropic.AsyncAnthropic(api_key=api_key or "unset", base_url=base_url, max_retries=0,
                                                      timeout=timeout)
        self._client = None

    async def complete(self, req: ChatRequest | PromptRequest) -> ChatResponse:
        if isinstance(req, PromptRequest):
            raise ProviderError("the Messages API gives no prompt logprobs (simulate_prompt needs a compat: "
                                "server with echo + logprobs)")
        if req.n != 1:
            raise ValueError("Messages has no n: LLMClient sends one request per candidate")
        try:
            raw = await self.client.messages.with_raw_response.create(**_anthropic_params(req))
            msg = await raw.parse()
        except Exception as err:  # noqa: BLE001 - SDK errors are classified, others re-raised
            raise _classify(err, self.sdk) from None
        reply = _anthropic_reply(msg)
        return ChatResponse(reply.texts, reply.usage, reply.stop_reasons, _limits(raw.headers))

    # -- Message Batches ---------------------------------------------------------------------------

    async def submit_batch(self, items: list[tuple[str, ChatRequest]]) -> str:
        """Submit (custom_id, request) pairs, each one candidate, as one Message Batch; returns its id."""
        if any(r.n != 1 for _, r in items):
            raise ValueError("Messages has no n: LLMClient sends one request per candidate")
        reqs: list[Request] = [{"custom_id": cid, "params": _anthropic_params(r)} for cid, r in items]
        try:
            return (await self.client.messages.batches.create(requests=reqs)).id
        except Exception as err:  # noqa: BLE001 - SDK errors are classified, others re-raised
            raise _classify(err, self.sdk) from None

    async def batch_done(self, batch_id: str) -> bool:
        try:
            return (await self.client.messages.batches.retrieve(batch_id)).processing_status == "ended"
        except Exception as err:  # noqa: BLE001
            raise _classify(err, self.sdk) from None

    async def batch_results(self, batch_id: str) -> dict[str, ChatResponse | ProviderError]:
        """custom_id -> reply, or the error the batch recorded for it."""
        out: dict[str, ChatResponse | ProviderError] = {}
        try:
            async for entry in await self.client.messages.batches.results(batch_id):
                res = entry.result
                one: ChatResponse | ProviderError
                if res.type == "succeeded":
                    one = _anthropic_reply(res.message)
                else:
                    msg = getattr(getattr(res, "error", None), "error", None)
                    one = ProviderError(f"batch item {res.type}: {getattr(msg, 'message', '') or res.type}",
                                        retryable=res.type in ("expired", "canceled"))
                out[entry.custom_id] = one
        except Exception as err:  # noqa: BLE001
            raise _classify(err, self.sdk) from None
        return out


class OpenAIProvider(_SDKClient["openai.AsyncOpenAI"]):
    """OpenAI chat completions, or any server that speaks them (`base_url`)."""

    has_logprobs = True  # `logprobs` / `top_logprobs` (not on reasoning models: those answer 400)
    native_n = True  # one request gives n choices
    supports_batch = True  # the Batch API (/v1/batches)

    def __init__(self, model: str, *, api_key: str | None, base_url: str | None = None, timeout: float = 60.0,
                 name: str = "openai", self_hosted: bool = False):
        import openai

        self.sdk, self.name, self.model = openai, name, model
        # OpenAI's own API takes `max_completion_tokens` (and refuses `max_tokens` on reasoning models);
        # self-hosted servers (llama.cpp, vLLM, Ollama) know only `max_tokens`, and one that ignores the
        # other generates to its context limit
        self.token_limit = "max_tokens" if self_hosted else "max_completion_tokens"
        # the legacy completions API's echo + logprobs: served by llama-cpp-python and vLLM (not llama.cpp's
        # own llama-server), long gone from OpenAI's
        self.has_prompt_logprobs = self_hosted
        self._make = lambda: openai.AsyncOpenAI(api_key=api_key or "unset", base_url=base_url, max_retries=0,
                                                timeout=timeout)
        self._client = None

    async def complete(self, req: ChatRequest | PromptRequest) -> ChatResponse:
        if isinstance(req, PromptRequest):
            return await self._prompt_logprobs(req)
        try:
            raw = await self.client.chat.completions.with_raw_response.create(**self._body(req))
            out = raw.parse()
        except Exception as err:  # noqa: BLE001 - SDK errors are classified, others re-raised
            raise _classify(err, self.sdk) from None
        if not getattr(out, "choices", None):
            raise ProviderError("malformed response: no choices", retryable=True)
        return _chat_response(out.model_dump(), _limits(raw.headers))

    async def _prompt_logprobs(self, req: PromptRequest) -> ChatResponse:
        if not self.has_prompt_logprobs:
            raise ProviderError(f"{self.name} gives no prompt logprobs (simulate_prompt needs a compat: server "
                                "with echo + logprobs: llama-cpp-python's, vLLM)")
        try:
            raw = await self.client.completions.with_raw_response.create(
                model=req.model, prompt=req.prompt, max_tokens=req.max_tokens, echo=True, logprobs=req.top_logprobs,
                temperature=0)
            out = raw.parse()
        except Exception as err:  # noqa: BLE001 - SDK errors are classified, others re-raised
            e = _classify(err, self.sdk)
            if e.status == 500 and "logits_all" in str(e):  # llama-cpp-python loaded without logits_all: final
                raise ProviderError(f"{NO_PROMPT_LOGPROBS} ({str(e)[:120]})", status=500) from None
            raise e from None
        return _echo_response(out.model_dump(), _limits(raw.headers), req.prompt)

    def _body(self, req: ChatRequest) -> dict:
        body = {"model": req.model, self.token_limit: req.max_tokens,
                "messages": [{"role": "system", "content": req.system}]
                + [{"role": r, "content": t} for r, t in req.messages]}
        if req.temperature is not None:
            body["temperature"] = req.temperature
        if req.n > 1:
            body["n"] = req.n
        if req.top_logprobs:
            body["logprobs"] = True
            body["top_logprobs"] = req.top_logprobs
        return body

    # -- Batch API (a JSONL file of requests, then a batch over it) --------------------------------

    async def submit_batch(self, items: list[tuple[str, ChatRequest]]) -> str:
        if any(isinstance(r, PromptRequest) for _, r in items):
            raise ProviderError("prompt logprobs (simulate_prompt) are not sent through a batch API")
        lines = [json.dumps({"custom_id": cid, "method": "POST", "url": "/v1/chat/completions",
                             "body": self._body(r)}, ensure_ascii=False) for cid, r in items]
        try:
            f = await self.client.files.create(file=("requests.jsonl", ("\n".join(lines) + "\n").encode()),
                                               purpose="batch")
            return (await self.client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                                                     completion_window="24h")).id
        except Exception as err:  # noqa: BLE001 - SDK errors are classified, others re-raised
            raise _classify(err, self.sdk) from None

    async def batch_done(self, batch_id: str) -> bool:
        try:
            status = (await self.client.batches.retrieve(batch_id)).status
        except Exception as err:  # noqa: BLE001
            raise _classify(err, self.sdk) from None
        return status in ("completed", "failed", "expired", "cancelled")

    async def batch_results(self, batch_id: str) -> dict[str, ChatResponse | ProviderError]:
        """custom_id -> reply or error; requests a failed or expired batch never ran are simply absent."""
        out: dict[str, ChatResponse | ProviderError] = {}
        try:
            b = await self.client.batches.retrieve(batch_id)
            for file_id in (b.output_file_id, b.error_file_id):
                if not file_id:
                    continue
                text = (await self.client.files.content(file_id)).text
                for line in text.splitlines():
                    if not line.strip():
                        continue
                    doc = json.loads(line)
                    resp, err = doc.get("response") or {}, doc.get("error")
                    if err or resp.get("status_code") != 200:
                        msg = (err or {}).get("message") or f"HTTP {resp.get('status_code')}"
                        out[doc["custom_id"]] = ProviderError(f"batch item failed: {msg}", status=resp.get("status_code"))
                    else:
                        out[doc["custom_id"]] = _chat_response(resp["body"], {})
        except ProviderError:
            raise
        except Exception as err:  # noqa: BLE001
            raise _classify(err, self.sdk) from None
        return out


def _chat_response(body: dict, limits: dict) -> ChatResponse:
    """A chat completion (as JSON) -> ChatResponse; a body without choices is malformed."""
    choices = body.get("choices") or []
    if not choices:
        raise ProviderError("malformed response: no choices", retryable=True)
    u = body.get("usage") or {}
    cached = (u.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    # OpenAI counts cached tokens inside prompt_tokens; Usage counts them apart, as Anthropic does
    usage = Usage((u.get("prompt_tokens") or 0) - cached, u.get("completion_tokens") or 0, cached, 0)
    return ChatResponse(tuple((c.get("message") or {}).get("content") or "" for c in choices), usage,
                        tuple(str(c.get("finish_reason")) for c in choices), limits,
                        tuple(_token_logprobs(c.get("logprobs")) for c in choices))


NO_PROMPT_LOGPROBS = ("the server returned no prompt logprobs for echo + logprobs (llama-cpp-python: start it "
                      "with --logits_all True)")


def _echo_response(body: dict, limits: dict, prompt: str) -> ChatResponse:
    """A legacy completion with `echo` and `logprobs` -> ChatResponse: the text, and per token its most
    likely alternatives there (the first token has none: nothing predicts it). A server that echoed no
    logprobs (llama-cpp-python loaded without logits_all), or only the generated token's (a server that
    ignores echo, as llama.cpp's own llama-server does), is a typed, final error."""
    choices = body.get("choices") or []
    if not choices:
        raise ProviderError("malformed response: no choices", retryable=True)
    c = choices[0]
    lp = c.get("logprobs") or {}
    tokens, tops = lp.get("tokens"), lp.get("top_logprobs")
    if not tokens or tops is None or len(tops) != len(tokens):
        raise ProviderError(NO_PROMPT_LOGPROBS)
    if sum(len(t) for t in tokens) < len(prompt) // 2:
        raise ProviderError(f"the server ignored echo: logprobs for {len(tokens)} tokens of a {len(prompt)}-character "
                            "prompt (llama.cpp's own llama-server does not echo; use llama-cpp-python's server "
                            "or vLLM)")
    u = body.get("usage") or {}
    out = tuple((t, tuple((a, float(x)) for a, x in sorted((top or {}).items(), key=lambda kv: -kv[1])
                          if x is not None and float(x) >= MIN_LOGPROB))
                for t, top in zip(tokens, tops))
    return ChatResponse((c.get("text") or "",), Usage(u.get("prompt_tokens") or 0, u.get("completion_tokens") or 0),
                        (str(c.get("finish_reason")),), limits, (out,))


def _token_logprobs(lp: dict | None) -> tuple[TokenLogprobs, ...] | None:
    """A choice's `logprobs.content` -> ((token, ((alternative, logprob), ...)), ...); None when absent.
    Alternatives below 1e-4 are dropped (they move no expected value); a token given without
    alternatives is its own only alternative."""
    content = (lp or {}).get("content")
    if not content:
        return None
    out = []
    for t in content:
        tok = t.get("token", "")
        alts = tuple((a.get("token", ""), float(a.get("logprob", 0.0))) for a in t.get("top_logprobs") or ()
                     if float(a.get("logprob", 0.0)) >= MIN_LOGPROB)
        out.append((tok, alts or ((tok, float(t.get("logprob", 0.0))),)))
    return tuple(out)


HOSTED_TIMEOUT, LOCAL_TIMEOUT = 60.0, 600.0  # seconds a call may take: a local server generates slowly


def make_provider(spec: str, *, base_url: str | None = None, api_key_env: str | None = None,
                  timeout: float | None = None):
    """`anthropic:MODEL`, `openai:MODEL`, or `compat:MODEL` with `base_url` (an OpenAI-compatible server).

    The key is read from `api_key_env` or the provider's usual variable; a local server may need none.
    `timeout` (seconds a call may take before it is retried): default 60 for hosted APIs, 600 for a
    compat server, which generates on local hardware.
    """
    from .. import plugins

    kind, _, model = spec.partition(":")
    if model and kind not in ("anthropic", "openai", "compat") and kind in plugins.registered("provider"):
        return plugins.make("provider", kind, model, base_url=base_url, api_key_env=api_key_env, timeout=timeout)
    if not model or kind not in ("anthropic", "openai", "compat"):
        raise UsageError(f"bad model {spec!r}: use anthropic:MODEL, openai:MODEL or compat:MODEL with --base-url"
                         + "".join(f", or {p}:MODEL (plugin)" for p in plugins.registered("provider")))
    if kind == "compat" and not base_url:
        raise UsageError(f"{spec}: an OpenAI-compatible server needs --base-url")
    var = api_key_env or KEY_VARIABLES.get(kind)
    key = os.environ.get(var) if var else None
    if kind in KEY_VARIABLES and not key and not base_url:
        raise LabelError(f"{spec} needs an API key in ${var}")
    if kind == "anthropic":
        return AnthropicProvider(model, api_key=key, base_url=base_url, timeout=timeout or HOSTED_TIMEOUT)
    name = "openai" if kind == "openai" and not base_url else f"compat@{base_url}"
    return OpenAIProvider(model, api_key=key, base_url=base_url, name=name, self_hosted=kind == "compat",
                          timeout=timeout or (LOCAL_TIMEOUT if kind == "compat" else HOSTED_TIMEOUT))
