"""Sizing: how long, how many tokens and how many dollars to label a dictionary with an LLM.

    python eval/sizing.py --store S [--features 100] [--scorers detection,simulation] \\
        [--rpm 4000 --itpm 2000000 --otpm 400000] [--total 1000000]

Measures the tokens per feature on a store: it renders the real prompts (the explainer's, and each LLM
scorer's, 10 windows a call) for `--features` sampled features and counts their characters at ~4 a
token (what bench_llm.py measured; a real tokenizer differs by some 10-20%). Output tokens cannot be
measured without a model, so they are estimated from the reply format: an explanation ~60 tokens; a
simulation 2 tokens per window token (a digit and a separator) plus JSON framing; a detection or fuzzing
answer ~12 tokens per window. Then, for the rate limits given (requests, input and output tokens per
minute: a tier of your provider's), it prints features per hour and which limit binds, and a table for
`--total` features: time, tokens and dollars per model, direct, through the batch APIs (half price),
and with prompt caching. Caching only applies to a shared prefix above the provider's minimum
cacheable length (1,024-4,096 tokens by model); our prefixes (system prompt and few-shot turns) are
shorter, so caching saves nothing unless a longer prompt is used, and the table says so.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from autointerp.explain.prompts import load_template, render_scoring
from autointerp.llm.prices import DEFAULT_PRICES
from autointerp.score import LLM_SCORERS
from autointerp.score.offline import NEGATIVE_KINDS

from quality import pick_samples

CHARS_PER_TOKEN = 4.0
MIN_CACHEABLE = 1024  # the smallest minimum prefix among current models; most need 2,048-4,096
PER_CALL = 10  # windows per scorer call


def _tokens(text: str) -> float:
    return len(text) / CHARS_PER_TOKEN


def measure(store, dictionary, n: int, seed: int, scorers: list[str]) -> dict:
    from autointerp.explain.offline import OfflineExplainer
    from autointerp.explain import Background

    samples = pick_samples(store, dictionary, n, seed)
    explain = load_template("explain_highlight")
    offline = OfflineExplainer(Background.from_store(store, dictionary.corpus_id))
    per: dict[str, dict] = {"explain": {"calls": 0, "input": 0.0, "output": 0.0, "prefix": 0.0}}
    per["explain"]["prefix"] = _tokens(explain.system + "".join(t for _, t in explain.fewshot_turns))
    for s in samples:
        msgs = explain.messages(list(s.explain)[:40])
        per["explain"]["calls"] += 1
        per["explain"]["input"] += _tokens(explain.system + "".join(t for _, t in msgs))
        per["explain"]["output"] += 60
        label = offline.explain(s).text  # an explanation of typical length, to put in the scorer prompts
        for name in scorers:
            t = load_template(LLM_SCORERS[name])
            row = per.setdefault(name, {"calls": 0, "input": 0.0, "output": 0.0, "prefix": _tokens(t.system)})
            wins = [w for w in s.score if name != "fuzzing" or w.kind not in NEGATIVE_KINDS]
            for i in range(0, len(wins), PER_CALL):
                group = wins[i:i + PER_CALL]
                marks = [[a > 0 for a in w.activations] for w in group] if name == "fuzzing" else None
                row["calls"] += 1
                row["input"] += _tokens(t.system + render_scoring(t, label, group, marks))
                row["output"] += (sum(2 * len(w.tokens) + 8 for w in group) + 10 if name == "simulation"
                                  else 12 * len(group) + 6)
    return {k: {m: v / len(samples) if m != "prefix" else v for m, v in row.items()} for k, row in per.items()}


def table(per: dict, total: int, rpm: float, itpm: float, otpm: float) -> dict:
    calls = sum(r["calls"] for r in per.values())
    tin = sum(r["input"] for r in per.values())
    tout = sum(r["output"] for r in per.values())
    limits = {"requests": rpm / calls, "input tokens": itpm / tin, "output tokens": otpm / tout}
    binding = min(limits, key=limits.get)
    per_minute = limits[binding]
    hours = total / per_minute / 60
    cacheable = sum(r["prefix"] * r["calls"] for r in per.values() if r["prefix"] >= MIN_CACHEABLE)
    rows = []
    for model, (p_in, p_out, p_read, _p_write) in DEFAULT_PRICES.items():
        direct = (tin * p_in + tout * p_out) * total / 1e6
        cached = ((tin - cacheable) * p_in + cacheable * p_read + tout * p_out) * total / 1e6
        rows.append({"model": model, "direct_usd": round(direct), "batch_usd": round(direct / 2),
                     "cached_usd": round(cached), "batch_and_cached_usd": round(cached / 2)})
    return {"calls_per_feature": round(calls, 2), "input_tokens_per_feature": round(tin),
            "output_tokens_per_feature": round(tout), "features_per_hour": round(per_minute * 60),
            "binding_limit": binding, "hours": round(hours, 1),
            "total_input_tokens": round(tin * total), "total_output_tokens": round(tout * total),
            "cacheable_prefix_tokens_per_feature": round(cacheable), "models": rows}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", required=True)
    ap.add_argument("--dictionary")
    ap.add_argument("--features", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scorers", default="detection,simulation")
    ap.add_argument("--rpm", type=float, default=4000)
    ap.add_argument("--itpm", type=float, default=2_000_000)
    ap.add_argument("--otpm", type=float, default=400_000)
    ap.add_argument("--total", type=int, default=1_000_000)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    from autointerp.store import open_store

    scorers = [x for x in a.scorers.split(",") if x]
    with open_store(a.store, read_only=True) as s:
        d = s.dictionary(a.dictionary)
        per = measure(s, d, a.features, a.seed, scorers)
    out = {"store": a.store, "features_measured": a.features, "per_feature": per,
           "limits": {"rpm": a.rpm, "itpm": a.itpm, "otpm": a.otpm}, "total": a.total,
           **table(per, a.total, a.rpm, a.itpm, a.otpm)}
    if a.json:
        json.dump(out, sys.stdout)
        print()
        return
    print(f"per feature ({a.features} measured; input at {CHARS_PER_TOKEN:g} characters a token, output estimated):")
    for k, r in per.items():
        print(f"  {k:<11}{r['calls']:>6.1f} calls {r['input']:>8,.0f} in {r['output']:>7,.0f} out   "
              f"shared prefix {r['prefix']:,.0f} tokens")
    print(f"  {'total':<11}{out['calls_per_feature']:>6.1f} calls {out['input_tokens_per_feature']:>8,} in "
          f"{out['output_tokens_per_feature']:>7,} out")
    print(f"\nat {a.rpm:,.0f} RPM, {a.itpm:,.0f} input TPM, {a.otpm:,.0f} output TPM: "
          f"{out['features_per_hour']:,} features an hour ({out['binding_limit']} bind); "
          f"{a.total:,} features in {out['hours']:,} h, {out['total_input_tokens'] / 1e9:.2f}B input and "
          f"{out['total_output_tokens'] / 1e9:.2f}B output tokens")
    note = ("" if out["cacheable_prefix_tokens_per_feature"] else
            f"  (no prefix reaches {MIN_CACHEABLE:,} tokens: caching saves nothing)")
    print(f"\ndollars for {a.total:,} features{note}")
    print(f"{'model':<16}{'direct':>12}{'batch':>12}{'cached':>12}{'batch+cached':>14}")
    for r in out["models"]:
        print(f"{r['model']:<16}{r['direct_usd']:>12,}{r['batch_usd']:>12,}{r['cached_usd']:>12,}"
              f"{r['batch_and_cached_usd']:>14,}")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
