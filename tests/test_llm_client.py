"""The provider layer through the real Anthropic and OpenAI SDKs, against a loopback server."""

import asyncio
import json
import time

import pytest
from loopback import Loopback, explainer
from typer.testing import CliRunner

from autointerp.cli import app
from autointerp.llm import ChatRequest, LimitConfig, LLMClient, ProviderError, RetryConfig, make_provider
from autointerp.llm.limits import AdaptiveLimit, TokenBucket, _reset_seconds
from autointerp.store import Store, open_store

KEY = "sk-test-SECRET-1234567890"
FAST = RetryConfig(attempts=6, initial=0.01, max_wait=0.2)
REQ = ChatRequest(model="claude-haiku-x", system="You label features.", messages=(("user", "tokens: <<of>>"),))


def _run(client, req=REQ):
    """One call in its own event loop, then the client closed (which commits its journal to the store)."""

    async def go():
        try:
            return await client.complete(req)
        finally:
            await client.aclose()

    return asyncio.run(go())


def _client(kind, server, store, monkeypatch, **kw):
    monkeypatch.setenv("AUTOINTERP_TEST_KEY", KEY)
    base = server.url if kind == "anthropic" else server.url + "/v1"
    prov = make_provider(f"{kind}:claude-haiku-x", base_url=base, api_key_env="AUTOINTERP_TEST_KEY",
                         timeout=kw.pop("timeout", 5.0))
    return LLMClient(prov, store, run_id="run-1", retry=kw.pop("retry", FAST), prices={"claude-haiku-x": (1, 5, 0.1, 1.25)},
                     limits=kw.pop("limits", LimitConfig(requests_per_minute=6000)), **kw)


@pytest.mark.parametrize("kind", ["anthropic", "openai"])
def test_reply_is_cached_priced_and_the_key_never_stored(kind, store, monkeypatch):
    with Loopback(reply=lambda p, b: f"{p} says hi") as server:
        client = _client(kind, server, store, monkeypatch)
        first = _run(client)
        again = _run(client)
        assert first.texts == again.texts == (f"{kind} says hi",)
        assert server.count() == 1  # the second call was served from the store
        sent = server.requests[0]
        assert KEY in (sent["headers"].get("x-api-key", "") + sent["headers"].get("authorization", ""))
        assert sent["body"]["model"] == "claude-haiku-x"
        if kind == "anthropic":
            assert "temperature" not in sent["body"] and sent["body"]["system"] == REQ.system
        calls = store.query("SELECT cached, status, attempts, input_tokens, cost_usd FROM llm_calls "
                                  "ORDER BY created_at").fetchall()
        assert [c[0] for c in calls] == [False, True] and calls[0][1] == "ok" and calls[0][2] == 1
        assert calls[0][3] > 0 and calls[0][4] > 0 and calls[1][4] == 0  # priced once, the cache hit is free
        assert store.ledger.cost_summary("run-1")[0]["calls"] == 1
    for table in ("llm_cache", "llm_calls"):
        dump = str(store.query(f"SELECT * FROM {table}").fetchall())
        assert KEY not in dump


@pytest.mark.parametrize("kind", ["anthropic", "openai"])
def test_transient_faults_are_retried_until_a_reply(kind, store, monkeypatch):
    with Loopback() as server:
        server.fault("429", "500", "529", "reset", "truncated", "ok")
        client = _client(kind, server, store, monkeypatch)
        assert _run(client).texts == ("a reply",)
        assert server.count() == 6
        assert store.query("SELECT attempts, status FROM llm_calls").fetchall() == [(6, "ok")]
        assert client.limiter.throttles == 2  # 429 and 529 slow the client down
        assert client.limiter.slots.limit < client.limiter.slots.maximum


@pytest.mark.parametrize("kind", ["anthropic", "openai"])
@pytest.mark.parametrize("status", ["400", "401"])
def test_client_errors_are_never_retried(kind, status, store, monkeypatch):
    with Loopback() as server:
        server.fault(status)
        client = _client(kind, server, store, monkeypatch)
        with pytest.raises(ProviderError) as err:
            _run(client)
        assert err.value.status == int(status) and not err.value.retryable
        assert server.count() == 1
        row = store.query("SELECT status, attempts, error FROM llm_calls").fetchone()
        assert row[0] == "error" and row[1] == 1 and status in row[2] and KEY not in row[2]
        assert store.ledger.cache_get(REQ.key(client.provider.name)) is None  # a failure is never cached


