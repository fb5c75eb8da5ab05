"""Rate-limit discipline: requests, input tokens and output tokens per minute, a bounded and adaptive
number of calls in flight, and pauses the server asks for (429 retry-after, rate-limit headers).

The buckets refill continuously (the providers meter the same way) and start nearly empty, so a run
never opens with a burst the server would refuse. A limit not given explicitly is learnt: every reply's
advertised limits (`anthropic-ratelimit-{requests,input-tokens,output-tokens,tokens}-limit`,
`x-ratelimit-limit-{requests,tokens}`) set that bucket to the provider's figure, so a run on a high tier
is not held at the default 50 requests a minute, and never paced above what the provider allows. An
explicit limit (`--rpm`, `[limits] rpm`) is kept whatever the headers say. Waiters queue on a FIFO lock: only the head of the
queue sleeps, for exactly as long as its amount needs, so 10,000 waiting requests cost no polling.
(asyncio-throttle, which the design first named, polls every 10 ms per waiter and has no notion of
tokens: see docs/explanation/llm-provider.md.)
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Protocol


class TokenBucket:
    """`per_minute` units a minute, refilled continuously; holds at most `burst_seconds` of refill."""

    def __init__(self, per_minute: float, burst_seconds: float = 1.0) -> None:
        if per_minute <= 0:
            raise ValueError("a rate limit must be positive")
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate * burst_seconds)
        self.level = min(1.0, self.capacity)
        self.t = time.monotonic()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self.t) * self.rate)
        self.t = now

    async def acquire(self, amount: float) -> None:
        amount = min(float(amount), self.capacity)  # a request bigger than the bucket waits for a full one
        async with self._lock:
            while True:
                self._refill()
                if self.level >= amount:
                    self.level -= amount
                    return
                await asyncio.sleep((amount - self.level) / self.rate)

    def set_rate(self, per_minute: float, burst_seconds: float = 1.0) -> None:
        """Meter at a new rate from now on (what was refilled so far is kept, up to the new capacity)."""
        self._refill()
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate * burst_seconds)
        self.level = min(self.level, self.capacity)

    def refund(self, amount: float) -> None:
        """Give back what was reserved but not used (output tokens reserved at max_tokens)."""
        self._refill()
        self.level = min(self.capacity, self.level + max(0.0, amount))


class AdaptiveLimit:
    """At most `limit` calls in flight. The limit halves on a 429 and grows back by one per `limit`
    successes (additive increase, multiplicative decrease), never above `maximum` nor below 1."""

    def __init__(self, maximum: int) -> None:
        self.maximum = self.limit = float(maximum)
        self.in_flight = 0
        self._cond = asyncio.Condition()

    async def __aenter__(self) -> None:
        async with self._cond:
            await self._cond.wait_for(lambda: self.in_flight < int(self.limit))
            self.in_flight += 1

    async def __aexit__(self, *exc) -> None:
        async with self._cond:
            self.in_flight -= 1
            # wake as many waiters as there are free slots (more than one when the limit has grown),
            # not all of them: with hundreds waiting, notify_all costs O(waiters) per call
            self._cond.notify(max(1, int(self.limit) - self.in_flight))

    def success(self) -> None:
        self.limit = min(self.maximum, self.limit + 1.0 / self.limit)

    def throttled(self) -> None:
        self.limit = max(1.0, self.limit / 2.0)


# The rate-limit defaults, all here: requests a minute until the provider advertises its limit; calls in
# flight to a hosted API, and to a compat (self-hosted) server, which runs as many as it has slots.
DEFAULT_RPM = 50.0
DEFAULT_IN_FLIGHT = 16
COMPAT_IN_FLIGHT = 1

# advertised limit header -> the bucket it sets (OpenAI's "tokens" counts input and output: it sets the
# input bucket when no input-token limit of its own is advertised)
ADVERTISED = {"anthropic-ratelimit-requests-limit": "requests",
              "anthropic-ratelimit-input-tokens-limit": "input",
              "anthropic-ratelimit-output-tokens-limit": "output",
              "anthropic-ratelimit-tokens-limit": "input",
              "x-ratelimit-limit-requests": "requests",
              "x-ratelimit-limit-tokens": "input"}


@dataclass(frozen=True)
class LimitConfig:
    """Requests and tokens per minute; None: not given (requests: DEFAULT_RPM until the provider says;
    tokens: no bucket until the provider says)."""

    requests_per_minute: float | None = None
    input_tokens_per_minute: float | None = None
    output_tokens_per_minute: float | None = None
    max_in_flight: int = DEFAULT_IN_FLIGHT
    max_pause: float = 60.0  # the longest pause a header or retry-after can impose at once


def _reset_seconds(value: str) -> float | None:
    """A reset header: OpenAI's durations ("1s", "6m0s", "20ms") or Anthropic's RFC 3339 times."""
    v = value.strip()
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", v)
    if parts and "".join(a + b for a, b in parts) == v:
        scale = {"ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
        return sum(float(a) * scale[b] for a, b in parts)
    try:
        t = datetime.fromisoformat(v.replace("Z", "+00:00"))
    except ValueError:
        return None
    return max(0.0, (t - datetime.now(timezone.utc)).total_seconds())


class Limiter(Protocol):
    """What LLMClient asks of its limiter: a RateLimiter, or a Ray worker's share of the coordinator's
    (job/ray_executor.py)."""

    slots: AdaptiveLimit

    async def acquire(self, input_tokens: int, output_tokens: int) -> None: ...

    def throttled(self, retry_after: float | None) -> None: ...

    def done(self, reserved_output: int, used_output: int, headers: dict) -> None: ...


class RateLimiter:
    """Everything a call waits for before it is sent, and what it reports when it returns."""

    def __init__(self, config: LimitConfig) -> None:
        self.config = config
        self.requests = TokenBucket(config.requests_per_minute or DEFAULT_RPM)
        self.input = TokenBucket(config.input_tokens_per_minute) if config.input_tokens_per_minute else None
        self.output = TokenBucket(config.output_tokens_per_minute) if config.output_tokens_per_minute else None
        self.slots = AdaptiveLimit(config.max_in_flight)
        self.paused_until = 0.0
        self.throttles = 0
        self.advertised: dict[str, float] = {}  # bucket -> the per-minute limit the provider last advertised

    async def acquire(self, input_tokens: int, output_tokens: int) -> None:
        while (wait := self.paused_until - time.monotonic()) > 0:
            await asyncio.sleep(wait)
        await self.requests.acquire(1)
        if self.input:
            await self.input.acquire(input_tokens)
        if self.output:
            await self.output.acquire(output_tokens)

    def pause(self, seconds: float) -> None:
        self.paused_until = max(self.paused_until, time.monotonic() + min(seconds, self.config.max_pause))

    def throttled(self, retry_after: float | None) -> None:
        """A 429: fewer calls in flight, and everyone waits what the server asked."""
        self.throttles += 1
        self.slots.throttled()
        if retry_after:
            self.pause(retry_after)

    def done(self, reserved_output: int, used_output: int, headers: dict) -> None:
        self.slots.success()
        if self.output:
            self.output.refund(reserved_output - used_output)
        self.learn(headers)
        for name, value in headers.items():  # a bucket the server says is empty: wait for its reset
            if "remaining" in name and value.strip() == "0":
                reset = next((headers[k] for k in headers if "reset" in k and _same_limit(k, name)), None)
                seconds = _reset_seconds(reset) if reset else None
                if seconds:
                    self.pause(seconds)

    def learn(self, headers: dict) -> None:
        """Set each bucket not given explicitly to the limit the provider advertises in `headers`."""
        got: dict[str, float] = {}
        for name, bucket in ADVERTISED.items():
            v = headers.get(name)
            try:
                limit = float(v) if v is not None else 0.0
            except ValueError:
                continue
            if limit > 0 and bucket not in got:  # ADVERTISED lists a bucket's most specific header first
                got[bucket] = limit
        explicit = {"requests": self.config.requests_per_minute, "input": self.config.input_tokens_per_minute,
                    "output": self.config.output_tokens_per_minute}
        for bucket, limit in got.items():
            if explicit[bucket] is not None or self.advertised.get(bucket) == limit:
                continue
            self.advertised[bucket] = limit
            current = getattr(self, bucket)
            if current is None:
                setattr(self, bucket, TokenBucket(limit))
            else:
                current.set_rate(limit)

    def rates(self) -> dict[str, float | None]:
        """Each bucket's current limit per minute (None: no bucket)."""
        return {k: None if b is None else round(b.rate * 60.0, 3)
                for k, b in (("requests", self.requests), ("input", self.input), ("output", self.output))}


def _limit_kind(header: str) -> str:
    for kind in ("input-tokens", "output-tokens", "requests", "tokens"):
        if kind in header:
            return kind
    return header


def _same_limit(reset_header: str, remaining_header: str) -> bool:
    """anthropic-ratelimit-requests-reset pairs with ...-requests-remaining, x-ratelimit-reset-tokens with
    x-ratelimit-remaining-tokens."""
    return _limit_kind(reset_header) == _limit_kind(remaining_header)

