"""llm: the provider layer shared by LLM explainers and scorers (providers, limits, retries, cache, ledger)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from .client import BatchPlan, Deferred, LLMClient, RetryConfig
from ..errors import UsageError
from .journal import CallLog
from .limits import COMPAT_IN_FLIGHT, DEFAULT_IN_FLIGHT, LimitConfig, Limiter, RateLimiter
from .replies import ReplyFailure
from .providers import ChatRequest, ChatResponse, PromptRequest, ProviderError, Usage, make_provider

if TYPE_CHECKING:
    from ..store import Store


class LLMHooks(Protocol):
    """What replaces a client's journal and limiter (a Ray worker's: job/ray_executor.py)."""

    def log(self, store: Store) -> CallLog: ...

    def limiter(self, config: LimitConfig) -> Limiter: ...

MAX_CANDIDATES = 32  # labels drawn per feature (best-of-k): each is a full explainer reply
MAX_IN_FLIGHT = 1024  # requests at once to one provider (as `--concurrency`'s features at once)
# prompt + reply tokens of one logprobs call to a compat server: llama-cpp-python's holds ~4 x vocabulary x 4
# bytes a token for it (Gemma 3: 4 MiB a token; 2,048 tokens ~ 9 GB; eval/selfhost_memory.py)
COMPAT_LOGPROB_TOKENS = 2048


@dataclass(frozen=True)
class LLMOptions:
    """How an LLM explainer or scorer reaches its model and paces itself."""

    base_url: str | None = None
    api_key_env: str | None = None
    prompt: str = "explain_highlight"
    candidates: int = 1
    outputs: bool = False  # explain: show the explainer each feature's logit-lens tokens (capture/lens.py)
    requests_per_minute: float | None = None  # None: 50 until the provider advertises its limit
    input_tokens_per_minute: float | None = None
    output_tokens_per_minute: float | None = None
    max_in_flight: int | None = None  # None: 16 for hosted APIs, 1 for a compat (self-hosted) server
    attempts: int = 6
    timeout: float | None = None  # None: 60 s for hosted APIs, 600 s for a compat (self-hosted) server
    use_cache: bool = True
    logprobs: bool = True  # simulation: expected values from top_logprobs where the provider has them
    call_tokens: int | None = None  # a logprobs call's prompt + reply tokens at most (None: the default below)
    prices: dict = field(default_factory=dict)
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    hooks: LLMHooks | None = field(default=None, compare=False)  # a Ray worker's journal and limiter

    def __post_init__(self) -> None:
        """Every value checked here, once, for the CLI and job files alike (UsageError, one line)."""
        if not 1 <= self.candidates <= MAX_CANDIDATES:
            raise UsageError(f"--candidates must be from 1 to {MAX_CANDIDATES}, got {self.candidates}")
        for flag, v in (("--rpm", self.requests_per_minute), ("--itpm", self.input_tokens_per_minute),
                        ("--otpm", self.output_tokens_per_minute), ("--timeout", self.timeout)):
            if v is not None and not v > 0:  # also NaN
                raise UsageError(f"{flag} must be a positive number, got {v}")
        if self.max_in_flight is not None and not 1 <= self.max_in_flight <= MAX_IN_FLIGHT:
            raise UsageError(f"--max-in-flight must be from 1 to {MAX_IN_FLIGHT}, got {self.max_in_flight}")
        if self.call_tokens is not None and not 256 <= self.call_tokens <= 1_000_000:
            raise UsageError(f"--call-tokens must be from 256 to 1000000, got {self.call_tokens}")
        if self.attempts < 1:
            raise UsageError(f"attempts must be at least 1, got {self.attempts}")
        if self.base_url is not None and not self.base_url.startswith(("http://", "https://")):
            raise UsageError(f"--base-url must be an http:// or https:// URL, got {self.base_url!r}")

    def in_flight(self, spec: str = "") -> int:
        """Calls at once to `spec`'s server: as given, else DEFAULT_IN_FLIGHT for a hosted API and
        COMPAT_IN_FLIGHT for a compat server, which runs as many requests as it has slots (llama.cpp:
        --parallel, 1 by default; llama-cpp-python's server aborts the running request when another arrives)."""
        return self.max_in_flight or (COMPAT_IN_FLIGHT if spec.startswith("compat:") else DEFAULT_IN_FLIGHT)

    def call_budget(self, spec: str = "") -> int | None:
        """Prompt + reply tokens a simulation call that asks for logprobs may hold: as given, else
        COMPAT_LOGPROB_TOKENS on a compat server (whose memory grows with them), else no limit."""
        return self.call_tokens or (COMPAT_LOGPROB_TOKENS if spec.startswith("compat:") else None)

    def limits(self, spec: str = "") -> LimitConfig:
        """The pacing of calls to `spec`'s server (the one place a LimitConfig is made from options)."""
        return LimitConfig(self.requests_per_minute, self.input_tokens_per_minute, self.output_tokens_per_minute,
                           self.in_flight(spec))


def make_client(spec: str, store, o: LLMOptions) -> LLMClient:
    """A client for `anthropic:MODEL`, `openai:MODEL` or `compat:MODEL`, paced and priced by `o`."""
    provider = make_provider(spec, base_url=o.base_url, api_key_env=o.api_key_env, timeout=o.timeout)
    limits = o.limits(spec)
    return LLMClient(provider, store, run_id=o.run_id, use_cache=o.use_cache, prices=o.prices, limits=limits,
                     retry=RetryConfig(attempts=o.attempts), log=o.hooks.log(store) if o.hooks else None,
                     limiter=o.hooks.limiter(limits) if o.hooks else None)


__all__ = ["BatchPlan", "Deferred", "ChatRequest", "ChatResponse", "LLMClient", "LLMOptions", "LimitConfig", "PromptRequest", "ProviderError", "RateLimiter",
           "ReplyFailure", "RetryConfig", "Usage", "make_client", "make_provider"]