def test_a_spent_budget_is_a_typed_failure_and_timeouts_count(store, monkeypatch):
    with Loopback() as server:
        server.fault("timeout", "wrong_shape", "429")
        client = _client("anthropic", server, store, monkeypatch, timeout=0.5,
                         retry=RetryConfig(attempts=3, initial=0.01, max_wait=0.1))
        with pytest.raises(ProviderError) as err:
            _run(client)
        assert err.value.retryable and err.value.status == 429 and server.count() == 3


def test_retry_after_is_honoured(store, monkeypatch):
    with Loopback() as server:
        server.fault("429")  # the server asks for 0.05 s
        client = _client("openai", server, store, monkeypatch, retry=RetryConfig(attempts=3, initial=5.0))
        t = time.perf_counter()
        _run(client)
        # the retry waited what the server asked, not the 5 s exponential backoff
        assert server.count() == 2 and time.perf_counter() - t < 4.0


def test_openai_candidates_in_one_call(store, monkeypatch):
    with Loopback(reply=lambda p, b: "x") as server:
        client = _client("openai", server, store, monkeypatch)
        out = _run(client, ChatRequest("m", "s", (("user", "u"),), n=3, temperature=1.0))
        assert out.texts == ("x", "x", "x") and server.count() == 1
        assert server.requests[0]["body"]["n"] == 3 and server.requests[0]["body"]["temperature"] == 1.0


def test_token_bucket_never_exceeds_its_rate():
    async def run():
        bucket = TokenBucket(per_minute=1200, burst_seconds=0.1)  # 20 a second, at most 2 at once
        stamps = []
        for _ in range(12):
            await bucket.acquire(1)
            stamps.append(time.monotonic())
        return stamps

    stamps = asyncio.run(run())
    # n acquisitions need at least (n - capacity) / rate seconds
    assert stamps[-1] - stamps[0] >= (12 - 2) / 20 * 0.95


def test_adaptive_limit_bounds_calls_in_flight():
    async def run():
        lim = AdaptiveLimit(4)
        lim.throttled()  # 4 -> 2
        state = {"now": 0, "peak": 0}

        async def call():
            async with lim:
                state["now"] += 1
                state["peak"] = max(state["peak"], state["now"])
                await asyncio.sleep(0.01)
                state["now"] -= 1

        await asyncio.gather(*(call() for _ in range(20)))
        return state["peak"], lim

    peak, lim = asyncio.run(run())
    assert peak == 2
    for _ in range(20):
        lim.success()
    assert lim.limit == 4  # grows back, never above the maximum


def test_reset_headers_of_both_providers():
    assert _reset_seconds("6m0s") == 360 and _reset_seconds("20ms") == 0.02 and _reset_seconds("1.5s") == 1.5
    assert 9 < _reset_seconds(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 10))) <= 10
    assert _reset_seconds("soon") is None


def test_model_specs():
    from autointerp.errors import UsageError

    with pytest.raises(UsageError, match="compat"):
        make_provider("gpt-4o")
    with pytest.raises(UsageError, match="base-url"):
        make_provider("compat:llama")
    assert make_provider("compat:llama", base_url="http://127.0.0.1:1/v1").name == "compat@http://127.0.0.1:1/v1"


def test_anthropic_prompt_caching_marks_the_shared_prefix(store, monkeypatch):
    with Loopback() as server:
        client = _client("anthropic", server, store, monkeypatch)
        req = ChatRequest("claude-haiku-x", "sys", (("user", "shot"), ("assistant", "answer"), ("user", "real")),
                          shared_prefix=2)
        _run(client, req)
        body = server.requests[0]["body"]
    assert body["system"] == [{"type": "text", "text": "sys", "cache_control": {"type": "ephemeral"}}]
    assert body["messages"][1]["content"][0]["cache_control"] == {"type": "ephemeral"}
    assert body["messages"][2]["content"] == "real"  # the feature's own examples are not cached
    assert req.key("anthropic") == ChatRequest("claude-haiku-x", "sys", req.messages).key("anthropic")


def test_an_empty_rate_limit_bucket_pauses_every_call_until_its_reset(store, monkeypatch):
    headers = {"anthropic-ratelimit-requests-remaining": "0", "anthropic-ratelimit-requests-reset":
               time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 30))}
    with Loopback(rate_headers=headers) as server:
        client = _client("anthropic", server, store, monkeypatch)

        async def go():
            await client.complete(REQ)
            await client.aclose()

        asyncio.run(go())
    assert client.limiter.paused_until - time.monotonic() > 20  # the next call would wait for the reset


