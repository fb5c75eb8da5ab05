"""The one owner of LLM calls: response cache, rate limits, retries and the cost ledger.

A call first looks in the store's response cache (keyed by a hash of provider, model, messages and
sampling parameters): a hit costs nothing and is recorded as such. Otherwise it waits for the rate
limiter, is sent, and is retried with tenacity on what a retry can fix (408/409/429/5xx/529,
connection errors, timeouts, malformed bodies), with jittered exponential backoff or the server's
Retry-After (capped). 400/401/403/404 are never retried. When the budget of attempts is spent the
call raises ProviderError: the caller turns it into that feature's typed failure and the run goes on.
A reply is journalled the moment it arrives (autointerp.llm.journal), so a crash never pays for it
twice; the journal is folded into the store's cache and ledger as the pipeline commits.
"""

from __future__ import annotations

import asyncio
import time
from contextvars import ContextVar, Token
from dataclasses import dataclass, replace

from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from ..store import Store
from .journal import CallLog
from .limits import LimitConfig, Limiter, RateLimiter
from .prices import price_of
from .providers import ChatRequest, ChatResponse, PromptRequest, ProviderError, Usage

BATCH_DISCOUNT = 0.5  # both providers' batch APIs bill half the list price
# The server is down when DOWN_AFTER attempts in a row could not connect, the first and the last at least
# DOWN_FOR seconds apart (a shorter blip trips nothing). While it is down every attempt is refused before
# it is sent (a retry too: a local server's queued calls would each spend their retries), but one call
# PROBE_EVERY seconds after the last failure, and every PROBE_EVERY after, goes through to see whether
# it is back.
DOWN_AFTER, DOWN_FOR, PROBE_EVERY = 6, 10.0, 30.0

class Deferred(Exception):
    """A call not sent: a batch is being planned (`BatchPlan`), and the request is in the plan. Not a failure:
    the work that needed the reply stops here, and a later pass, with the batch's replies in the cache, goes on."""


class BatchPlan:
    """Planning a batch: while the block runs (in the running task and the tasks it starts), every client's
    call that misses the cache is noted in `requests` as (client, request, purpose) and raises Deferred
    instead of being sent; a cache hit is answered as usual, and is not a call (no ledger row). The
    pipeline plans a run's batches this way, stage by stage (pipeline/batch.py)."""

    def __init__(self) -> None:
        self.requests: list[tuple[LLMClient, ChatRequest | PromptRequest, str]] = []
        self._token: Token[BatchPlan | None] | None = None

    def __enter__(self) -> BatchPlan:
        self._token = _PLAN.set(self)
        return self

    def __exit__(self, *exc) -> None:
        assert self._token is not None  # set by __enter__
        _PLAN.reset(self._token)


_PLAN: ContextVar[BatchPlan | None] = ContextVar("autointerp_batch_plan", default=None)


@dataclass(frozen=True)
class RetryConfig:
    attempts: int = 6  # in all, the first included
    initial: float = 1.0  # seconds before the first retry; doubles, with jitter
    max_wait: float = 60.0  # longest single wait, also the cap on a server's Retry-After


class _NotSent(ProviderError):
    """A call refused before it was sent, because the server is down: final, and not a call."""

    def __init__(self, message: str) -> None:
        super().__init__(message, unreachable=True)


def _retryable(err: BaseException) -> bool:
    return isinstance(err, ProviderError) and err.retryable


class LLMClient:
    def __init__(self, provider, store: Store, *, run_id: str, limits: LimitConfig | None = None,
                 retry: RetryConfig | None = None, use_cache: bool = True, prices: dict | None = None,
                 log: CallLog | None = None, limiter: Limiter | None = None) -> None:
        """`log` and `limiter` replace the store's journal and this process's limiter (a Ray worker
        journals to its result shard and shares one limiter with every worker)."""
        self.provider, self.store, self.run_id = provider, store, run_id
        self.log = log if log is not None else CallLog(store)
        self.limiter: Limiter = limiter if limiter is not None else RateLimiter(limits or LimitConfig())
        self.retry = retry or RetryConfig()
        self.use_cache = use_cache
        self.prices = prices
        self._backoff = wait_exponential_jitter(multiplier=self.retry.initial, max=self.retry.max_wait)
        self.spent_usd, self.spent_tokens = 0.0, 0  # by this client, in this process: what budgets check
        self._failed_connects, self._first_fail, self._last_fail = 0, 0.0, 0.0  # attempts in a row that could not connect
        self._probe_at = 0.0

    @property
    def model_id(self) -> str:
        """The model as a label's provenance names it: anthropic:MODEL, openai:MODEL or compat:MODEL."""
        return f"{self.provider.name.split('@')[0]}:{self.provider.model}"

    def _wait(self, state) -> float:
        err = state.outcome.exception() if state.outcome else None
        after = err.retry_after if isinstance(err, ProviderError) else None
        return min(after, self.retry.max_wait) if after is not None else self._backoff(state)

    async def complete(self, req: ChatRequest | PromptRequest, purpose: str = "explain") -> ChatResponse:
        """One reply (n texts for a request of n candidates). A provider without a native `n` (Anthropic)
        gets n requests, each one candidate: each is cached, rate-limited, retried, journalled and priced
        on its own, so a retry resends only the candidates that failed and a rerun pays for none twice.
        A PromptRequest (the prompt's own logprobs) goes the same way: cached, paced, retried, priced."""
        if req.n > 1 and not self.provider.native_n:
            assert isinstance(req, ChatRequest)  # a PromptRequest is always one candidate
            parts = await asyncio.gather(*(self.complete(replace(req, n=1, candidate=i), purpose)
                                           for i in range(req.n)), return_exceptions=True)
            replies: list[ChatResponse] = []
            for i, p in enumerate(parts):
                if isinstance(p, ProviderError):  # the others are cached: a rerun asks for this one alone
                    raise ProviderError(f"candidate {i + 1} of {req.n}: {p}", status=p.status,
                                        retryable=p.retryable) from None
                if isinstance(p, BaseException):
                    raise p
                replies.append(p)
            return ChatResponse.merge(replies)
        key = req.key(self.provider.name)
        plan = _PLAN.get()
        if self.use_cache and (hit := self.log.get(key)) is not None:
            if plan is None:  # a batch plan's look at the cache is not a call
                self._record(key, purpose, cached=True, status="ok", usage=Usage(), attempts=0, latency=0.0)
            return ChatResponse.from_json(hit)
        if plan is not None:
            plan.requests.append((self, req, purpose))
            raise Deferred(f"{purpose} request deferred to a batch")
        est_input = req.est_input()
        attempts, t0 = 0, time.perf_counter()
        probe = self._refuse_if_down()  # before the rate limiter's queue, so a refusal costs no wait
        try:
            async for attempt in AsyncRetrying(stop=stop_after_attempt(self.retry.attempts), wait=self._wait,
                                               retry=retry_if_exception(_retryable), reraise=True):
                with attempt:
                    attempts += 1
                    resp = await self._send(req, est_input, check=not probe)
        except _NotSent as err:
            if attempts > 1:  # sent, then refused a retry as the server went down: a failed call
                self._record(key, purpose, cached=False, status="error", usage=Usage(), attempts=attempts - 1,
                             latency=time.perf_counter() - t0, error=str(err)[:500])
            raise  # else no call was made: nothing for the ledger
        except ProviderError as err:
            self._record(key, purpose, cached=False, status="error", usage=Usage(), attempts=attempts,
                         latency=time.perf_counter() - t0, error=str(err)[:500])
            raise
        self._record(key, purpose, cached=False, status="ok", usage=resp.usage, attempts=attempts,
                     latency=time.perf_counter() - t0, response=resp.to_json())
        return resp

    # -- batch APIs --------------------------------------------------------------------------------

    async def _retrying(self, fn, *args):
        """A batch API call (submit, status, results) under the same retry policy as a message."""
        async for attempt in AsyncRetrying(stop=stop_after_attempt(self.retry.attempts), wait=self._wait,
                                           retry=retry_if_exception(_retryable), reraise=True):
            with attempt:
                await self.limiter.acquire(0, 0)
                return await fn(*args)

    async def submit(self, requests: list[ChatRequest], purpose: str = "explain", max_per_batch: int = 10_000) -> int:
        """Submit the requests not cached and not already in a pending batch; returns how many were sent.

        Each batch is recorded in the store as soon as the provider accepts it, so a restarted run
        collects it rather than submitting the same requests again.
        """
        if not self.provider.supports_batch:
            raise ProviderError(f"{self.provider.name} has no batch API here (use it without --batch)")
        pending = self.store.ledger.pending_batch_keys(self.provider.name, self.provider.model)
        todo: dict[str, ChatRequest] = {}
        for r in requests:
            k = r.key(self.provider.name)
            if k not in todo and k not in pending and (not self.use_cache or self.log.get(k) is None):
                todo[k] = r
        items = [((k if r.n == 1 else k[:60]), k, r) for k, r in todo.items()]
        for i in range(0, len(items), max_per_batch):
            chunk = items[i:i + max_per_batch]
            batch_id = await self._retrying(self.provider.submit_batch, [(cid, r) for cid, _, r in chunk])
            with self.store.transaction() as w:
                w.ledger.add_batch(batch_id, self.provider.name, self.provider.model, purpose, self.run_id,
                            [(cid, k) for cid, k, _ in chunk])
        return len(items)

    async def collect(self, poll_seconds: float = 30.0, max_wait: float | None = None) -> dict:
        """Poll this provider's pending batches (this run's and earlier runs'), journal every result as
        it is collected, until none is pending or `max_wait` seconds have passed."""
        t0 = time.monotonic()
        got = {"batches": 0, "replies": 0, "errors": 0}
        while pending := self.store.ledger.pending_batches(self.provider.name, self.provider.model):
            for batch_id, purpose, run_id in pending:
                if not await self._retrying(self.provider.batch_done, batch_id):
                    continue
                results = await self._retrying(self.provider.batch_results, batch_id)
                keys = self.store.ledger.batch_items(batch_id)
                for cid, res in results.items():
                    key = keys.get(cid)
                    if key is None:
                        continue
                    ok = not isinstance(res, ProviderError)
                    self._record(key, purpose, cached=False, status="ok" if ok else "error",
                                 usage=res.usage if ok else Usage(), attempts=1, latency=0.0,
                                 error="" if ok else str(res)[:500], response=res.to_json() if ok else None,
                                 batch=True)
                    got["replies" if ok else "errors"] += 1
                self.log.fold()
                with self.store.transaction() as w:
                    w.ledger.batch_collected(batch_id)
                got["batches"] += 1
            if not self.store.ledger.pending_batches(self.provider.name, self.provider.model):
                break
            if max_wait is not None and time.monotonic() - t0 >= max_wait:
                break
            await asyncio.sleep(poll_seconds)
        got["pending"] = len(self.store.ledger.pending_batches(self.provider.name, self.provider.model))
        return got

    def fold(self) -> None:
        """Commit journalled replies and ledger rows to the store (the pipeline calls this as it commits)."""
        self.log.fold()

    async def aclose(self) -> None:
        self.log.close()
        await self.provider.aclose()

    def _refuse_if_down(self) -> bool:
        """While the server is down (see DOWN_AFTER), refuse a new call, but let one through every
        PROBE_EVERY seconds to see whether it is back: True for that one (the probe)."""
        down = (self._failed_connects >= DOWN_AFTER and self._last_fail - self._first_fail >= DOWN_FOR)
        if not down:
            return False
        now = time.monotonic()
        if now < max(self._probe_at, self._last_fail + PROBE_EVERY):
            raise _NotSent(f"not sent: the server is unreachable (no connection for {DOWN_FOR:.0f} s or more; "
                           f"it is tried again every {PROBE_EVERY:.0f} s)")
        self._probe_at = now + PROBE_EVERY
        return True

    def _reached(self, err: ProviderError | None) -> None:
        """Count an attempt that could not connect; any answer from the server (a reply, an HTTP error)
        resets the count; a read timeout or a malformed body says neither."""
        if err is not None and err.unreachable:
            now = time.monotonic()
            if self._failed_connects == 0:
                self._first_fail = now
            self._failed_connects, self._last_fail = self._failed_connects + 1, now
        elif err is None or err.status is not None:
            self._failed_connects = 0

    async def _send(self, req: ChatRequest | PromptRequest, est_input: int, check: bool = True) -> ChatResponse:
        reserved = req.max_tokens * req.n
        await self.limiter.acquire(est_input * req.n, reserved)
        async with self.limiter.slots:
            if check:  # the server may have gone down while this call queued or waited to retry
                self._refuse_if_down()  # (True: this call is now the probe, and goes)
            try:
                resp = await self.provider.complete(req)
            except ProviderError as err:
                self._reached(err)
                if err.status == 429 or err.status == 529:
                    self.limiter.throttled(err.retry_after)
                raise
            self._reached(None)
        self.limiter.done(reserved, resp.usage.output_tokens, resp.limits)
        return resp

    @property
    def priced(self) -> bool:
        """Whether this client's model has a price (else its calls are recorded as unpriced)."""
        return price_of(self.provider.name, self.provider.model, Usage(), self.prices) is not None

    def _record(self, key: str, purpose: str, *, cached: bool, status: str, usage: Usage, attempts: int,
                latency: float, error: str = "", response: dict | None = None, batch: bool = False) -> None:
        cost = 0.0 if cached else price_of(self.provider.name, self.provider.model, usage, self.prices)
        priced = cost is not None or status != "ok"  # a failed call bills nothing, priced or not
        cost = (cost or 0.0) * (BATCH_DISCOUNT if batch else 1.0)
        self.spent_usd += cost
        self.spent_tokens += usage.input_tokens + usage.output_tokens + usage.cache_read_tokens + usage.cache_write_tokens
        self.log.record({"run_id": self.run_id, "cache_key": key, "provider": self.provider.name,
                         "model": self.provider.model, "purpose": purpose, "cached": cached, "status": status,
                         "error": error, "attempts": attempts, "input_tokens": usage.input_tokens,
                         "output_tokens": usage.output_tokens, "cache_read_tokens": usage.cache_read_tokens,
                         "cache_write_tokens": usage.cache_write_tokens, "cost_usd": cost, "priced": priced,
                         "latency_ms": round(latency * 1000, 2)}, response)