def test_no_cache_asks_again_and_records_both_calls(store, monkeypatch):
    with Loopback() as server:
        _run(_client("openai", server, store, monkeypatch))
        _run(_client("openai", server, store, monkeypatch, use_cache=False))
        assert server.count() == 2
    assert store.query("SELECT count(*) FROM llm_calls WHERE NOT cached").fetchone()[0] == 2


def test_journal_recovery_takes_crashed_journals_and_leaves_live_ones(store):
    from autointerp.llm.journal import CallLog

    def call(key):
        return {"run_id": "r", "cache_key": key, "provider": "anthropic", "model": "m", "purpose": "explain",
                "cached": False, "status": "ok", "error": "", "attempts": 1, "input_tokens": 5, "output_tokens": 2,
                "cache_read_tokens": 0, "cache_write_tokens": 0, "cost_usd": 0.0, "latency_ms": 1.0}

    live = CallLog(store)
    live.record(call("a" * 64), {"texts": ["EXPLANATION: x"], "usage": {"input_tokens": 5}, "stop_reasons": []})
    other = CallLog(store)  # the live journal is locked by its owner: not taken
    assert other.get("a" * 64) is None and store.ledger.cache_get("a" * 64) is None
    live._fh.close()  # the owner dies without folding (kill -9 leaves the same file behind, unlocked)
    with live.path.open("a") as fh:
        fh.write('{"call": {"torn')  # and a half-written last line
    again = CallLog(store)  # made: nothing read or written yet (a constructor has no side effects)
    assert store.ledger.cache_get("a" * 64) is None and live.path.exists()
    assert again.get("a" * 64) is not None  # its first use folds the crashed journal in
    assert store.ledger.cache_get("a" * 64)["texts"] == ["EXPLANATION: x"]
    assert store.query("SELECT count(*) FROM llm_calls").fetchone()[0] == 1
    assert not live.path.exists()
    CallLog(store).get("b" * 64)  # recovering again adds nothing
    assert store.query("SELECT count(*) FROM llm_calls").fetchone()[0] == 1
    other.close()
    again.close()


@pytest.mark.parametrize("kind", ["anthropic", "openai"])
def test_advertised_limits_raise_the_buckets_unless_given_explicitly(kind, store, monkeypatch):
    headers = ({"anthropic-ratelimit-requests-limit": "4000", "anthropic-ratelimit-input-tokens-limit": "2000000",
                "anthropic-ratelimit-output-tokens-limit": "400000", "anthropic-ratelimit-tokens-limit": "2400000"}
               if kind == "anthropic" else
               {"x-ratelimit-limit-requests": "5000", "x-ratelimit-limit-tokens": "4000000"})
    want = ({"requests": 4000, "input": 2_000_000, "output": 400_000} if kind == "anthropic" else
            {"requests": 5000, "input": 4_000_000, "output": None})
    with Loopback(rate_headers=headers) as server:
        learnt = _client(kind, server, store, monkeypatch, limits=LimitConfig())  # nothing given: 50 RPM at first
        assert learnt.limiter.rates() == {"requests": 50, "input": None, "output": None}
        _run(learnt)
        assert learnt.limiter.rates() == want
        explicit = _client(kind, server, store, monkeypatch, use_cache=False,
                           limits=LimitConfig(requests_per_minute=120, output_tokens_per_minute=1000))
        _run(explicit)
        assert explicit.limiter.rates() == {"requests": 120, "input": want["input"], "output": 1000}  # --rpm wins
    lowered = {k: (str(int(v) // 100) if "limit" in k else v) for k, v in headers.items()}
    with Loopback(rate_headers=lowered) as server:  # a lower tier: paced down to it, never above
        c = _client(kind, server, store, monkeypatch, use_cache=False, limits=LimitConfig())
        _run(c)
        assert c.limiter.rates()["requests"] == want["requests"] / 100


def test_a_compat_server_gets_the_token_limit_it_knows_and_time_to_generate(store, monkeypatch):
    """llama.cpp's and vLLM's servers know `max_tokens`; one that ignores `max_completion_tokens` generates
    to its context limit (issue: 226 s for one reply). OpenAI's own API takes `max_completion_tokens`."""
    monkeypatch.setenv("AUTOINTERP_TEST_KEY", KEY)
    with Loopback(reply=lambda p, b: "hi") as server:
        for spec, url in (("compat:gemma", server.url + "/v1"), ("openai:gpt-x", server.url + "/v1")):
            prov = make_provider(spec, base_url=url, api_key_env="AUTOINTERP_TEST_KEY")
            _run(LLMClient(prov, store, run_id="r", retry=FAST, limits=LimitConfig(requests_per_minute=6000)),
                 ChatRequest(model=spec.partition(":")[2], system="s", messages=(("user", "u"),), max_tokens=123))
        compat, hosted = (x["body"] for x in server.requests)
    assert compat["max_tokens"] == 123 and "max_completion_tokens" not in compat
    assert hosted["max_completion_tokens"] == 123 and "max_tokens" not in hosted
    assert make_provider("compat:m", base_url="http://127.0.0.1:1/v1").client.timeout == 600
    assert make_provider("openai:m", base_url="http://127.0.0.1:1/v1", api_key_env="AUTOINTERP_TEST_KEY"
                         ).client.timeout == 60
    assert make_provider("compat:m", base_url="http://127.0.0.1:1/v1", timeout=5).client.timeout == 5


def test_a_compat_server_gets_one_call_at_a_time_unless_told_its_slots(ingested_path, monkeypatch):
    """llama-cpp-python's server aborts the request it is serving when another arrives: eight workers
    against it cascaded into retries and timeouts. A compat server gets one call in flight by default."""
    import json

    from typer.testing import CliRunner

    from autointerp.cli import app

    monkeypatch.setenv("K", "k")
    args = ["label", "--store", str(ingested_path), "--features", "0-3", "--explainer", "compat:local",
            "--scorer", "embedding", "--api-key-env", "K", "--concurrency", "4", "--rpm", "60000", "--json", "--force"]
    with Loopback(reply=explainer_reply, latency=0.2, one_slot=True) as server:
        ok = CliRunner().invoke(app, [*args, "--base-url", server.url + "/v1"])
        assert ok.exit_code == 0, ok.output
        assert json.loads(ok.stdout)["explained"] == 4 and server.stats["interrupted"] == 0
        CliRunner().invoke(app, [*args, "--base-url", server.url + "/v1", "--max-in-flight", "4", "--no-cache"])
    assert server.stats["interrupted"] > 0  # told 4 slots it does not have, the server aborts requests


def explainer_reply(provider, body):
    return 'Marked tokens agree.\nEXPLANATION: the token "x"'


def test_a_server_that_is_down_fails_calls_at_once_and_is_probed_until_back(store, monkeypatch):
    """Once DOWN_AFTER attempts in a row could not connect, the first and last DOWN_FOR apart, every
    attempt is refused unsent, a retry too; PROBE_EVERY after the last failure one call is sent (with
    its full retries), and when one succeeds calls flow again. Failures within an instant trip nothing."""
    import autointerp.llm.client as client_mod

    now = [1000.0]

    class Clock:  # the client's clock, moved by the test instead of waited on
        monotonic = staticmethod(lambda: now[0])
        perf_counter = staticmethod(time.perf_counter)

    monkeypatch.setattr(client_mod, "time", Clock)
    reqs = [ChatRequest(model="m", system="s", messages=(("user", f"call {i}"),)) for i in range(8)]
    step = {1: client_mod.DOWN_FOR, 4: client_mod.PROBE_EVERY, 6: client_mod.PROBE_EVERY}
    with Loopback(reply=lambda p, b: "fine") as server:
        server.fault(*["reset"] * (2 * FAST.attempts + 1))
        client = _client("openai", server, store, monkeypatch)

        async def go():
            out = []
            try:
                for i, r in enumerate(reqs):
                    now[0] += step.get(i, 0.0)
                    before = server.count()
                    try:
                        out.append(((await client.complete(r)).texts[0], server.count() - before))
                    except ProviderError as err:
                        out.append((str(err), server.count() - before))
            finally:
                await client.aclose()
            return out

        got = asyncio.run(go())
    texts, sent = [g for g, _ in got], [n for _, n in got]
    a = FAST.attempts
    # call 1's first attempt trips it (its failures now span DOWN_FOR): its retries are refused
    assert sent == [a, 1, 0, 0, a, 0, 1, 1], got
    assert [t.split(":")[0] for t in texts[:6]] == ["connection failed"] + ["not sent"] * 3 + [
        "connection failed", "not sent"]
    assert "the server is unreachable" in texts[2] and texts[6:] == ["fine", "fine"]
    # refused calls are not calls: the ledger holds the three that were sent and failed, and the two that succeeded
    rows = store.query("SELECT status, attempts FROM llm_calls").fetchall()
    assert sorted(rows) == sorted([("error", a), ("error", 1), ("error", a), ("ok", 1), ("ok", 1)])


runner = CliRunner()


def cli(*args, env=None):
    return runner.invoke(app, [str(a) for a in args], env=env)


def _one_line_error(r, code: int, message: str) -> None:
    assert r.exit_code == code, (r.exit_code, r.output)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in r.output, r.output


# -- spend counted once --------------------------------------------------------------------------------

def test_best_of_k_on_anthropic_is_k_requests_and_a_retry_resends_only_the_failed_one(ingested_path, monkeypatch):
    monkeypatch.setenv("K", "sk-x")
    with Loopback(reply=explainer) as server:
        server.fault("ok", "ok", "400")  # the third candidate of the first feature fails, not retryably
        base = ["label", "--store", ingested_path, "--features", "0", "--explainer", "anthropic:claude-haiku-4-5",
                "--base-url", server.url, "--api-key-env", "K", "--rpm", "60000", "--candidates", "3",
                "--scorer", "embedding", "--json"]
        r = cli(*base)
        assert r.exit_code == 22 and "candidate" in r.stderr and "HTTP 400" in r.stderr
        assert server.count("/v1/messages") == 3 and all(b["body"].get("n") is None for b in server.requests)
        r = cli(*base)
        assert r.exit_code == 0, r.output
        assert server.count("/v1/messages") == 4  # only the failed candidate was sent again
        out = json.loads(r.stdout)
        assert out["explained"] == 1
    with open_store(ingested_path, read_only=True) as s:
        calls = s.query("SELECT count(*) FILTER (NOT cached AND status = 'ok'), count(*) FILTER (cached), "
                              "count(*) FILTER (status = 'error'), sum(cost_usd) FILTER (NOT cached) > 0, "
                              "count(DISTINCT cache_key) FROM llm_calls").fetchone()
        assert calls == (3, 2, 1, True, 3)  # 3 paid replies, each priced; the rerun's 2 cache hits free
        assert len(s.labels.find(s.dictionary().dictionary_id, candidates=True)) == 3


def test_an_unpriced_model_cannot_hold_a_dollar_budget_and_is_shown_unpriced(tmp_path, ingested_path, monkeypatch):
    monkeypatch.setenv("K", "sk-x")
    before = _digest(ingested_path)
    with Loopback(reply=explainer) as server:
        cfg = tmp_path / "job.toml"
        body = (f'[job]\nexplainer = "anthropic:my-finetune"\nscorers = []\nfeatures = "0-2"\n'
                f'[limits]\nbase_url = "{server.url}"\napi_key_env = "K"\nrpm = 60000\n')
        cfg.write_text(body + "[budget]\ndollars = 1.0\n")
        r = cli("job", "run", "--store", ingested_path, "--config", cfg)
        _one_line_error(r, 20, "anthropic:my-finetune has no price")
        assert server.count() == 0 and _digest(ingested_path) == before
        cfg.write_text(body + '[prices]\n"my-finetune" = [1.0, 5.0, 0.1, 1.25]\n[budget]\ndollars = 1.0\n')
        r = cli("job", "run", "--store", ingested_path, "--config", cfg, "--json")
        assert r.exit_code == 0, r.output
        cfg.write_text(body.replace("0-2", "3-5"))  # no price, no budget: runs, and is shown as unpriced
        assert cli("job", "run", "--store", ingested_path, "--config", cfg).exit_code == 0
        bad = tmp_path / "bad.toml"
        bad.write_text(body + '[prices]\n"my-finetune" = [1.0, "five"]\n')
        _one_line_error(cli("job", "run", "--store", ingested_path, "--config", bad), 20, "[prices]")
    r = cli("cost", "--store", ingested_path)
    assert "unpriced" in r.stdout and "3 unpriced calls" in r.stdout.splitlines()[-1]
    doc = json.loads(cli("cost", "--store", ingested_path, "--json").stdout)
    assert doc["unpriced_calls"] == 3 and doc["total_usd"] > 0


def _digest(path) -> str:
    with Store(path, read_only=True) as s:
        return s.content_digest()
